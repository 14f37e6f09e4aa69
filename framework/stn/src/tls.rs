//! TLS for the long link: [`TlsConnector`] wraps another [`Connector`] (plain TCP by default)
//! and runs a `rustls` handshake (ring provider) over it, so the driver reads and writes the
//! decrypted stream unchanged.
//!
//! Configuration is a [`TlsConfig`] built with [`TlsConfig::builder`]:
//!
//! - the **server name** sent as SNI and checked against the certificate (a DNS name or an
//!   IP address);
//! - the **roots**: the Mozilla bundle of `webpki-roots` by default, or CA certificates from
//!   a PEM file, PEM bytes or DER bytes (once any of those is given the bundle is used only
//!   if [`TlsConfigBuilder::webpki_roots`] asks for it too);
//! - optional **SPKI pins**: SHA-256 digests of the server certificate's
//!   SubjectPublicKeyInfo, in hex or base64. Pins are checked *after* the normal chain and
//!   name verification succeeded, so a pin narrows what is trusted and never widens it: a
//!   valid chain with no matching pin fails with [`TlsError::PinMismatch`]. There is
//!   deliberately no pin-only mode (trusting any self-signed key that matches a pin).
//! - optional **ALPN** protocols offered in the ClientHello.
//!
//! Reconnects resume TLS sessions from `rustls`'s in-memory cache (one per [`TlsConfig`]),
//! saving a round trip. A resumed session skips the certificate check; that is sound because
//! the session was first established under the same verifier and pins.
//!
//! # Timeouts
//!
//! The connector has no timer of its own: the driver runs each connect attempt (TCP and
//! TLS handshake together) in a task it aborts when the engine gives the attempt up, so the
//! handshake is bounded by the engine's per-attempt connect timeout.
//!
//! # Errors
//!
//! A failed TCP connect is passed through unchanged. A failed handshake is classified as a
//! [`TlsError`], logged as a `tracing` warning, remembered ([`TlsConnector::last_error`]),
//! handed to the callback set with [`TlsConfigBuilder::on_error`], and returned as an
//! [`io::Error`] whose inner error is the [`TlsError`] ([`TlsError::from_io`] gets it back).
//! The driver reports it to the engine through [`dial_error`](crate::dial_error): a refused
//! certificate ends tasks with [`ErrorKind::Certificate`](crate::ErrorKind::Certificate)
//! (`TaskError::Dial(DialFailure::Certificate)`), any other handshake failure with
//! [`ErrorKind::Dial`](crate::ErrorKind::Dial) (`DialFailure::Handshake`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use phobos_plugin_api::IpPort;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::connector::{Connector, Established, LinkStream, TcpConnector};

/// The most encrypted bytes a TLS link holds beyond what its socket took (rustls's buffer
/// limit, set on every connection [`TlsConnector`] makes).
///
/// Design: the driver tells the core how many bytes of a connection it still holds, so a
/// request is timed from its first byte on the wire (spec §6.2), and the socket itself
/// holds at most [`NOTSENT_LOWAT`](crate::NOTSENT_LOWAT) unsent. Under TLS, bytes the
/// stream took wait in rustls's buffer until the socket takes them: 64 KiB by rustls's
/// default, over five seconds of a 12 KiB/s uplink, counted as sent. 16 KiB is one full
/// record: a writer never waits for room on a link that keeps up.
pub const TLS_SEND_BUFFER: usize = 16 * 1024;

/// Why a TLS handshake failed, as precise as the certificate check allows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The chain does not lead to a configured root (includes self-signed certificates
    /// that are not roots themselves).
    #[error("certificate issuer is not trusted")]
    UnknownIssuer,
    /// The certificate is not valid for the configured server name.
    #[error("certificate is not valid for the server name")]
    NotValidForName,
    /// The certificate (or one in its chain) has expired.
    #[error("certificate has expired")]
    Expired,
    /// The certificate (or one in its chain) is not valid yet.
    #[error("certificate is not valid yet")]
    NotValidYet,
    /// The certificate has been revoked.
    #[error("certificate has been revoked")]
    Revoked,
    /// A signature in the chain does not verify.
    #[error("certificate signature is invalid")]
    BadSignature,
    /// The chain is valid but the server key matches none of the configured pins.
    #[error("server key matches no configured pin")]
    PinMismatch,
    /// Another certificate problem (the `rustls` description).
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// The handshake failed for a reason other than the certificate: a protocol error, an
    /// alert from the server, the connection closing mid-handshake.
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The handshake's bytes arrived damaged: a record that failed decryption, a malformed
    /// message, or the server's alert that it received one. Worth an immediate new try.
    #[error("TLS handshake bytes were damaged: {0}")]
    Damaged(String),
}

