//! How the driver opens sockets: the [`Connector`] trait and the default [`TcpConnector`].
//!
//! The core decides *where* to connect and *when* to give up; a connector only turns one
//! address into a byte stream. Racing several addresses is the core's job (it emits one
//! `Connect` action per attempt), so a connector never needs a timeout of its own. TLS or a
//! proxy fit here later as other connectors wrapping the TCP one.

use std::fmt;
use std::io;

use async_trait::async_trait;
use phobos_plugin_api::IpPort;
use phobos_stn_proto::{CloseCause, DialError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A connected byte stream the driver can read and write.
pub trait LinkStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> LinkStream for T {}

/// Opens one connection to one address.
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// Connects to `addr`.
    ///
    /// # Errors
    ///
    /// The IO error that made the attempt fail; the driver turns it into a
    /// [`DialError`] for the core with [`dial_error`].
    async fn connect(&self, addr: IpPort) -> io::Result<Box<dyn LinkStream>>;
}

/// Plain TCP with `TCP_NODELAY` (Mars disables Nagle on every long link).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

#[async_trait]
impl Connector for TcpConnector {
    async fn connect(&self, addr: IpPort) -> io::Result<Box<dyn LinkStream>> {
        let stream = TcpStream::connect(std::net::SocketAddr::from(addr)).await?;
        stream.set_nodelay(true)?;
        Ok(Box::new(stream))
    }
}

/// The core's view of a failed connect. A TLS failure (an error carrying a [`TlsError`](crate::TlsError))
/// is [`DialError::Certificate`] when the server's certificate was refused, else
/// [`DialError::Handshake`].
pub fn dial_error(err: &io::Error) -> DialError {
    if let Some(tls) = crate::TlsError::from_io(err) {
        return if tls.is_certificate_error() {
            DialError::Certificate
        } else {
            DialError::Handshake
        };
    }
    match err.kind() {
        io::ErrorKind::ConnectionRefused => DialError::Refused,
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => {
            DialError::Unreachable
        }
        _ => DialError::Io(errno(err)),
    }
}

/// The core's view of a failed read or write.
pub fn close_cause(err: &io::Error) -> CloseCause {
    match err.kind() {
        io::ErrorKind::UnexpectedEof => CloseCause::RemoteClosed,
        _ => CloseCause::Io(errno(err)),
    }
}

/// The OS error number, or -1 when the error has none.
fn errno(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)]
    fn object_safe(_: Box<dyn Connector>) {}

    #[test]
    fn io_errors_map_to_the_core_vocabulary() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(dial_error(&refused), DialError::Refused);
        let os = io::Error::from_raw_os_error(110);
        assert_eq!(dial_error(&os), DialError::Io(110));
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(close_cause(&eof), CloseCause::RemoteClosed);
        assert_eq!(close_cause(&io::Error::other("x")), CloseCause::Io(-1));
    }
}
