//! [`TlsFront`]: a TLS terminator that pipes each session to a plain backend, so any plain
//! mock server (long link, short link) can be reached over TLS, with the sessions it saw.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// A rustls server config presenting `cert` with its PKCS#8 `key`, offering the ALPN
/// protocols `alpn` (none when empty).
///
/// # Panics
///
/// When the key does not fit the certificate: test set-up, not a runtime condition.
pub fn server_config(
    cert: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
    alpn: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8)),
        )
        .expect("the key matches the certificate");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// What one completed handshake negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSession {
    /// The server name the client sent (SNI).
    pub sni: Option<String>,
    /// The ALPN protocol agreed on.
    pub alpn: Option<Vec<u8>>,
}

/// A running terminator. Dropping it closes the listener and every session.
#[derive(Debug)]
pub struct TlsFront {
    addr: SocketAddr,
    sessions: Arc<Mutex<Vec<TlsSession>>>,
    task: JoinHandle<()>,
}

impl TlsFront {
    /// Listens on `listen` (port 0 for any) with `config`; each session that completes its
    /// handshake is piped to a new connection to `backend`. A failed handshake (a client
    /// that rejects the certificate, bytes damaged on the way) just ends that connection.
    ///
    /// # Errors
    ///
    /// When the listener cannot be bound.
    pub async fn start(
        config: Arc<rustls::ServerConfig>,
        listen: SocketAddr,
        backend: SocketAddr,
    ) -> io::Result<TlsFront> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let seen = sessions.clone();
        let task = tokio::spawn(async move {
            // Dropped with the accept loop, which aborts every session.
            let mut conns = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                // Without it the reply after the session tickets waits for a delayed ACK.
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                conns.spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let conn = tls.get_ref().1;
                    let session = TlsSession {
                        sni: conn.server_name().map(str::to_owned),
                        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                    };
                    seen.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(session);
                    let Ok(mut plain) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = plain.set_nodelay(true);
                    // A broken session (a damaged record fails its check) just ends.
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(TlsFront {
            addr,
            sessions,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The handshakes completed so far, in order.
    pub fn sessions(&self) -> Vec<TlsSession> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::certs::TestCa;

    #[tokio::test]
    async fn a_session_is_piped_to_the_backend_and_recorded() {
        let backend = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let ca = TestCa::new("Front CA");
        let (cert, key) = ca.server_cert(&["front.test"]);
        let config = server_config(cert.der().clone(), key.serialize_der(), &[b"mars"]);
        let front = TlsFront::start(config, (Ipv4Addr::LOCALHOST, 0).into(), backend_addr)
            .await
            .unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.der())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"mars".to_vec()];
        let tcp = TcpStream::connect(front.addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("front.test").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .unwrap();
        tls.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tls.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        assert_eq!(
            front.sessions(),
            vec![TlsSession {
                sni: Some("front.test".into()),
                alpn: Some(b"mars".to_vec()),
            }]
        );
    }
}
