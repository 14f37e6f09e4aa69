//! Default [`AuthCheck`](phobos_plugin_api::AuthCheck) plugins: [`NoAuth`] and
//! [`TokenAuth`].
//!
//! | Plugin | Registry name | Auth gate | Identify frame |
//! |---|---|---|---|
//! | [`NoAuth`] (the default) | `"none"` | always open | never sent |
//! | [`TokenAuth`] | `"token"` | open once the app has set a token (and the server has not rejected it) | the token, in the format below |
//!
//! # The token identify exchange
//!
//! On every new long link, [`TokenAuth`] sends one identify frame (sequence `0xFFFF_FFFE`,
//! command id from [`TokenAuthConfig::identify_cmd_id`]) whose body is:
//!
//! ```text
//!  0         1                3
//!  +---------+----------------+---------------------------+
//!  | version | token length N | token (N bytes of UTF-8)  |
//!  |  = 0x01 | u16 big-endian |                           |
//!  +---------+----------------+---------------------------+
//! ```
//!
//! The server answers with a frame of the same sequence whose body starts with a status byte:
//!
//! | First byte | Meaning | Verdict |
//! |---|---|---|
//! | `0x00` | token accepted | [`Accepted`](phobos_plugin_api::IdentifyVerdict::Accepted) |
//! | `0x01` | token rejected | [`Rejected`](phobos_plugin_api::IdentifyVerdict::Rejected); the gate closes until the app sets a token again |
//! | anything else, or an empty body | not decided (server busy…) | [`Retry`](phobos_plugin_api::IdentifyVerdict::Retry) at the next heartbeat slot |
//!
//! A reply to a token the app has since replaced is answered with `Retry`, so the link
//! identifies again with the new token.
//!
//! What this crate does not do: log in. [`TokenAuth::ensure_authed`](phobos_plugin_api::AuthCheck::ensure_authed)
//! cannot fetch a token; it reports a transient error until the app calls
//! [`TokenAuth::set_token`]. Apps with a login flow implement `AuthCheck` themselves.
//!
//! # Example
//!
//! ```
//! use phobos_auth_basic::{TokenAuth, TokenAuthConfig};
//! use phobos_plugin_api::{AuthCheck, CmdId, IdentifyRequest, IdentifyVerdict};
//!
//! let auth = TokenAuth::new(TokenAuthConfig { token: None, identify_cmd_id: 0x1000 })?;
//! assert!(!auth.is_authed("host"));
//! assert_eq!(auth.identify_request("main"), IdentifyRequest::Later);
//!
//! auth.set_token("s3cret")?;
//! assert!(auth.is_authed("host"));
//! let IdentifyRequest::Now { cmd_id, body, hash } = auth.identify_request("main") else {
//!     unreachable!("a token is set")
//! };
//! assert_eq!(cmd_id, CmdId(0x1000));
//! assert_eq!(body, b"\x01\x00\x06s3cret");
//! assert_eq!(auth.on_identify_response("main", &[0x00], &hash), IdentifyVerdict::Accepted);
//! # Ok::<(), phobos_auth_basic::TokenError>(())
//! ```

mod none;
mod token;

pub use none::{NoAuth, NoAuthConfig};
pub use token::{
    TokenAuth, TokenAuthConfig, TokenError, DEFAULT_IDENTIFY_CMD, IDENTIFY_BODY_VERSION,
    MAX_TOKEN_LEN, STATUS_ACCEPTED, STATUS_REJECTED,
};
