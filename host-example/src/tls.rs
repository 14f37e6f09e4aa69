//! TLS material: a throw-away CA and server certificate made at start, or PEM files.
//!
//! The demo and a `server` run without certificate files make a CA and a certificate for
//! [`SERVER_NAME`] signed by it; clients trust only that CA. [`DemoTls::write_pem`] stores
//! them so a `client` started later (another process) can trust the same CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The name the generated server certificate is issued for (and the clients verify by
/// default).
pub const SERVER_NAME: &str = "phobos-demo.local";

/// A CA made for this run and the server's configuration with a certificate it signed.
#[derive(Clone)]
pub struct DemoTls {
    /// The CA certificate (DER) the clients trust, and nothing else.
    pub ca_der: Vec<u8>,
    /// The CA certificate as PEM.
    pub ca_pem: String,
    /// The server certificate as PEM.
    pub cert_pem: String,
    /// The server's private key as PEM (PKCS#8).
    pub key_pem: String,
    /// The server side.
    pub server: Arc<rustls::ServerConfig>,
}

/// Why TLS material could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// Generating a key or certificate failed.
    #[error("generating the demo certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be read or holds no usable item.
    #[error("reading {path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Writing the PEM files failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// rustls refused the certificate or key.
    #[error("the server certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

impl DemoTls {
    /// Generates the CA and the server certificate for [`SERVER_NAME`].
    ///
    /// # Errors
    ///
    /// [`TlsSetupError::Generate`] or [`TlsSetupError::Rustls`].
    pub fn generate() -> Result<Self, TlsSetupError> {
        Self::generate_for(SERVER_NAME)
    }

    /// Generates the CA and a server certificate for `server_name` (a DNS name or an IP
    /// address: what clients verify).
    ///
    /// # Errors
    ///
    /// [`TlsSetupError::Generate`] (a name a certificate cannot hold, among others) or
    /// [`TlsSetupError::Rustls`].
    pub fn generate_for(server_name: &str) -> Result<Self, TlsSetupError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Phobos demo CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key)?;

        let leaf_key = KeyPair::generate()?;
        let mut leaf_params = CertificateParams::new(vec![server_name.to_owned()])?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, server_name);
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;

        let server = server_config(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
        Ok(DemoTls {
            ca_der: ca.der().to_vec(),
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
            server,
        })
    }

    /// Writes `ca.pem`, `server.pem` and `server.key` into `dir` (created if needed).
    ///
    /// # Errors
    ///
    /// [`TlsSetupError::Write`] naming the file.
    pub fn write_pem(&self, dir: &Path) -> Result<(), TlsSetupError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsSetupError::Write {
            path: dir.to_owned(),
            source,
        })?;
        for (name, text) in [
            ("ca.pem", &self.ca_pem),
            ("server.pem", &self.cert_pem),
            ("server.key", &self.key_pem),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| TlsSetupError::Write { path, source })?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for DemoTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoTls").finish_non_exhaustive()
    }
}

/// A server configuration from a PEM certificate chain and a PEM private key.
///
/// # Errors
///
/// [`TlsSetupError::Pem`] naming the file, or [`TlsSetupError::Rustls`].
pub fn server_config_from_files(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(cert, e))?;
    if chain.is_empty() {
        return Err(TlsSetupError::Pem {
            path: cert.to_owned(),
            reason: "no certificate in the file".to_owned(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
    server_config(chain, key_der)
}

/// The first certificate of a PEM file, as DER (for a client's trusted CA).
///
/// # Errors
///
/// [`TlsSetupError::Pem`] naming the file.
pub fn read_ca(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    CertificateDer::from_pem_file(path)
        .map(|c| c.to_vec())
        .map_err(|e| pem_error(path, e))
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsSetupError {
    TlsSetupError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_round_trips_through_pem_files() {
        let tls = DemoTls::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        tls.write_pem(dir.path()).unwrap();
        assert_eq!(read_ca(&dir.path().join("ca.pem")).unwrap(), tls.ca_der);
        server_config_from_files(
            &dir.path().join("server.pem"),
            &dir.path().join("server.key"),
        )
        .unwrap();
    }

    /// Whether a client trusting `tls`'s CA completes a handshake with its server verifying
    /// `name`.
    async fn handshakes_as(tls: &DemoTls, name: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(tls.ca_der.clone())).unwrap();
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (c, s) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
        let server = tokio::spawn(async move { acceptor.accept(s).await.is_ok() });
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let ok = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
            .connect(name, c)
            .await
            .is_ok();
        let _ = server.await;
        ok
    }

    #[tokio::test]
    async fn a_certificate_is_made_for_the_name_asked_for() {
        // Before, `server` made it for `phobos-demo.local` whatever `[client] server_name`
        // said, and printed the configured name: every client of that config was refused.
        let tls = DemoTls::generate_for("chat.example.org").unwrap();
        assert!(handshakes_as(&tls, "chat.example.org").await);
        assert!(!handshakes_as(&tls, SERVER_NAME).await);
        let by_ip = DemoTls::generate_for("127.0.0.1").unwrap();
        assert!(handshakes_as(&by_ip, "127.0.0.1").await);
        assert!(handshakes_as(&DemoTls::generate().unwrap(), SERVER_NAME).await);
    }

    #[test]
    fn a_file_without_pem_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.pem");
        std::fs::write(&path, "not pem").unwrap();
        let err = read_ca(&path).unwrap_err().to_string();
        assert!(err.contains("junk.pem"), "{err}");
        let err = server_config_from_files(&path, &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("junk.pem"), "{err}");
    }
}