impl TlsError {
    /// Whether the failure is about the server certificate (the server is not who it
    /// claims to be, or is not trusted), rather than the handshake itself.
    pub fn is_certificate_error(&self) -> bool {
        !matches!(self, TlsError::Handshake(_) | TlsError::Damaged(_))
    }

    /// The [`TlsError`] inside an error returned by [`TlsConnector`], if it is one.
    pub fn from_io(err: &io::Error) -> Option<&TlsError> {
        err.get_ref()?.downcast_ref::<TlsError>()
    }

    fn from_rustls(err: &rustls::Error) -> Self {
        match err {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => TlsError::UnknownIssuer,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsError::NotValidForName,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsError::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsError::NotValidYet
                }
                CertificateError::Revoked => TlsError::Revoked,
                CertificateError::BadSignature => TlsError::BadSignature,
                CertificateError::Other(OtherError(inner))
                    if inner.downcast_ref::<PinMismatch>().is_some() =>
                {
                    TlsError::PinMismatch
                }
                other => TlsError::InvalidCertificate(format!("{other:?}")),
            },
            rustls::Error::DecryptError
            | rustls::Error::InvalidMessage(_)
            | rustls::Error::AlertReceived(
                rustls::AlertDescription::BadRecordMac
                | rustls::AlertDescription::DecodeError
                | rustls::AlertDescription::DecryptError,
            ) => TlsError::Damaged(err.to_string()),
            other => TlsError::Handshake(other.to_string()),
        }
    }

    /// Classifies an error from the handshake future.
    fn from_handshake(err: &io::Error) -> Self {
        match rustls_error(err) {
            Some(tls) => TlsError::from_rustls(tls),
            None => TlsError::Handshake(err.to_string()),
        }
    }
}

/// The rustls error inside an IO error from a TLS stream or handshake, if it is one.
pub(crate) fn rustls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

/// One failed handshake, as remembered by [`TlsConnector::last_error`] and passed to the
/// [`TlsConfigBuilder::on_error`] callback.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFailure {
    /// The address the handshake was attempted with.
    pub addr: IpPort,
    /// The configured server name.
    pub server_name: String,
    /// Why it failed.
    pub error: TlsError,
}

/// A bad [`TlsConfig`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The server name is neither a valid DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}")]
    InvalidServerName(String),
    /// A CA file could not be read or parsed.
    #[error("cannot read CA certificates from {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// In-memory CA certificates could not be parsed.
    #[error("invalid CA certificate: {0}")]
    BadCertificate(String),
    /// A pin is neither 64 hex digits nor the base64 of 32 bytes.
    #[error("invalid SPKI pin {0:?}: expected the SHA-256 digest in hex or base64")]
    BadPin(String),
    /// `rustls` rejected the configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(String),
}

type ErrorCallback = Arc<dyn Fn(&TlsFailure) + Send + Sync>;

/// Where root certificates come from.
enum RootSource {
    WebPki,
    PemFile(PathBuf),
    Pem(Vec<u8>),
    Der(Vec<u8>),
}

/// A validated TLS configuration for [`TlsConnector`]. Build it with
/// [`TlsConfig::builder`]; cloning is cheap.
#[derive(Clone)]
pub struct TlsConfig {
    server_name: ServerName<'static>,
    rustls: Arc<rustls::ClientConfig>,
    pins: usize,
    on_error: Option<ErrorCallback>,
}

impl TlsConfig {
    /// Starts a configuration for `server_name` (SNI and the name the certificate must be
    /// valid for: a DNS name or an IP address literal).
    pub fn builder(server_name: impl Into<String>) -> TlsConfigBuilder {
        TlsConfigBuilder {
            server_name: server_name.into(),
            roots: Vec::new(),
            pins: Vec::new(),
            alpn: Vec::new(),
            on_error: None,
        }
    }

    /// The configured server name.
    pub fn server_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }

    /// The underlying `rustls` configuration.
    pub fn rustls_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.rustls
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .field("alpn", &self.rustls.alpn_protocols)
            .field("pins", &self.pins)
            .field("on_error", &self.on_error.is_some())
            .finish()
    }
}

