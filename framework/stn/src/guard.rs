//! The driver's calls into plugins, guarded against panics: the async calls
//! ([`IpSource::resolve`](phobos_plugin_api::IpSource::resolve),
//! [`AuthCheck::ensure_authed`](phobos_plugin_api::AuthCheck::ensure_authed)) through
//! [`call`], a panic in any poll of the plugin's future (or in making it, or dropping it)
//! becoming an `Err` with the panic's message; and the reports of panics, caught here or by
//! the engine ([`Event::PluginPanicked`](phobos_stn_proto::Event::PluginPanicked)).
//!
//! The fallbacks are `phobos_plugin_api::panics`'s, as for a plugin loaded from a library.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use phobos_plugin_api::panics::{catch, drop_caught};
use phobos_stn_proto::{PluginKind, PluginPanic};
use tracing::error;

/// Makes the plugin's future with `make` and runs it, each step under guard: `Err(message)`
/// when the plugin panicked.
pub(crate) async fn call<F>(make: impl FnOnce() -> F) -> Result<F::Output, String>
where
    F: Future + Unpin,
{
    let fut = catch(make)?;
    Caught(Some(fut)).await
}

/// [`call`] for a plugin call that answers `Result<T, E>`: a panic is reported ([`report`],
/// the `kind` plugin named by `name` in `method`) and answered with `fallback(name,
/// message)`, the error `phobos_plugin_api::panics` gives for it.
pub(crate) async fn call_or_fallback<F, T, E>(
    panics: &AtomicU64,
    (kind, method): (PluginKind, &'static str),
    name: impl FnOnce() -> String,
    make: impl FnOnce() -> F,
    fallback: impl FnOnce(&str, &str) -> E,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>> + Unpin,
{
    match call(make).await {
        Ok(result) => result,
        Err(message) => {
            let name = name_of(name);
            let error = fallback(&name, &message);
            report(panics, &PluginPanic::new(kind, name, method, message));
            Err(error)
        }
    }
}

/// Logs a caught plugin panic (one `tracing` error naming the plugin and carrying the
/// message) and counts it.
pub(crate) fn report(count: &AtomicU64, panic: &PluginPanic) {
    count.fetch_add(1, Ordering::Relaxed);
    error!(
        plugin_kind = %panic.kind,
        plugin = %panic.name,
        call = panic.call,
        message = %panic.message,
        "{panic}; the call was answered with its fallback",
    );
}

/// Calls `name` (a plugin's `name()`) under guard.
pub(crate) fn name_of(name: impl FnOnce() -> String) -> String {
    catch(name).unwrap_or_else(|_| "(its name() panicked)".to_owned())
}

/// A future polled under guard; the inner future is dropped under guard too.
struct Caught<F>(Option<F>);

impl<F: Future + Unpin> Future for Caught<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.0.as_mut() else {
            return Poll::Ready(Err("polled again after it ended".to_owned()));
        };
        let polled = catch(|| Pin::new(inner).poll(cx));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                let _ = drop_caught(self.0.take());
                Poll::Ready(Ok(output))
            }
            Err(message) => {
                let _ = drop_caught(self.0.take());
                Poll::Ready(Err(message))
            }
        }
    }
}

impl<F> Drop for Caught<F> {
    fn drop(&mut self) {
        // Stopped before its end (a cancelled resolve): the plugin's future may panic
        // in its own drop.
        let _ = drop_caught(self.0.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_poll_or_in_making_the_future_is_an_error() {
        let ok = call(|| Box::pin(async { 7 })).await;
        assert_eq!(ok, Ok(7));
        let in_poll = call(|| Box::pin(async { panic!("inside") })).await;
        assert_eq!(in_poll, Err("inside".to_owned()));
        let in_make = call(|| -> Pin<Box<std::future::Ready<u8>>> { panic!("making") }).await;
        assert_eq!(in_make, Err("making".to_owned()));
    }

    /// A call stopped before its end (a resolve the core gave up): the plugin's future
    /// panics as it is dropped, and the panic stays here.
    #[tokio::test(start_paused = true)]
    async fn a_future_panicking_when_dropped_is_contained() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("dropped");
            }
        }
        let bomb = Bomb;
        let never = call(move || {
            Box::pin(async move {
                let _held = bomb;
                std::future::pending::<u8>().await
            })
        });
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(1), never).await;
        assert!(stopped.is_err(), "timed out, and dropped without a panic");
    }
}
