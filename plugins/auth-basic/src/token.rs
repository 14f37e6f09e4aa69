//! [`TokenAuth`]: a token set by the app, checked by the server through the identify frame.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use phobos_plugin_api::{AuthCheck, AuthError, CmdId, IdentifyRequest, IdentifyVerdict};
use serde::{Deserialize, Serialize};

/// The identify command id used when the configuration does not name one.
pub const DEFAULT_IDENTIFY_CMD: CmdId = CmdId(0x1000);
/// The first byte of every identify body (the body format's version).
pub const IDENTIFY_BODY_VERSION: u8 = 0x01;
/// The longest token: its length must fit the body's 16-bit length field.
pub const MAX_TOKEN_LEN: usize = u16::MAX as usize;
/// Reply status: the token is accepted.
pub const STATUS_ACCEPTED: u8 = 0x00;
/// Reply status: the token is rejected.
pub const STATUS_REJECTED: u8 = 0x01;

/// Authentication by a token the app sets at runtime and the server checks on every new long
/// link. See the [crate docs](crate) for the identify body and the reply statuses.
///
/// The auth gate ([`is_authed`](AuthCheck::is_authed)) is open while a token is set and the
/// server has not rejected it.
#[derive(Debug)]
pub struct TokenAuth {
    identify_cmd: CmdId,
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    token: Option<String>,
    rejected: bool,
}

/// The token is a secret: debug output (an engine's config printed with `{:?}`, a log line)
/// says only whether there is one.
impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("rejected", &self.rejected)
            .finish()
    }
}

impl TokenAuth {
    /// The registry name of this plugin.
    pub const NAME: &'static str = "token";

    /// The plugin for `config`.
    ///
    /// # Errors
    ///
    /// As [`set_token`](Self::set_token) for a configured token; [`TokenError::IdentifyCmd`]
    /// when `identify_cmd_id` is Mars's heartbeat command (6), whose replies the codec takes
    /// for heartbeat replies.
    pub fn new(config: TokenAuthConfig) -> Result<Self, TokenError> {
        if config.identify_cmd_id == phobos_plugin_api::codec::HEARTBEAT_CMD.0 {
            return Err(TokenError::IdentifyCmd(config.identify_cmd_id));
        }
        let auth = TokenAuth {
            identify_cmd: CmdId(config.identify_cmd_id),
            state: RwLock::new(State::default()),
        };
        if let Some(token) = config.token {
            auth.set_token(token)?;
        }
        Ok(auth)
    }

    /// Sets (or replaces) the token. The gate opens; links identify with the new token from
    /// their next identify frame.
    ///
    /// # Errors
    ///
    /// [`TokenError::Empty`] for an empty token, [`TokenError::TooLong`] above
    /// [`MAX_TOKEN_LEN`] bytes.
    pub fn set_token(&self, token: impl Into<String>) -> Result<(), TokenError> {
        let token = token.into();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong(token.len()));
        }
        let mut state = self.write();
        state.token = Some(token);
        state.rejected = false;
        Ok(())
    }

    /// Removes the token (log out): the gate closes and links stop identifying.
    pub fn clear_token(&self) {
        let mut state = self.write();
        state.token = None;
        state.rejected = false;
    }

    /// Whether the server rejected the current token.
    pub fn is_rejected(&self) -> bool {
        self.read().rejected
    }

    /// The command id of identify frames.
    pub fn identify_cmd(&self) -> CmdId {
        self.identify_cmd
    }

    /// The identify body for `token` (see the [crate docs](crate)). A token longer than
    /// [`MAX_TOKEN_LEN`] (which [`set_token`](Self::set_token) refuses) is cut to fit.
    pub fn identify_body(token: &str) -> Vec<u8> {
        let len = u16::try_from(token.len()).unwrap_or(u16::MAX);
        let mut body = Vec::with_capacity(3 + token.len());
        body.push(IDENTIFY_BODY_VERSION);
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&token.as_bytes()[..usize::from(len)]);
        body
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // The lock is never held across code that can panic; recover the state if it was.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl AuthCheck for TokenAuth {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn is_authed(&self, _host: &str) -> bool {
        let state = self.read();
        state.token.is_some() && !state.rejected
    }

    async fn ensure_authed(&self, host: &str) -> Result<(), AuthError> {
        if self.is_authed(host) {
            return Ok(());
        }
        // Design: this plugin cannot log in; waiting tasks keep waiting (until their own
        // timeout) for the app to set a token.
        let why = if self.is_rejected() {
            "the server rejected the token; waiting for the app to set a new one"
        } else {
            "no token set yet"
        };
        Err(AuthError::Transient(why.to_owned()))
    }

    fn identify_request(&self, _link: &str) -> IdentifyRequest {
        let state = self.read();
        match (&state.token, state.rejected) {
            (Some(token), false) => IdentifyRequest::Now {
                cmd_id: self.identify_cmd,
                body: Self::identify_body(token),
                hash: token.as_bytes().to_vec(),
            },
            // Ask again at the next heartbeat slot: the app may set a token meanwhile.
            _ => IdentifyRequest::Later,
        }
    }

    fn on_identify_response(&self, _link: &str, body: &[u8], hash: &[u8]) -> IdentifyVerdict {
        let mut state = self.write();
        let current = state.token.as_deref().map(str::as_bytes);
        if current != Some(hash) {
            // The reply is about a token that is no longer ours: identify again.
            return IdentifyVerdict::Retry;
        }
        match body.first() {
            Some(&STATUS_ACCEPTED) => IdentifyVerdict::Accepted,
            Some(&STATUS_REJECTED) => {
                state.rejected = true;
                IdentifyVerdict::Rejected
            }
            _ => IdentifyVerdict::Retry,
        }
    }
}