/// Builds a [`TlsConfig`]; errors are reported by [`build`](Self::build).
#[must_use]
pub struct TlsConfigBuilder {
    server_name: String,
    roots: Vec<RootSource>,
    pins: Vec<String>,
    alpn: Vec<Vec<u8>>,
    on_error: Option<ErrorCallback>,
}

impl TlsConfigBuilder {
    /// Trusts the Mozilla root bundle of `webpki-roots`. This is the default when no other
    /// root is configured; call it to trust the bundle *as well as* explicit CAs.
    pub fn webpki_roots(mut self) -> Self {
        self.roots.push(RootSource::WebPki);
        self
    }

    /// Trusts every certificate in the PEM file at `path` (read by [`build`](Self::build)).
    pub fn ca_pem_file(mut self, path: impl AsRef<Path>) -> Self {
        self.roots
            .push(RootSource::PemFile(path.as_ref().to_path_buf()));
        self
    }

    /// Trusts every certificate in `pem` (PEM text).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots.push(RootSource::Pem(pem.into()));
        self
    }

    /// Trusts the DER-encoded certificate `der`.
    pub fn ca_der(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.roots.push(RootSource::Der(der.into()));
        self
    }

    /// Requires the server certificate's SubjectPublicKeyInfo to hash (SHA-256) to `pin`, or
    /// to one of the other pins given. The digest is written as 64 hex digits (`:`
    /// separators allowed) or as base64 (standard or URL-safe alphabet, padding optional),
    /// optionally prefixed with `sha256/`. Giving a second pin (a backup key) accepts either.
    pub fn pin_sha256(mut self, pin: impl Into<String>) -> Self {
        self.pins.push(pin.into());
        self
    }

    /// Offers `protocols` through ALPN, most preferred first. The handshake does not fail
    /// when the server picks none.
    pub fn alpn<P: Into<Vec<u8>>>(mut self, protocols: impl IntoIterator<Item = P>) -> Self {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Calls `callback` with every failed handshake, on the connect task, before the
    /// failure reaches the engine. Keep it short: it runs on the driver's runtime.
    pub fn on_error(mut self, callback: impl Fn(&TlsFailure) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(callback));
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// A [`TlsConfigError`] naming the bad server name, unreadable CA, or malformed pin.
    pub fn build(self) -> Result<TlsConfig, TlsConfigError> {
        let server_name = ServerName::try_from(self.server_name.clone())
            .map_err(|_| TlsConfigError::InvalidServerName(self.server_name.clone()))?;
        let pins = self
            .pins
            .iter()
            .map(|pin| parse_pin(pin).ok_or_else(|| TlsConfigError::BadPin(pin.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let roots = load_roots(&self.roots)?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = if pins.is_empty() {
            webpki
        } else {
            Arc::new(PinnedVerifier {
                inner: webpki,
                pins: pins.clone(),
            })
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError::Rustls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = self.alpn;
        Ok(TlsConfig {
            server_name,
            rustls: Arc::new(config),
            pins: pins.len(),
            on_error: self.on_error,
        })
    }
}

impl fmt::Debug for TlsConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfigBuilder")
            .field("server_name", &self.server_name)
            .field("roots", &self.roots.len())
            .field("pins", &self.pins)
            .field("alpn", &self.alpn)
            .finish_non_exhaustive()
    }
}

fn load_roots(sources: &[RootSource]) -> Result<RootCertStore, TlsConfigError> {
    let mut store = RootCertStore::empty();
    if sources.is_empty() {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(store);
    }
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    for source in sources {
        match source {
            RootSource::WebPki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            RootSource::PemFile(path) => {
                let file_error = |reason: String| TlsConfigError::CaFile {
                    path: path.clone(),
                    reason,
                };
                let found = CertificateDer::pem_file_iter(path)
                    .map_err(|e| file_error(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| file_error(e.to_string()))?;
                if found.is_empty() {
                    return Err(file_error("no certificate in the file".into()));
                }
                certs.extend(found);
            }
            RootSource::Pem(pem) => {
                let found = CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TlsConfigError::BadCertificate(e.to_string()))?;
                if found.is_empty() {
                    return Err(TlsConfigError::BadCertificate(
                        "no certificate in the PEM text".into(),
                    ));
                }
                certs.extend(found);
            }
            RootSource::Der(der) => certs.push(CertificateDer::from(der.clone())),
        }
    }
    for cert in certs {
        store
            .add(cert)
            .map_err(|e| TlsConfigError::BadCertificate(e.to_string()))?;
    }
    Ok(store)
}

/// Parses a SHA-256 pin written in hex or base64.
fn parse_pin(pin: &str) -> Option<[u8; 32]> {
    let pin = pin.trim();
    let pin = pin.strip_prefix("sha256/").unwrap_or(pin);
    let hex_digits: String = pin.chars().filter(|&c| c != ':').collect();
    if hex_digits.len() == 64 {
        if let Ok(bytes) = hex::decode(&hex_digits) {
            return bytes.try_into().ok();
        }
    }
    decode_base64(pin)?.try_into().ok()
}

/// Decodes base64 in the standard or URL-safe alphabet, with or without padding.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in body.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero in a canonical encoding.
    (acc == 0).then_some(out)
}

/// Marker error a [`PinnedVerifier`] wraps in [`CertificateError::Other`].
#[derive(Debug)]
struct PinMismatch;

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("server key matches no configured pin")
    }
}

