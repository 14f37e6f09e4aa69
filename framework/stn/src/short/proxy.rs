//! Proxies (spec §8.6): [`Proxy`] says which one, [`ProxyConnector`] tunnels through it.
//!
//! Both kinds end in a plain byte stream to the target address, so TLS (a
//! [`TlsConnector`](crate::TlsConnector) built `over` the proxy connector) and HTTP run
//! end to end through the tunnel and the proxy never sees the request.
//!
//! - **HTTP CONNECT** (RFC 9110 §9.3.6): `CONNECT ip:port HTTP/1.1`, optional
//!   `Proxy-Authorization: Basic …`; any 2xx opens the tunnel.
//! - **SOCKS5** (RFC 1928) with no authentication or username/password (RFC 1929); the target
//!   is always sent as an IP address, never a name, so the address the engine chose (and
//!   ranks) is the one the proxy connects to.
//!
//! Design: both handshakes are written here (a few dozen lines each) rather than pulled in
//! from a crate: the target is always an IP, the errors need to keep the proxy's reply code,
//! and the CONNECT reply must be read without consuming a byte of the tunnel.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use phobos_plugin_api::IpPort;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connector::{Connector, Established, LinkStream, TcpConnector};

/// A proxy the short link connects through.
///
/// ```
/// use phobos_stn::{Proxy, ProxyAuth};
///
/// let http = Proxy::http_connect("127.0.0.1:3128".parse().unwrap());
/// let socks = Proxy::socks5("127.0.0.1:1080".parse().unwrap(), Some(ProxyAuth::new("u", "p")));
/// assert_ne!(http, socks);
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Proxy {
    /// An HTTP proxy that opens tunnels with `CONNECT`.
    HttpConnect {
        /// The proxy's address.
        addr: SocketAddr,
        /// Credentials sent as `Proxy-Authorization: Basic`.
        auth: Option<ProxyAuth>,
    },
    /// A SOCKS5 proxy.
    Socks5 {
        /// The proxy's address.
        addr: SocketAddr,
        /// Username/password authentication (RFC 1929), if the proxy wants it.
        auth: Option<ProxyAuth>,
    },
}

impl Proxy {
    /// An HTTP CONNECT proxy without credentials.
    pub fn http_connect(addr: SocketAddr) -> Self {
        Proxy::HttpConnect { addr, auth: None }
    }

    /// An HTTP CONNECT proxy with Basic credentials.
    pub fn http_connect_with_auth(addr: SocketAddr, auth: ProxyAuth) -> Self {
        Proxy::HttpConnect {
            addr,
            auth: Some(auth),
        }
    }

    /// A SOCKS5 proxy, with optional username/password authentication.
    pub fn socks5(addr: SocketAddr, auth: Option<ProxyAuth>) -> Self {
        Proxy::Socks5 { addr, auth }
    }

    /// The proxy's own address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Proxy::HttpConnect { addr, .. } | Proxy::Socks5 { addr, .. } => *addr,
        }
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, addr, auth) = match self {
            Proxy::HttpConnect { addr, auth } => ("HttpConnect", addr, auth.is_some()),
            Proxy::Socks5 { addr, auth } => ("Socks5", addr, auth.is_some()),
        };
        f.debug_struct(kind)
            .field("addr", addr)
            .field("auth", &auth)
            .finish()
    }
}

/// A proxy username and password. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyAuth {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
}

impl ProxyAuth {
    /// Credentials from a username and a password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        ProxyAuth {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a proxy did not open the tunnel. Carried inside the [`io::Error`] a
/// [`ProxyConnector`] returns ([`ProxyError::from_io`] gets it back).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The HTTP proxy answered `CONNECT` with this status (407: credentials missing or
    /// refused).
    #[error("HTTP proxy answered CONNECT with status {0}")]
    ConnectStatus(u16),
    /// The SOCKS5 proxy accepts none of the offered authentication methods.
    #[error("SOCKS5 proxy accepts no offered authentication method")]
    NoAcceptableAuth,
    /// The SOCKS5 proxy refused the username and password.
    #[error("SOCKS5 proxy refused the credentials")]
    AuthRejected,
    /// The SOCKS5 proxy could not connect to the target (RFC 1928 reply code).
    #[error("SOCKS5 proxy reply {0}")]
    Socks5Reply(u8),
    /// The proxy's answer does not follow its protocol.
    #[error("malformed proxy reply")]
    Malformed,
}

impl ProxyError {
    /// The [`ProxyError`] inside an error from [`ProxyConnector::connect`], if any.
    pub fn from_io(err: &io::Error) -> Option<&ProxyError> {
        err.get_ref()?.downcast_ref::<ProxyError>()
    }

