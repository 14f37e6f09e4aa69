//! [`MarsCodecConfig`] and its validation.

use serde::{Deserialize, Serialize};

use crate::codec::{HEAD_LENGTH, MAX_FRAME_LEN};

/// How a [`MarsCodec`](crate::MarsCodec) is set up.
///
/// Deserializing only checks the shape (unknown keys are refused); the values are checked by
/// [`MarsCodec::new`](crate::MarsCodec::new) (or [`validate`](Self::validate)), which is the
/// only way to build a codec from a config.
///
/// ```
/// use phobos_codec_mars::MarsCodecConfig;
///
/// let config: MarsCodecConfig = serde_json::from_str(r#"{ "client_version": 200 }"#).unwrap();
/// assert_eq!(config, MarsCodecConfig { client_version: 200, max_frame_len: 1_048_576 });
/// assert!(serde_json::from_str::<MarsCodecConfig>(r#"{ "version": 1 }"#).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarsCodecConfig {
    /// The value written to, and required in, every header's `client_version` field (Mars's
    /// `SetClientVersion`). Default 0, as in Mars.
    pub client_version: u32,
    /// The largest frame accepted or produced, header included. Default and maximum 1 MiB
    /// ([`MAX_FRAME_LEN`]), Mars's limit; at least [`HEAD_LENGTH`] (20), which allows empty
    /// bodies only.
    pub max_frame_len: usize,
}

impl MarsCodecConfig {
    /// Checks the values.
    ///
    /// # Errors
    ///
    /// [`ConfigError::MaxFrameLenTooLarge`] above 1 MiB (a peer following Mars never sends
    /// more, and a larger limit would let a peer make us buffer more);
    /// [`ConfigError::MaxFrameLenTooSmall`] below 20 (not even a header would fit).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_frame_len > MAX_FRAME_LEN {
            return Err(ConfigError::MaxFrameLenTooLarge {
                got: self.max_frame_len,
                max: MAX_FRAME_LEN,
            });
        }
        if self.max_frame_len < HEAD_LENGTH {
            return Err(ConfigError::MaxFrameLenTooSmall {
                got: self.max_frame_len,
                min: HEAD_LENGTH,
            });
        }
        Ok(())
    }
}

impl Default for MarsCodecConfig {
    fn default() -> Self {
        MarsCodecConfig {
            client_version: 0,
            max_frame_len: MAX_FRAME_LEN,
        }
    }
}

/// Why a [`MarsCodecConfig`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_frame_len` is above Mars's 1 MiB limit.
    #[error("max_frame_len {got} exceeds the protocol limit of {max} bytes")]
    MaxFrameLenTooLarge {
        /// The configured value.
        got: usize,
        /// The largest value allowed.
        max: usize,
    },
    /// `max_frame_len` is below the header length.
    #[error("max_frame_len {got} is below the {min}-byte header")]
    MaxFrameLenTooSmall {
        /// The configured value.
        got: usize,
        /// The smallest value allowed.
        min: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_version_zero_and_one_mebibyte() {
        let c = MarsCodecConfig::default();
        assert_eq!(c.client_version, 0);
        assert_eq!(c.max_frame_len, 1 << 20);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn limits_outside_header_to_one_mebibyte_are_refused() {
        let at = |max_frame_len| MarsCodecConfig {
            max_frame_len,
            ..Default::default()
        };
        assert_eq!(at(20).validate(), Ok(()));
        assert_eq!(at(1 << 20).validate(), Ok(()));
        assert_eq!(
            at((1 << 20) + 1).validate(),
            Err(ConfigError::MaxFrameLenTooLarge {
                got: (1 << 20) + 1,
                max: 1 << 20
            })
        );
        assert_eq!(
            at(19).validate(),
            Err(ConfigError::MaxFrameLenTooSmall { got: 19, min: 20 })
        );
        assert_eq!(
            at(0).validate(),
            Err(ConfigError::MaxFrameLenTooSmall { got: 0, min: 20 })
        );
    }

    #[test]
    fn serde_fills_defaults_and_refuses_unknown_keys() {
        let c: MarsCodecConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, MarsCodecConfig::default());
        let c: MarsCodecConfig =
            serde_json::from_str(r#"{"client_version": 7, "max_frame_len": 4096}"#).unwrap();
        assert_eq!(
            c,
            MarsCodecConfig {
                client_version: 7,
                max_frame_len: 4096
            }
        );
        assert!(serde_json::from_str::<MarsCodecConfig>(r#"{"max_frame": 1}"#).is_err());
        let back: MarsCodecConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