impl std::error::Error for PinMismatch {}

/// The normal webpki verification, then the SPKI pin check on the end-entity certificate.
#[derive(Debug)]
struct PinnedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pins: Vec<[u8; 32]>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let digest: [u8; 32] = Sha256::digest(cert.subject_public_key_info().as_ref()).into();
        if self.pins.contains(&digest) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A [`Connector`] that runs a TLS handshake over another connector's stream (plain TCP with
/// `TCP_NODELAY` by default).
///
/// ```
/// # use std::sync::Arc;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use phobos_stn::{ClientConfig, TlsConfig, TlsConnector};
///
/// let tls = TlsConfig::builder("longlink.example.com")
///     .pin_sha256("sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
///     .build()?;
/// let codec = Arc::new(phobos_codec_mars::MarsCodec::default());
/// let config = ClientConfig::builder(codec)
///     .link_addrs("default-longlink", [std::net::SocketAddr::from(([192, 0, 2, 1], 443)).into()])
///     .connector(Arc::new(TlsConnector::new(tls)))
///     .build()?;
/// # let _ = config; Ok(()) }
/// ```
pub struct TlsConnector {
    inner: Arc<dyn Connector>,
    tls: tokio_rustls::TlsConnector,
    config: TlsConfig,
    last_error: Mutex<Option<TlsFailure>>,
}

impl TlsConnector {
    /// TLS with `config` over plain TCP ([`TcpConnector`]).
    pub fn new(config: TlsConfig) -> Self {
        Self::over(Arc::new(TcpConnector::new()), config)
    }

