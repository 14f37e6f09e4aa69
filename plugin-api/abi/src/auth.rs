//! [`AuthCheck`] across the boundary: [`FfiAuthCheck`], [`export_auth`] and [`import_auth`].
//!
//! `ensure_authed` is async in the trait. Across the boundary it is one **synchronous** call:
//! the plugin side drives the plugin's future to completion on the calling thread with a
//! minimal executor (`pollster`), and the host-side adapter's `async fn` makes that call.
//! A dynamically loaded auth plugin therefore blocks the thread that awaits it: the adapter
//! answers `true` to [`AuthCheck::is_blocking`] (the method does not cross the boundary), and
//! the driver runs its `ensure_authed` on a thread of its own, not on its event loop. The
//! plugin's future must not need a specific async runtime (no tokio reactor is running on
//! that thread); a plugin needing one brings its own.
//!
//! # Panics in the plugin
//!
//! As for an in-process plugin (`phobos_plugin_api::panics`, which defines these fallbacks):
//!
//! | Method | Result after a panic inside the plugin |
//! |---|---|
//! | `ensure_authed` | `AuthError::Transient("auth plugin \"<name>\" panicked: …")` |
//! | `is_authed` | `false` (tasks wait; `ensure_authed` will be asked) |
//! | `identify_request` | `IdentifyRequest::Later` (ask again at the next heartbeat) |
//! | `on_identify_response` | `IdentifyVerdict::Retry` |
//! | `name` | cannot panic: read once when the plugin is built |

use std::fmt;
use std::sync::Arc;

use abi_stable::sabi_trait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBox, RResult, RSlice, RStr, RString, RVec};
use abi_stable::StableAbi;
use phobos_plugin_api::panics::{auth_panicked, FALLBACK_IDENTIFY_VERDICT, FALLBACK_IS_AUTHED};
use phobos_plugin_api::{AuthCheck, AuthError, CmdId, IdentifyRequest, IdentifyVerdict};

use crate::guard::{catch, Guarded};
use crate::types::{FfiAuthError, FfiIdentifyVerdict};

/// The FFI-safe mirror of [`AuthCheck`].
#[sabi_trait]
pub trait FfiAuthCheck: Send + Sync + 'static {
    /// `AuthCheck::name`.
    fn name(&self) -> RStr<'_>;
    /// `AuthCheck::is_authed`.
    fn is_authed(&self, host: RStr<'_>) -> bool;
    /// `AuthCheck::ensure_authed`, run to completion (blocking).
    fn ensure_authed(&self, host: RStr<'_>) -> RResult<(), FfiAuthError>;
    /// `AuthCheck::identify_request`.
    fn identify_request(&self, link: RStr<'_>) -> FfiIdentifyRequest;
    /// `AuthCheck::on_identify_response`.
    #[sabi(last_prefix_field)]
    fn on_identify_response(
        &self,
        link: RStr<'_>,
        body: RSlice<'_, u8>,
        hash: RSlice<'_, u8>,
    ) -> FfiIdentifyVerdict;
}

/// An owned, type-erased FFI auth object.
pub type FfiAuthBox = FfiAuthCheck_TO<RBox<()>>;

/// `IdentifyRequest` across the boundary.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub enum FfiIdentifyRequest {
    /// `Now`.
    Now {
        /// Command id.
        cmd_id: u32,
        /// Body.
        body: RVec<u8>,
        /// Opaque hash.
        hash: RVec<u8>,
    },
    /// `Later`.
    Later,
    /// `Never`.
    Never,
}

/// Plugin side: wraps an auth plugin into an FFI object.
///
/// # Errors
///
/// The panic message if the plugin's `name()` panics.
pub fn export_auth<T: AuthCheck>(auth: T) -> Result<FfiAuthBox, String> {
    let name = catch(|| RString::from(auth.name()))?;
    Ok(FfiAuthCheck_TO::from_value(
        AuthExport {
            inner: Guarded::new(auth),
            name,
        },
        TD_Opaque,
    ))
}

/// Host side: turns an FFI auth object into an `Arc<dyn AuthCheck>`.
pub fn import_auth(obj: FfiAuthBox, origin: &str) -> Arc<dyn AuthCheck> {
    let name = obj.name().as_str().to_owned();
    Arc::new(ImportedAuth {
        obj,
        name,
        origin: origin.to_owned(),
    })
}

struct AuthExport<T> {
    inner: Guarded<T>,
    name: RString,
}

impl<T: AuthCheck> FfiAuthCheck for AuthExport<T> {
    fn name(&self) -> RStr<'_> {
        self.name.as_rstr()
    }

    fn is_authed(&self, host: RStr<'_>) -> bool {
        catch(|| self.inner.is_authed(host.as_str())).unwrap_or(FALLBACK_IS_AUTHED)
    }

    fn ensure_authed(&self, host: RStr<'_>) -> RResult<(), FfiAuthError> {
        match catch(|| pollster::block_on(self.inner.ensure_authed(host.as_str()))) {
            Ok(Ok(())) => RResult::ROk(()),
            Ok(Err(e)) => RResult::RErr(e.into()),
            Err(msg) => RResult::RErr(auth_panicked(&self.name, &msg).into()),
        }
    }

    fn identify_request(&self, link: RStr<'_>) -> FfiIdentifyRequest {
        match catch(|| self.inner.identify_request(link.as_str())) {
            Ok(IdentifyRequest::Now { cmd_id, body, hash }) => FfiIdentifyRequest::Now {
                cmd_id: cmd_id.0,
                body: body.into(),
                hash: hash.into(),
            },
            Ok(IdentifyRequest::Never) => FfiIdentifyRequest::Never,
            // Later, a variant newer than this ABI, or a panic: ask again next time.
            Ok(_) | Err(_) => FfiIdentifyRequest::Later,
        }
    }

    fn on_identify_response(
        &self,
        link: RStr<'_>,
        body: RSlice<'_, u8>,
        hash: RSlice<'_, u8>,
    ) -> FfiIdentifyVerdict {
        catch(|| {
            self.inner
                .on_identify_response(link.as_str(), body.as_slice(), hash.as_slice())
        })
        .map_or(
            FfiIdentifyVerdict::from(FALLBACK_IDENTIFY_VERDICT),
            FfiIdentifyVerdict::from,
        )
    }
}

