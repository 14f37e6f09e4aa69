//! Login tokens: `USER.SIGNATURE`, the signature an HMAC-SHA256 of the user name under the
//! server's secret.
//!
//! The client hands its token to the configured [`AuthCheck`](phobos_plugin_api::AuthCheck)
//! plugin (`token`, from `phobos-auth-basic`), which sends it in the identify frame of every new
//! long link; the server checks it with [`TokenIssuer::verify`] and binds the connection to
//! the user. Short-link requests carry the same token in their body.
//!
//! Design: the example issues tokens from a shared secret so it needs no account database. A
//! production deployment has a login service that checks credentials and issues expiring
//! tokens (or signed JWTs), and the long-link server verifies them with that service's key.
//!
//! ```
//! use phobos_host_example::tokens::TokenIssuer;
//!
//! let issuer = TokenIssuer::new("demo-secret");
//! let token = issuer.issue("alice")?;
//! assert_eq!(issuer.verify(&token)?, "alice");
//! assert!(issuer.verify("alice.00000000000000000000000000000000").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use hkdf::hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::proto::{check_name, ServerError};

/// Issues and checks tokens with one secret.
#[derive(Clone)]
pub struct TokenIssuer {
    secret: Vec<u8>,
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejected {
    /// Not `USER.SIGNATURE` with a valid user name and 32 hex digits.
    #[error("the token is not USER.SIGNATURE")]
    Malformed,
    /// The signature does not match.
    #[error("the token's signature does not match")]
    BadSignature,
}

impl TokenIssuer {
    /// An issuer for `secret`.
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        TokenIssuer {
            secret: secret.as_ref().to_vec(),
        }
    }

    /// The token of `user`.
    ///
    /// # Errors
    ///
    /// The name check's error when `user` is not a valid name.
    pub fn issue(&self, user: &str) -> Result<String, ServerError> {
        check_name("user", user)?;
        let tag = self.mac(user).finalize().into_bytes();
        Ok(format!("{user}.{}", hex::encode(&tag[..SIGNATURE_LEN])))
    }

    /// The user a token names, if its signature is right.
    ///
    /// # Errors
    ///
    /// [`TokenRejected`].
    pub fn verify<'t>(&self, token: &'t str) -> Result<&'t str, TokenRejected> {
        let (user, sig) = token.rsplit_once('.').ok_or(TokenRejected::Malformed)?;
        if check_name("user", user).is_err() || sig.len() != SIGNATURE_LEN * 2 {
            return Err(TokenRejected::Malformed);
        }
        let sig = hex::decode(sig).map_err(|_| TokenRejected::Malformed)?;
        // Constant-time comparison of the truncated tag.
        self.mac(user)
            .verify_truncated_left(&sig)
            .map_err(|_| TokenRejected::BadSignature)?;
        Ok(user)
    }

    fn mac(&self, user: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(user.as_bytes());
        mac
    }
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").finish_non_exhaustive()
    }
}

/// Signature bytes kept in a token (128 bits).
const SIGNATURE_LEN: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_only_under_its_secret_and_for_its_user() {
        let a = TokenIssuer::new("one");
        let b = TokenIssuer::new("two");
        let token = a.issue("alice").unwrap();
        assert_eq!(a.verify(&token), Ok("alice"));
        assert_eq!(b.verify(&token), Err(TokenRejected::BadSignature));
        let forged = token.replacen("alice", "alicf", 1);
        assert_eq!(a.verify(&forged), Err(TokenRejected::BadSignature));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let a = TokenIssuer::new("one");
        for t in ["", "alice", "alice.", "alice.zz", ".00", "a b.0011"] {
            assert_eq!(a.verify(t), Err(TokenRejected::Malformed), "{t:?}");
        }
        assert!(a.issue("not a name").is_err());
    }
}