/// How a [`TokenAuth`] is set up.
///
/// ```
/// use phobos_auth_basic::TokenAuthConfig;
///
/// let c: TokenAuthConfig = serde_json::from_str(r#"{"token": "abc"}"#).unwrap();
/// assert_eq!(c.identify_cmd_id, 0x1000);
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenAuthConfig {
    /// A token to start with; `None` until the app calls [`TokenAuth::set_token`].
    pub token: Option<String>,
    /// The command id of identify frames. Default [`DEFAULT_IDENTIFY_CMD`] (0x1000); must not
    /// be 6 (heartbeat).
    pub identify_cmd_id: u32,
}

/// The token is redacted, as in [`TokenAuth`]'s debug output.
impl std::fmt::Debug for TokenAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("identify_cmd_id", &self.identify_cmd_id)
            .finish()
    }
}

impl Default for TokenAuthConfig {
    fn default() -> Self {
        TokenAuthConfig {
            token: None,
            identify_cmd_id: DEFAULT_IDENTIFY_CMD.0,
        }
    }
}

/// Why a token or a [`TokenAuthConfig`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is empty (use [`TokenAuth::clear_token`] to remove it).
    #[error("the token is empty")]
    Empty,
    /// The token is longer than [`MAX_TOKEN_LEN`] bytes.
    #[error("the token is {0} bytes long; at most 65535 fit the identify body")]
    TooLong(usize),
    /// The identify command id collides with the heartbeat's.
    #[error("identify command id {0} is the heartbeat's")]
    IdentifyCmd(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: Option<&str>) -> TokenAuth {
        TokenAuth::new(TokenAuthConfig {
            token: token.map(str::to_owned),
            identify_cmd_id: 77,
        })
        .unwrap()
    }

    fn request(a: &TokenAuth) -> (CmdId, Vec<u8>, Vec<u8>) {
        match a.identify_request("main") {
            IdentifyRequest::Now { cmd_id, body, hash } => (cmd_id, body, hash),
            other => panic!("expected an identify frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn gate_opens_once_a_token_is_set() {
        let a = auth(None);
        assert!(!a.is_authed("h"));
        assert!(matches!(
            a.ensure_authed("h").await,
            Err(AuthError::Transient(_))
        ));
        assert_eq!(a.identify_request("main"), IdentifyRequest::Later);
        a.set_token("t0k").unwrap();
        assert!(a.is_authed("h"));
        assert_eq!(a.ensure_authed("h").await, Ok(()));
        a.clear_token();
        assert!(!a.is_authed("h"));
        assert!(auth(Some("x")).is_authed("h"));
    }

    /// The token never shows in debug output (an engine config printed with `{:?}` holds
    /// the plugin); whether there is one does.
    #[test]
    fn debug_output_does_not_show_the_token() {
        let cfg = TokenAuthConfig {
            token: Some("s3cret-token".into()),
            ..TokenAuthConfig::default()
        };
        let shown = format!("{cfg:?} {:?}", TokenAuth::new(cfg.clone()).unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn identify_body_is_version_length_token() {
        let a = auth(Some("héllo"));
        let (cmd, body, hash) = request(&a);
        assert_eq!(cmd, CmdId(77));
        assert_eq!(body, b"\x01\x00\x06h\xc3\xa9llo");
        assert_eq!(hash, "héllo".as_bytes());
        let long = "x".repeat(MAX_TOKEN_LEN);
        a.set_token(long.clone()).unwrap();
        let (_, body, _) = request(&a);
        assert_eq!(&body[..3], b"\x01\xff\xff");
        assert_eq!(body.len(), 3 + MAX_TOKEN_LEN);
    }

    #[test]
    fn reply_status_byte_decides() {
        let a = auth(Some("tok"));
        let (_, _, hash) = request(&a);
        assert_eq!(
            a.on_identify_response("main", b"\x00", &hash),
            IdentifyVerdict::Accepted
        );
        assert_eq!(
            a.on_identify_response("main", b"\x00extra", &hash),
            IdentifyVerdict::Accepted
        );
        assert_eq!(
            a.on_identify_response("main", b"", &hash),
            IdentifyVerdict::Retry
        );
        assert_eq!(
            a.on_identify_response("main", b"\x02", &hash),
            IdentifyVerdict::Retry
        );
        assert!(a.is_authed("h"));
        assert_eq!(
            a.on_identify_response("main", b"\x01", &hash),
            IdentifyVerdict::Rejected
        );
        assert!(a.is_rejected());
        assert!(!a.is_authed("h"));
        assert_eq!(a.identify_request("main"), IdentifyRequest::Later);
        // The app acts: a new token reopens the gate.
        a.set_token("tok2").unwrap();
        assert!(a.is_authed("h"));
        assert!(!a.is_rejected());
    }

    #[test]
    fn a_reply_about_a_replaced_token_is_retried() {
        let a = auth(Some("old"));
        let (_, _, old_hash) = request(&a);
        a.set_token("new").unwrap();
        assert_eq!(
            a.on_identify_response("main", b"\x01", &old_hash),
            IdentifyVerdict::Retry
        );
        assert!(
            a.is_authed("h"),
            "a stale rejection must not close the gate"
        );
        let (_, _, new_hash) = request(&a);
        assert_eq!(
            a.on_identify_response("main", b"\x00", &new_hash),
            IdentifyVerdict::Accepted
        );
    }

    #[test]
    fn bad_tokens_and_configs_are_refused() {
        let a = auth(None);
        assert_eq!(a.set_token(""), Err(TokenError::Empty));
        assert_eq!(
            a.set_token("y".repeat(MAX_TOKEN_LEN + 1)),
            Err(TokenError::TooLong(MAX_TOKEN_LEN + 1))
        );
        assert!(!a.is_authed("h"));
        assert_eq!(
            TokenAuth::new(TokenAuthConfig {
                token: None,
                identify_cmd_id: 6
            })
            .unwrap_err(),
            TokenError::IdentifyCmd(6)
        );
        assert_eq!(
            TokenAuth::new(TokenAuthConfig {
                token: Some(String::new()),
                identify_cmd_id: 9
            })
            .unwrap_err(),
            TokenError::Empty
        );
    }

    #[test]
    fn config_defaults_and_strictness() {
        let c: TokenAuthConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, TokenAuthConfig::default());
        let a = TokenAuth::new(c).unwrap();
        assert_eq!(a.identify_cmd(), DEFAULT_IDENTIFY_CMD);
        assert_eq!(a.name(), "token");
        assert!(serde_json::from_str::<TokenAuthConfig>(r#"{"cmd": 1}"#).is_err());
    }
}
