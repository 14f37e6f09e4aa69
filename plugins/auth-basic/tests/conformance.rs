//! The testkit's auth conformance suite against both plugins.

use std::sync::Arc;

use phobos_auth_basic::{NoAuth, TokenAuth, TokenAuthConfig};

phobos_plugin_testkit::auth_conformance!(no_auth, || Arc::new(NoAuth));

phobos_plugin_testkit::auth_conformance!(token_auth_without_token, || Arc::new(
    TokenAuth::new(TokenAuthConfig::default()).unwrap()
));

phobos_plugin_testkit::auth_conformance!(token_auth_with_token, || Arc::new(
    TokenAuth::new(TokenAuthConfig {
        token: Some("s3cret".into()),
        identify_cmd_id: 0x2000,
    })
    .unwrap()
));