    fn into_io(self) -> io::Error {
        // Design: a target refused or unreachable behind the proxy keeps the kind a direct
        // connect would have, so the engine sees the same dial error either way.
        let kind = match self {
            ProxyError::Socks5Reply(5) => io::ErrorKind::ConnectionRefused,
            ProxyError::Socks5Reply(3) => io::ErrorKind::NetworkUnreachable,
            ProxyError::Socks5Reply(4) => io::ErrorKind::HostUnreachable,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

/// Connects to a target through a [`Proxy`]: the proxy is reached with an inner connector
/// (plain TCP by default), then asked for a tunnel to the target.
#[derive(Clone)]
pub struct ProxyConnector {
    inner: Arc<dyn Connector>,
    proxy: Proxy,
}

impl ProxyConnector {
    /// Tunnels through `proxy`, reached over plain TCP.
    pub fn new(proxy: Proxy) -> Self {
        Self::over(Arc::new(TcpConnector::new()), proxy)
    }

    /// Tunnels through `proxy`, reached with `inner`.
    pub fn over(inner: Arc<dyn Connector>, proxy: Proxy) -> Self {
        ProxyConnector { inner, proxy }
    }

    /// The proxy.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }
}

impl fmt::Debug for ProxyConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConnector")
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Connector for ProxyConnector {
    async fn connect(&self, addr: IpPort) -> io::Result<Box<dyn LinkStream>> {
        self.connect_reporting(addr, Established::ignore()).await
    }

    /// Reports the connection to the proxy before the proxy's handshake.
    async fn connect_reporting(
        &self,
        addr: IpPort,
        established: Established,
    ) -> io::Result<Box<dyn LinkStream>> {
        let mut stream = self.inner.connect(self.proxy.addr().into()).await?;
        established.report();
        let target = SocketAddr::from(addr);
        match &self.proxy {
            Proxy::HttpConnect { auth, .. } => {
                http_connect(&mut stream, target, auth.as_ref()).await?
            }
            Proxy::Socks5 { auth, .. } => socks5(&mut stream, target, auth.as_ref()).await?,
        }
        Ok(stream)
    }
}

/// Asks an HTTP proxy for a tunnel to `target`.
async fn http_connect(
    stream: &mut Box<dyn LinkStream>,
    target: SocketAddr,
    auth: Option<&ProxyAuth>,
) -> io::Result<()> {
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(a) = auth {
        let token = base64(format!("{}:{}", a.username, a.password).as_bytes());
        req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    stream.flush().await?;
    // Read the reply head one byte at a time: whatever follows it belongs to the tunnel.
    // Interim (1xx) replies come before the final one and are skipped (RFC 9110 §15.2); the
    // byte cap covers them all, so a proxy sending them without end is refused.
    let mut head = Vec::with_capacity(128);
    let mut read = 0usize;
    loop {
        head.clear();
        // RFC 9112 §2.2: a bare LF ends a line too (a proxy answering `HTTP/1.1 200 OK\n\n`
        // otherwise held the attempt until the connect timeout).
        while !(head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n")) {
            if read >= MAX_CONNECT_REPLY {
                return Err(ProxyError::Malformed.into_io());
            }
            head.push(stream.read_u8().await?);
            read += 1;
        }
        let status = parse_status(&head).ok_or_else(|| ProxyError::Malformed.into_io())?;
        match status {
            100..=199 => continue,
            200..=299 => return Ok(()),
            _ => return Err(ProxyError::ConnectStatus(status).into_io()),
        }
    }
}

/// The status code of an HTTP/1.x status line at the start of `head`.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.trim_end().splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// Runs the SOCKS5 greeting, optional authentication and `CONNECT` to `target`.
async fn socks5(
    stream: &mut Box<dyn LinkStream>,
    target: SocketAddr,
    auth: Option<&ProxyAuth>,
) -> io::Result<()> {
    let greeting: &[u8] = match auth {
        Some(_) => &[SOCKS_VERSION, 2, METHOD_NONE, METHOD_PASSWORD],
        None => &[SOCKS_VERSION, 1, METHOD_NONE],
    };
    stream.write_all(greeting).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if choice[0] != SOCKS_VERSION {
        return Err(ProxyError::Malformed.into_io());
    }
    match (choice[1], auth) {
        (METHOD_NONE, _) => {}
        (METHOD_PASSWORD, Some(a)) => {
            let (user, pass) = (a.username.as_bytes(), a.password.as_bytes());
            let (Ok(ulen), Ok(plen)) = (u8::try_from(user.len()), u8::try_from(pass.len())) else {
                // RFC 1929 allows at most 255 bytes each.
                return Err(ProxyError::AuthRejected.into_io());
            };
            let mut msg = Vec::with_capacity(3 + user.len() + pass.len());
            msg.push(1);
            msg.push(ulen);
            msg.extend_from_slice(user);
            msg.push(plen);
            msg.extend_from_slice(pass);
            stream.write_all(&msg).await?;
            let mut status = [0u8; 2];
            stream.read_exact(&mut status).await?;
            if status[1] != 0 {
                return Err(ProxyError::AuthRejected.into_io());
            }
        }
        (METHOD_REFUSED, _) => return Err(ProxyError::NoAcceptableAuth.into_io()),
        _ => return Err(ProxyError::Malformed.into_io()),
    }
    let mut req = vec![SOCKS_VERSION, CMD_CONNECT, 0];
    match target.ip() {
        IpAddr::V4(ip) => {
            req.push(ATYP_V4);
            req.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            req.push(ATYP_V6);
            req.extend_from_slice(&ip.octets());
        }
    }
    req.extend_from_slice(&target.port().to_be_bytes());
    stream.write_all(&req).await?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await?;
    if reply[0] != SOCKS_VERSION {
        return Err(ProxyError::Malformed.into_io());
    }
    if reply[1] != 0 {
        return Err(ProxyError::Socks5Reply(reply[1]).into_io());
    }
    // The bound address, which we do not need: its length depends on its type.
    let addr_len = match reply[3] {
        ATYP_V4 => 4,
        ATYP_V6 => 16,
        ATYP_NAME => usize::from(stream.read_u8().await?),
        _ => return Err(ProxyError::Malformed.into_io()),
    };
    let mut rest = vec![0u8; addr_len + 2];
    stream.read_exact(&mut rest).await?;
    Ok(())
}

/// Standard base64 with padding (for `Proxy-Authorization: Basic`).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3F) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

const SOCKS_VERSION: u8 = 0x05;
const METHOD_NONE: u8 = 0x00;
const METHOD_PASSWORD: u8 = 0x02;
const METHOD_REFUSED: u8 = 0xFF;
const CMD_CONNECT: u8 = 0x01;
const ATYP_V4: u8 = 0x01;
const ATYP_NAME: u8 = 0x03;
const ATYP_V6: u8 = 0x04;
/// The longest CONNECT reply head accepted.
const MAX_CONNECT_REPLY: usize = 8 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)]
    fn object_safe(_: Box<dyn Connector>) {}

    /// Runs `http_connect` against a proxy that reads the CONNECT head and answers `reply`,
    /// keeping the connection open.
    async fn connect_reply(reply: &'static [u8]) -> io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut proxy) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(proxy.read_u8().await.unwrap());
            }
            proxy.write_all(reply).await.unwrap();
            // Keep the tunnel open.
            std::future::pending::<()>().await;
        });
        let mut stream: Box<dyn LinkStream> = Box::new(client);
        let target = SocketAddr::from(([127, 0, 0, 1], 9));
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            http_connect(&mut stream, target, None),
        )
        .await
        .expect("the reply head was seen to end")
    }

    #[tokio::test(start_paused = true)]
    async fn interim_replies_before_the_connect_reply_are_skipped() {
        // Before, a `100 Continue` was taken as the final reply: `ConnectStatus(100)`.
        connect_reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n")
            .await
            .unwrap();
        connect_reply(
            b"HTTP/1.1 102 Processing\n\nHTTP/1.1 103 Early\r\nA: b\r\n\r\nHTTP/1.1 200 OK\n\n",
        )
        .await
        .unwrap();
        let refused = connect_reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 No\r\n\r\n")
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("403"), "{refused}");
        // Interim replies without end are capped with the head's bytes.
        let endless: &'static [u8] = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(1000).leak();
        let refused = connect_reply(endless).await.unwrap_err();
        assert!(
            refused.to_string().to_lowercase().contains("malformed"),
            "{refused}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_reply_ending_lines_with_a_bare_lf_is_read() {
        connect_reply(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        // RFC 9112 §2.2: a bare LF ends a line; this one used to wait for the connect timeout.
        connect_reply(b"HTTP/1.1 200 OK\n\n").await.unwrap();
        connect_reply(b"HTTP/1.1 200 Connection established\nVia: p\r\n\n")
            .await
            .unwrap();
        let refused = connect_reply(b"HTTP/1.1 407 Who\n\n").await.unwrap_err();
        assert!(refused.to_string().contains("407"), "{refused}");
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn status_lines_parse_strictly() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Some(200)
        );
        assert_eq!(parse_status(b"HTTP/1.0 407 Auth\r\n\r\n"), Some(407));
        assert_eq!(parse_status(b"HTTP/1.1 20 x\r\n\r\n"), None);
        assert_eq!(parse_status(b"SSH-2.0\r\n\r\n"), None);
    }

    #[test]
    fn refusals_behind_a_proxy_keep_the_direct_kind() {
        let e = ProxyError::Socks5Reply(5).into_io();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(ProxyError::from_io(&e), Some(&ProxyError::Socks5Reply(5)));
        assert_eq!(crate::dial_error(&e), phobos_stn_proto::DialError::Refused);
    }

    #[test]
    fn debug_hides_the_password() {
        let text = format!("{:?}", ProxyAuth::new("user", "secret"));
        assert!(text.contains("user") && !text.contains("secret"));
    }
}