struct ImportedAuth {
    obj: FfiAuthBox,
    name: String,
    origin: String,
}

impl fmt::Debug for ImportedAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedAuth")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish()
    }
}

#[async_trait::async_trait]
impl AuthCheck for ImportedAuth {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_authed(&self, host: &str) -> bool {
        self.obj.is_authed(host.into())
    }

    async fn ensure_authed(&self, host: &str) -> Result<(), AuthError> {
        // Blocks this thread until the plugin is done; see the module docs.
        self.obj
            .ensure_authed(host.into())
            .into_result()
            .map_err(AuthError::from)
    }

    fn is_blocking(&self) -> bool {
        // `ensure_authed` above holds its thread for the whole plugin call.
        true
    }

    fn identify_request(&self, link: &str) -> IdentifyRequest {
        match self.obj.identify_request(link.into()) {
            FfiIdentifyRequest::Now { cmd_id, body, hash } => IdentifyRequest::Now {
                cmd_id: CmdId(cmd_id),
                body: body.into_vec(),
                hash: hash.into_vec(),
            },
            FfiIdentifyRequest::Later => IdentifyRequest::Later,
            FfiIdentifyRequest::Never => IdentifyRequest::Never,
        }
    }

    fn on_identify_response(&self, link: &str, body: &[u8], hash: &[u8]) -> IdentifyVerdict {
        self.obj
            .on_identify_response(link.into(), body.into(), hash.into())
            .into()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[derive(Debug, Default)]
    struct TokenAuth {
        authed: AtomicBool,
    }

    #[async_trait::async_trait]
    impl AuthCheck for TokenAuth {
        fn name(&self) -> &str {
            "token"
        }
        fn is_authed(&self, host: &str) -> bool {
            host == "open.example" || self.authed.load(Ordering::SeqCst)
        }
        async fn ensure_authed(&self, host: &str) -> Result<(), AuthError> {
            // A real await point, so the executor has to poll more than once.
            YieldOnce(false).await;
            match host {
                "bad.example" => Err(AuthError::Rejected("bad token".into())),
                "busy.example" => Err(AuthError::Transient("busy".into())),
                _ => {
                    self.authed.store(true, Ordering::SeqCst);
                    Ok(())
                }
            }
        }
        fn identify_request(&self, link: &str) -> IdentifyRequest {
            match link {
                "main" => IdentifyRequest::Now {
                    cmd_id: CmdId(205),
                    body: b"hello".to_vec(),
                    hash: vec![1, 2],
                },
                "minor" => IdentifyRequest::Later,
                _ => IdentifyRequest::Never,
            }
        }
        fn on_identify_response(&self, _link: &str, body: &[u8], hash: &[u8]) -> IdentifyVerdict {
            match (body, hash) {
                (b"ok", [1, 2]) => IdentifyVerdict::Accepted,
                (b"no", _) => IdentifyVerdict::Rejected,
                _ => IdentifyVerdict::Retry,
            }
        }
    }

    struct YieldOnce(bool);

    impl std::future::Future for YieldOnce {
        type Output = ();
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            if self.0 {
                return std::task::Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }

    #[derive(Debug)]
    struct Panicky;

    #[async_trait::async_trait]
    impl AuthCheck for Panicky {
        fn name(&self) -> &str {
            "panicky"
        }
        fn is_authed(&self, _: &str) -> bool {
            panic!("is_authed exploded")
        }
        async fn ensure_authed(&self, _: &str) -> Result<(), AuthError> {
            panic!("login exploded")
        }
        fn identify_request(&self, _: &str) -> IdentifyRequest {
            panic!("identify exploded")
        }
        fn on_identify_response(&self, _: &str, _: &[u8], _: &[u8]) -> IdentifyVerdict {
            panic!("verdict exploded")
        }
    }

    #[test]
    fn plugin_side_object_answers_like_the_plugin() {
        let obj = export_auth(TokenAuth::default()).unwrap();
        assert_eq!(obj.name().as_str(), "token");
        assert!(obj.is_authed("open.example".into()));
        assert!(!obj.is_authed("x.example".into()));
        assert_eq!(
            obj.ensure_authed("bad.example".into()),
            RResult::RErr(FfiAuthError::Rejected("bad token".into()))
        );
        assert_eq!(obj.ensure_authed("x.example".into()), RResult::ROk(()));
        assert!(obj.is_authed("x.example".into()));
        assert_eq!(
            obj.identify_request("main".into()),
            FfiIdentifyRequest::Now {
                cmd_id: 205,
                body: b"hello".to_vec().into(),
                hash: vec![1, 2].into()
            }
        );
        assert_eq!(
            obj.on_identify_response("main".into(), b"ok"[..].into(), [1u8, 2][..].into()),
            FfiIdentifyVerdict::Accepted
        );
    }

    #[test]
    fn host_adapter_round_trips_every_method() {
        let direct = TokenAuth::default();
        let loaded = import_auth(export_auth(TokenAuth::default()).unwrap(), "test");
        assert_eq!(loaded.name(), direct.name());
        for link in ["main", "minor", "other"] {
            assert_eq!(loaded.identify_request(link), direct.identify_request(link));
        }
        for (body, hash) in [(&b"ok"[..], &[1u8, 2][..]), (b"no", &[]), (b"?", &[9])] {
            assert_eq!(
                loaded.on_identify_response("main", body, hash),
                direct.on_identify_response("main", body, hash)
            );
        }
        for host in ["bad.example", "busy.example", "good.example"] {
            assert_eq!(
                pollster::block_on(loaded.ensure_authed(host)),
                pollster::block_on(direct.ensure_authed(host))
            );
        }
        assert_eq!(
            loaded.is_authed("good.example"),
            direct.is_authed("good.example")
        );
        assert!(format!("{loaded:?}").contains("test"));
    }

    #[test]
    fn an_imported_auth_plugin_says_it_blocks() {
        assert!(!TokenAuth::default().is_blocking());
        let loaded = import_auth(export_auth(TokenAuth::default()).unwrap(), "test");
        assert!(loaded.is_blocking());
    }

    #[test]
    fn panics_become_the_documented_fallbacks() {
        let loaded = import_auth(export_auth(Panicky).unwrap(), "test");
        assert!(!loaded.is_authed("h"));
        match pollster::block_on(loaded.ensure_authed("h")) {
            Err(AuthError::Transient(m)) => assert!(m.contains("login exploded"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(loaded.identify_request("main"), IdentifyRequest::Later);
        assert_eq!(
            loaded.on_identify_response("main", b"", b""),
            IdentifyVerdict::Retry
        );
    }
}
