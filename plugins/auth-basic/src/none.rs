//! [`NoAuth`]: the session is always authenticated.

use async_trait::async_trait;
use phobos_plugin_api::{AuthCheck, AuthError, IdentifyRequest};
use serde::{Deserialize, Serialize};

/// No authentication: every task may go, and no identify frame is sent. The default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoAuth;

impl NoAuth {
    /// The registry name of this plugin.
    pub const NAME: &'static str = "none";

    /// The plugin (its configuration has nothing to set).
    pub fn new(_config: NoAuthConfig) -> Self {
        NoAuth
    }
}

#[async_trait]
impl AuthCheck for NoAuth {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn is_authed(&self, _host: &str) -> bool {
        true
    }

    async fn ensure_authed(&self, _host: &str) -> Result<(), AuthError> {
        Ok(())
    }

    fn identify_request(&self, _link: &str) -> IdentifyRequest {
        IdentifyRequest::Never
    }
}

/// The configuration of [`NoAuth`]: empty; unknown keys are refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoAuthConfig {}

#[cfg(test)]
mod tests {
    use phobos_plugin_api::IdentifyVerdict;

    use super::*;

    #[tokio::test]
    async fn always_authed_and_never_identifies() {
        let a = NoAuth::new(NoAuthConfig::default());
        assert_eq!(a.name(), "none");
        assert!(a.is_authed(""));
        assert!(a.is_authed("any.host"));
        assert_eq!(a.ensure_authed("any.host").await, Ok(()));
        assert_eq!(a.identify_request("main"), IdentifyRequest::Never);
        assert_eq!(
            a.on_identify_response("main", b"\x01", b""),
            IdentifyVerdict::Accepted
        );
    }

    #[test]
    fn config_is_empty_and_strict() {
        let c: NoAuthConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(NoAuth::new(c), NoAuth);
        assert!(serde_json::from_str::<NoAuthConfig>(r#"{"token": "x"}"#).is_err());
    }
}