    /// TLS with `config` over the streams `inner` opens (a proxy tunnel, say).
    pub fn over(inner: Arc<dyn Connector>, config: TlsConfig) -> Self {
        Self {
            inner,
            tls: tokio_rustls::TlsConnector::from(config.rustls.clone()),
            config,
            last_error: Mutex::new(None),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// The most recent failed handshake, if any handshake has failed. Attempts can race, so
    /// this is the last one to finish; use [`TlsConfigBuilder::on_error`] to see each one.
    pub fn last_error(&self) -> Option<TlsFailure> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, addr: IpPort, error: TlsError) {
        let failure = TlsFailure {
            addr,
            server_name: self.config.server_name(),
            error,
        };
        warn!(
            %addr,
            server_name = %failure.server_name,
            error = %failure.error,
            certificate = failure.error.is_certificate_error(),
            "TLS handshake failed"
        );
        if let Some(callback) = &self.config.on_error {
            callback(&failure);
        }
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(failure);
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Connector for TlsConnector {
    async fn connect(&self, addr: IpPort) -> io::Result<Box<dyn LinkStream>> {
        self.connect_reporting(addr, Established::ignore()).await
    }

    /// Reports the TCP connection before the TLS handshake, so the core can time the
    /// handshake on its own.
    async fn connect_reporting(
        &self,
        addr: IpPort,
        established: Established,
    ) -> io::Result<Box<dyn LinkStream>> {
        let stream = self.inner.connect(addr).await?;
        established.report();
        match self
            .tls
            .connect(self.config.server_name.clone(), stream)
            .await
        {
            Ok(mut tls) => {
                tls.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER));
                Ok(Box::new(tls))
            }
            Err(err) => {
                let error = TlsError::from_handshake(&err);
                self.record(addr, error.clone());
                if err.raw_os_error().is_some() {
                    // A socket failure mid-handshake: keep the OS error for the engine.
                    Err(err)
                } else {
                    Err(io::Error::new(err.kind(), error))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: [u8; 32] = [
        0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9,
        0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52,
        0xb8, 0x55,
    ];

    #[test]
    fn damaged_handshake_bytes_are_told_from_other_failures() {
        let damaged = [
            rustls::Error::DecryptError,
            rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac),
            rustls::Error::AlertReceived(rustls::AlertDescription::DecodeError),
        ];
        for e in damaged {
            let err = TlsError::from_rustls(&e);
            assert!(matches!(err, TlsError::Damaged(_)), "{e:?}");
            assert!(!err.is_certificate_error());
            let io = io::Error::new(io::ErrorKind::InvalidData, err);
            assert_eq!(crate::dial_error(&io), phobos_stn_proto::DialError::Damaged);
        }
        let other = TlsError::from_rustls(&rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        ));
        assert!(matches!(other, TlsError::Handshake(_)));
        let io = io::Error::new(io::ErrorKind::InvalidData, other);
        assert_eq!(
            crate::dial_error(&io),
            phobos_stn_proto::DialError::Handshake
        );
    }

    #[test]
    fn pins_parse_from_hex_and_base64() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(parse_pin(hex), Some(DIGEST));
        assert_eq!(parse_pin(&hex.to_uppercase()), Some(DIGEST));
        let colons: Vec<String> = DIGEST.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_pin(&colons.join(":")), Some(DIGEST));
        let b64 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(parse_pin(b64), Some(DIGEST));
        assert_eq!(parse_pin(&format!("sha256/{b64}")), Some(DIGEST));
        assert_eq!(
            parse_pin("47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"),
            Some(DIGEST)
        );
    }

    #[test]
    fn bad_pins_are_rejected() {
        for bad in [
            "",
            "e3b0c442",
            "zz",
            // 31 bytes.
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuA==",
            // Not base64.
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuF!=",
            // Non-zero trailing bits.
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV=",
        ] {
            assert_eq!(parse_pin(bad), None, "{bad:?}");
        }
        let err = TlsConfig::builder("phobos.test")
            .pin_sha256("nope")
            .build()
            .unwrap_err();
        assert!(matches!(err, TlsConfigError::BadPin(p) if p == "nope"));
    }

    #[test]
    fn config_errors_are_typed() {
        assert!(matches!(
            TlsConfig::builder("not a name!").build(),
            Err(TlsConfigError::InvalidServerName(_))
        ));
        assert!(matches!(
            TlsConfig::builder("phobos.test")
                .ca_pem_file("/nonexistent/phobos-ca.pem")
                .build(),
            Err(TlsConfigError::CaFile { .. })
        ));
        assert!(matches!(
            TlsConfig::builder("phobos.test")
                .ca_pem(&b"no pem here"[..])
                .build(),
            Err(TlsConfigError::BadCertificate(_))
        ));
        assert!(matches!(
            TlsConfig::builder("phobos.test")
                .ca_der(&b"\x30\x03\x02\x01\x00"[..])
                .build(),
            Err(TlsConfigError::BadCertificate(_))
        ));
        let config = TlsConfig::builder("127.0.0.1")
            .alpn(["mars"])
            .build()
            .expect("an IP server name and default roots");
        assert_eq!(config.server_name(), "127.0.0.1");
        assert_eq!(
            config.rustls_config().alpn_protocols,
            vec![b"mars".to_vec()]
        );
    }

    #[test]
    fn rustls_errors_are_classified() {
        let cases = [
            (CertificateError::UnknownIssuer, TlsError::UnknownIssuer),
            (CertificateError::NotValidForName, TlsError::NotValidForName),
            (CertificateError::Expired, TlsError::Expired),
            (CertificateError::NotValidYet, TlsError::NotValidYet),
            (CertificateError::Revoked, TlsError::Revoked),
            (CertificateError::BadSignature, TlsError::BadSignature),
            (
                CertificateError::Other(OtherError(Arc::new(PinMismatch))),
                TlsError::PinMismatch,
            ),
        ];
        for (cert, expected) in cases {
            let err = io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(cert),
            );
            let got = TlsError::from_handshake(&err);
            assert!(got.is_certificate_error());
            assert_eq!(got, expected);
        }
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
        );
        assert!(matches!(
            TlsError::from_handshake(&alert),
            TlsError::Handshake(_)
        ));
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        let got = TlsError::from_handshake(&eof);
        assert!(!got.is_certificate_error());
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, got.clone());
        assert_eq!(TlsError::from_io(&wrapped), Some(&got));
        assert_eq!(TlsError::from_io(&eof), None);
    }
}
