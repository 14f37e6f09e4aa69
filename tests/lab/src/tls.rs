//! The lab's TLS for [`Contender::PhobosTls`](crate::contender::Contender::PhobosTls): one
//! test CA per process, made on first use, and the server certificate it signs for
//! [`SERVER_NAME`]. The server side terminates TLS in front of the echo server (behind the
//! fault proxy, so the proxy's faults hit TLS records).

use std::sync::{Arc, OnceLock};

use phobos_stn::TlsConfig;
use phobos_test_support::certs::TestCa;
use phobos_test_support::tls_front;

/// The name the client asks for and the certificate is made for.
pub const SERVER_NAME: &str = "lab.phobos.test";

struct LabTls {
    ca_der: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
}

fn lab_tls() -> &'static LabTls {
    static TLS: OnceLock<LabTls> = OnceLock::new();
    TLS.get_or_init(|| {
        let ca = TestCa::new("Phobos Lab CA");
        let (cert, key) = ca.server_cert(&[SERVER_NAME]);
        LabTls {
            ca_der: ca.der(),
            server: tls_front::server_config(cert.der().clone(), key.serialize_der(), &[]),
        }
    })
}

/// The client side: trusts the lab CA only, asks for [`SERVER_NAME`].
///
/// # Panics
///
/// Never in practice: the CA certificate was just made and always parses.
pub fn client_config() -> TlsConfig {
    TlsConfig::builder(SERVER_NAME)
        .ca_der(lab_tls().ca_der.clone())
        .build()
        .expect("the lab CA parses")
}

/// The server side: the certificate for [`SERVER_NAME`] signed by the lab CA.
pub fn server_config() -> Arc<rustls::ServerConfig> {
    lab_tls().server.clone()
}
