//! Session authentication and the long-link identify check: [`AuthCheck`].
//!
//! Two separate ideas from Mars meet here:
//!
//! - **Auth gate** (`MakesureAuthed`): tasks marked `needs_auth` wait until
//!   [`AuthCheck::is_authed`] holds. When it does not, the driver runs
//!   [`AuthCheck::ensure_authed`] (which may log in over the network) off the core's loop and
//!   reports the result back. A plugin whose `ensure_authed` blocks its thread says so with
//!   [`AuthCheck::is_blocking`], and the driver runs it on a thread of its own.
//! - **Identify** ("synccheck"): the first frame on every new long link may be an identify
//!   frame built by [`AuthCheck::identify_request`]; the server's reply is judged by
//!   [`AuthCheck::on_identify_response`]. These two are synchronous and must not block: the
//!   core calls them inline.

use std::fmt;

use async_trait::async_trait;

use crate::types::CmdId;

/// Decides whether the session is authenticated and builds the identify exchange.
#[async_trait]
pub trait AuthCheck: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and error messages.
    fn name(&self) -> &str;

    /// Whether tasks that need auth may be sent to `host` now. Must be cheap.
    fn is_authed(&self, host: &str) -> bool;

    /// Makes sure the session is authenticated, for example by logging in. Called by the
    /// driver, never by the core, when a task needing auth is waiting and
    /// [`is_authed`](Self::is_authed) is false.
    ///
    /// # Errors
    ///
    /// An [`AuthError`] when authentication failed; waiting tasks stay queued until their own
    /// timeout unless the error is [`AuthError::Rejected`], which ends them.
    async fn ensure_authed(&self, host: &str) -> Result<(), AuthError>;

    /// Whether [`ensure_authed`](Self::ensure_authed) blocks the thread that polls it instead
    /// of yielding while it waits: a synchronous login, or a plugin loaded from a dynamic
    /// library (its adapter runs the plugin's future to completion in one call and answers
    /// `true`). The driver runs a blocking plugin's calls on a thread of its own (tokio's
    /// blocking pool), never on its event loop or a runtime worker.
    ///
    /// The default is `false`: `ensure_authed` is a well-behaved future, run on the driver's
    /// runtime. The other methods are called inline and must never block.
    fn is_blocking(&self) -> bool {
        false
    }

    /// What to send as the identify frame on a new long link named `link`.
    ///
    /// The default sends nothing ([`IdentifyRequest::Never`]).
    fn identify_request(&self, _link: &str) -> IdentifyRequest {
        IdentifyRequest::Never
    }

    /// Judges the server's reply to the identify frame. `hash` is the value returned with the
    /// request.
    ///
    /// The default accepts any reply.
    fn on_identify_response(&self, _link: &str, _body: &[u8], _hash: &[u8]) -> IdentifyVerdict {
        IdentifyVerdict::Accepted
    }
}

/// What [`AuthCheck::identify_request`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentifyRequest {
    /// Send this identify frame now.
    Now {
        /// The command id of the identify frame.
        cmd_id: CmdId,
        /// The body.
        body: Vec<u8>,
        /// An opaque value handed back to [`AuthCheck::on_identify_response`].
        hash: Vec<u8>,
    },
    /// Not yet: send a normal heartbeat and ask again at the next heartbeat slot.
    Later,
    /// Never identify this connection.
    Never,
}

/// The judgement on an identify reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdentifyVerdict {
    /// The link is identified; the reply counts as a success for the server's address.
    Accepted,
    /// Not identified; ask again at the next heartbeat slot.
    Retry,
    /// The server refused us (a bad token, say); the link is dropped with an auth error and
    /// not retried until the app acts.
    Rejected,
}

/// Why authentication failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The credentials were refused; tasks waiting for auth end.
    #[error("authentication rejected: {0}")]
    Rejected(String),
    /// A transient failure (network, server busy); tasks keep waiting.
    #[error("authentication failed, will retry: {0}")]
    Transient(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)]
    fn object_safe(_: Box<dyn AuthCheck>) {}
}
