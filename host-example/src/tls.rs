//! The demo's TLS material: a throw-away CA and a server certificate made at start.

use std::sync::Arc;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The name the demo server's certificate is issued for (and the clients verify).
pub(crate) const SERVER_NAME: &str = "phobos-demo.local";

/// A CA made for this run and the server's configuration with a certificate it signed.
pub(crate) struct DemoTls {
    /// The CA certificate (DER) the clients trust, and nothing else.
    pub(crate) ca_der: Vec<u8>,
    /// The server side.
    pub(crate) server: Arc<rustls::ServerConfig>,
}

impl DemoTls {
    /// Generates the CA and the server certificate.
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate().context("generating the demo CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Phobos demo CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params
            .self_signed(&ca_key)
            .context("signing the demo CA")?;

        let leaf_key = KeyPair::generate().context("generating the server key")?;
        let mut leaf_params = CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, SERVER_NAME);
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca, &ca_key)
            .context("signing the server certificate")?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .context("the server certificate")?;
        Ok(DemoTls {
            ca_der: ca.der().to_vec(),
            server: Arc::new(server),
        })
    }
}
