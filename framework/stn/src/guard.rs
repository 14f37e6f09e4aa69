//! The driver's calls into plugins, guarded against panics: the async calls
//! ([`IpSource::resolve`](phobos_plugin_api::IpSource::resolve),
//! [`AuthCheck::ensure_authed`](phobos_plugin_api::AuthCheck::ensure_authed)) through
//! [`call`], a panic in any poll of the plugin's future (or in making it, or dropping it)
//! becoming an `Err` with the panic's message; and the reports of panics, caught here or by
//! the engine ([`Event::PluginPanicked`](phobos_stn_proto::Event::PluginPanicked)).
//!
//! The fallbacks are `phobos_plugin_api::panics`'s, as for a plugin loaded from a library.
//!
//! The app's own transport is guarded the same way: a [`Connector`](crate::Connector)'s
//! connect ([`connect`]) and the [`LinkStream`] it returns ([`GuardedStream`]). A panic there
//! is an error of that connect or that connection, like a socket's: the core retries and
//! reconnects as it would after one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use phobos_plugin_api::panics::{catch, drop_caught};
use phobos_stn_proto::{PluginKind, PluginPanic};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::error;

use phobos_stn_proto::TransportFacts;

use crate::connector::{LinkStream, PeerProbe};

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
    phobos_plugin_api::panics::name_of(name)
}

/// Runs a connector's connect (made by `make`) under guard: a panic is logged, counted in
/// `panics` and becomes an IO error, which the core counts as a failed connect. The stream
/// is guarded the same way, counting in `panics` too.
pub(crate) async fn connect<F>(
    panics: &Arc<AtomicU64>,
    make: impl FnOnce() -> F,
) -> io::Result<Box<dyn LinkStream>>
where
    F: Future<Output = io::Result<Box<dyn LinkStream>>> + Unpin,
{
    match call(make).await {
        Ok(result) => result.map(|stream| GuardedStream::boxed(stream, panics.clone())),
        Err(message) => {
            panics.fetch_add(1, Ordering::Relaxed);
            error!(panic = %message, "a connector panicked; the connect failed");
            Err(io::Error::other(format!(
                "the connector panicked: {message}"
            )))
        }
    }
}

/// A connection's stream whose calls run under guard.
///
/// Design: the stream may be the app's own (from its [`Connector`](crate::Connector)), and
/// before this guard its panic ended the driver (every task then ended with
/// `LocalError::Reset`) or, on the short link, hyper's connection task (which hyper
/// reported as the request's own fault, not retried). Now the panic is logged once and the
/// stream answers that call and every later one with an IO error without being called
/// again: the connection fails like a broken socket, and the core retries and reconnects.
/// The guard costs one more call through a `dyn` per poll and an unwinding landing pad:
/// pho-like's instructions per task did not move (902 and 899 against 899 and 903 without it,
/// `docs/lab/throughput.md`, "Session 31's tree").
pub(crate) struct GuardedStream {
    inner: Box<dyn LinkStream>,
    panicked: bool,
    /// Where its panics are counted.
    panics: Arc<AtomicU64>,
}

impl GuardedStream {
    /// `inner` under guard, its panics counted in `panics`.
    pub(crate) fn new(inner: Box<dyn LinkStream>, panics: Arc<AtomicU64>) -> GuardedStream {
        GuardedStream {
            inner,
            panicked: false,
            panics,
        }
    }

    fn boxed(inner: Box<dyn LinkStream>, panics: Arc<AtomicU64>) -> Box<dyn LinkStream> {
        Box::new(GuardedStream::new(inner, panics))
    }

    fn poll<T>(
        &mut self,
        call: impl FnOnce(Pin<&mut dyn LinkStream>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.panicked {
            return Poll::Ready(Err(stream_panicked()));
        }
        let inner = Pin::new(&mut *self.inner);
        match catch(move || call(inner)) {
            Ok(polled) => polled,
            Err(message) => {
                self.panicked = true;
                self.panics.fetch_add(1, Ordering::Relaxed);
                error!(panic = %message, "a connection's stream panicked; the connection ends");
                Poll::Ready(Err(stream_panicked()))
            }
        }
    }
}

/// What every call on a stream that panicked answers.
fn stream_panicked() -> io::Error {
    io::Error::other("the connection's stream panicked")
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll(|inner| inner.poll_read(cx, buf))
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll(|inner| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll(|inner| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        !self.panicked && catch(|| self.inner.is_write_vectored()).unwrap_or(false)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll(|inner| inner.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll(|inner| inner.poll_shutdown(cx))
    }
}

impl LinkStream for GuardedStream {
    fn transport_facts(&self) -> Option<TransportFacts> {
        if self.panicked {
            return None;
        }
        catch(|| self.inner.transport_facts()).unwrap_or(None)
    }

    fn peer_probe(&self) -> Option<PeerProbe> {
        if self.panicked {
            return None;
        }
        catch(|| self.inner.peer_probe()).unwrap_or(None)
    }
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        let inner = std::mem::replace(&mut self.inner, Box::new(Closed));
        if let Err(message) = drop_caught(inner) {
            self.panics.fetch_add(1, Ordering::Relaxed);
            error!(panic = %message, "a connection's stream panicked as it was dropped");
        }
    }
}

/// What a [`GuardedStream`] holds while its own stream is dropped: no connection.
struct Closed;

impl AsyncRead for Closed {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Closed {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::NotConnected.into()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl LinkStream for Closed {}

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
