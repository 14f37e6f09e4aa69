//! The one TOML file server and client read: [`HostConfig`]. Every field is documented in
//! `docs/HOST_EXAMPLE.md`; every table refuses unknown fields, and a bad value is an error
//! naming the field.
//!
//! Relative paths in the file (certificates, the xlog folder, plugin libraries) are relative
//! to the file's own folder, so a config works from any working directory.
//!
//! ```
//! use phobos_host_example::config::HostConfig;
//!
//! let config = HostConfig::from_toml_str("[demo]\nclients = 3\n", None)?;
//! assert_eq!(config.demo.clients, 3);
//! assert_eq!(config.demo.messages, 50);
//!
//! let err = HostConfig::from_toml_str("[demo]\nclientz = 3\n", None).unwrap_err();
//! assert!(err.to_string().contains("clientz"));
//! # Ok::<(), phobos_host_example::config::ConfigError>(())
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The configuration used when no `--config` is given.
pub const BUILTIN_CONFIG: &str = include_str!("../config/demo.toml");

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// `[plugins]`: read by `phobos-plugin-registry` (codec, auth, heartbeat, ip_sources,
    /// cipher, each a name or `{ name, library, config }`).
    #[serde(default)]
    pub plugins: Option<toml::Table>,
    /// `[server]`.
    #[serde(default)]
    pub server: ServerSection,
    /// `[client]`.
    #[serde(default)]
    pub client: ClientSection,
    /// `[xlog]`.
    #[serde(default)]
    pub xlog: XlogSection,
    /// `[demo]`.
    #[serde(default)]
    pub demo: DemoSection,
    /// Where the file was read from (`None`: built in); relative paths are resolved against
    /// its folder.
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Long-link listen address.
    pub long_link: SocketAddr,
    /// Short-link (HTTP) listen address.
    pub http: SocketAddr,
    /// Serve the long link over TLS.
    pub tls: bool,
    /// Serve the short link over HTTPS (with the same certificate).
    pub http_tls: bool,
    /// PEM certificate chain; with `key`. Absent: a CA and certificate are generated.
    pub cert: Option<PathBuf>,
    /// PEM private key; with `cert`.
    pub key: Option<PathBuf>,
    /// Where a generated CA and certificate are written (`ca.pem` for clients to trust).
    pub tls_dir: Option<PathBuf>,
    /// The secret login tokens are signed with.
    pub auth_secret: String,
    /// Messages kept per conversation.
    pub history_limit: usize,
    /// Recent sends remembered to drop retried duplicates.
    pub dedupe_window: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            long_link: SocketAddr::from(([127, 0, 0, 1], 7070)),
            http: SocketAddr::from(([127, 0, 0, 1], 7080)),
            tls: true,
            http_tls: true,
            cert: None,
            key: None,
            tls_dir: None,
            auth_secret: "phobos-demo-secret".to_owned(),
            history_limit: 10_000,
            dedupe_window: 100_000,
        }
    }
}

/// `[client]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSection {
    /// The server's long-link address.
    pub server: SocketAddr,
    /// The server's short-link (HTTP) address.
    pub http: SocketAddr,
    /// Use TLS on the long link.
    pub tls: bool,
    /// Use HTTPS on the short link.
    pub http_tls: bool,
    /// PEM file of the CA to trust (default: `ca.pem` in the server's `tls_dir`).
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must carry.
    pub server_name: String,
    /// The login token (default: issued from `[server] auth_secret`, standing in for a login
    /// service).
    pub token: Option<String>,
    /// Extra attempts per send after the first.
    pub retry_count: u32,
    /// The longest a send may take, retries included, in milliseconds.
    pub send_timeout_ms: u64,
}

impl Default for ClientSection {
    fn default() -> Self {
        let server = ServerSection::default();
        ClientSection {
            server: server.long_link,
            http: server.http,
            tls: true,
            http_tls: true,
            ca: None,
            server_name: crate::tls::SERVER_NAME.to_owned(),
            token: None,
            retry_count: 5,
            send_timeout_ms: 30_000,
        }
    }
}

/// `[xlog]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XlogSection {
    /// The log folder (default: a new folder in the system temp dir, named at start).
    pub dir: Option<PathBuf>,
    /// File names start with this.
    pub name_prefix: String,
    /// Lowest level written.
    pub level: LogLevel,
}

impl Default for XlogSection {
    fn default() -> Self {
        XlogSection {
            dir: None,
            name_prefix: "phobos".to_owned(),
            level: LogLevel::Info,
        }
    }
}

/// A log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation (link status changes, task ends).
    Info,
    /// Problems.
    Warn,
    /// Failures.
    Error,
}

/// `[demo]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoSection {
    /// How many clients.
    pub clients: usize,
    /// Messages each client sends.
    pub messages: usize,
    /// How many rooms the clients spread over.
    pub rooms: usize,
    /// Every n-th message is a direct message to another client (0: none).
    pub direct_every: usize,
    /// Restart the server once, midway.
    pub restart: bool,
    /// How long the server stays down during the restart, in milliseconds.
    pub restart_downtime_ms: u64,
    /// TLS on both links (overrides `[server]`/`[client]` `tls`; `--no-tls` turns it off).
    pub tls: bool,
}

impl Default for DemoSection {
    fn default() -> Self {
        DemoSection {
            clients: 20,
            messages: 50,
            rooms: 4,
            direct_every: 10,
            restart: true,
            restart_downtime_ms: 300,
            tls: true,
        }
    }
}

/// The most clients the demo runs. Each holds a few sockets (both ends are in the process)
/// and ~100 KiB; a million asked for grew the process by ~600 MB every 5 s until it ran out
/// of file descriptors, then waited on timeouts.
pub const MAX_DEMO_CLIENTS: usize = 1000;

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is invalid, a field unknown or a value bad; the message names the field.
    #[error("invalid config ({origin}): {message}")]
    Invalid {
        /// The file, or "built-in config".
        origin: String,
        /// The parser's message, naming the field and showing the line.
        message: String,
    },
}

impl HostConfig {
    /// Reads `path`, or the built-in config when `None`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`].
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Self::from_toml_str(BUILTIN_CONFIG, None),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                Self::from_toml_str(&text, Some(p))
            }
        }
    }

    /// Parses `text`; `origin` is the file it came from (for errors and relative paths).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`].
    pub fn from_toml_str(text: &str, origin: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config: HostConfig =
            toml::from_str(text).map_err(|e: toml::de::Error| ConfigError::Invalid {
                origin: origin.map_or("built-in config".to_owned(), |p| p.display().to_string()),
                message: match e.span().and_then(|s| field_at(text, s.start)) {
                    Some(field) => format!("field `{field}`: {}", e.to_string().trim_end()),
                    None => e.to_string().trim_end().to_owned(),
                },
            })?;
        config.origin = origin.map(Path::to_owned);
        config.check()?;
        Ok(config)
    }

    /// `path` resolved against the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match self.origin.as_deref().and_then(Path::parent) {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_owned(),
        }
    }

    /// Where a generated CA and certificate go: `[server] tls_dir`, or a folder in the
    /// system temp dir shared by `server` and `client` runs of this user.
    pub fn tls_dir(&self) -> PathBuf {
        match &self.server.tls_dir {
            Some(d) => self.resolve(d),
            None => std::env::temp_dir().join("phobos-host-example-tls"),
        }
    }

    /// The CA file a client trusts: `[client] ca`, or `ca.pem` in [`tls_dir`](Self::tls_dir).
    pub fn client_ca(&self) -> PathBuf {
        match &self.client.ca {
            Some(p) => self.resolve(p),
            None => self.tls_dir().join("ca.pem"),
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError::Invalid {
            origin: self
                .origin
                .as_ref()
                .map_or("built-in config".to_owned(), |p| p.display().to_string()),
            message,
        };
        if self.server.cert.is_some() != self.server.key.is_some() {
            return Err(bad(
                "server.cert and server.key must be given together".to_owned()
            ));
        }
        if self.server.auth_secret.is_empty() {
            return Err(bad("server.auth_secret must not be empty".to_owned()));
        }
        if self.server.history_limit == 0 {
            return Err(bad("server.history_limit must be at least 1".to_owned()));
        }
        if self.server.dedupe_window == 0 {
            return Err(bad("server.dedupe_window must be at least 1".to_owned()));
        }
        if self.client.retry_count > 30 {
            return Err(bad(format!(
                "client.retry_count must be at most 30, got {}",
                self.client.retry_count
            )));
        }
        if !(1_000..=600_000).contains(&self.client.send_timeout_ms) {
            return Err(bad(format!(
                "client.send_timeout_ms must be 1000 to 600000, got {}",
                self.client.send_timeout_ms
            )));
        }
        if self.xlog.name_prefix.is_empty()
            || !self
                .xlog
                .name_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(format!(
                "xlog.name_prefix must be ASCII letters, digits, '-' or '_', got {:?}",
                self.xlog.name_prefix
            )));
        }
        if !(2..=MAX_DEMO_CLIENTS).contains(&self.demo.clients) {
            return Err(bad(format!(
                "demo.clients must be 2 to {MAX_DEMO_CLIENTS}, got {}",
                self.demo.clients
            )));
        }
        if self.demo.messages == 0 {
            return Err(bad("demo.messages must be at least 1".to_owned()));
        }
        // Bounded as the clients are: each room is a name and a member list built up front,
        // and 200 million of them ran the demo out of memory before it started.
        if !(1..=MAX_DEMO_CLIENTS).contains(&self.demo.rooms) {
            return Err(bad(format!(
                "demo.rooms must be 1 to {MAX_DEMO_CLIENTS}, got {}",
                self.demo.rooms
            )));
        }
        if self.demo.restart_downtime_ms > 10_000 {
            return Err(bad(format!(
                "demo.restart_downtime_ms must be at most 10000, got {}",
                self.demo.restart_downtime_ms
            )));
        }
        Ok(())
    }
}

/// The dotted name of the key on the line holding byte `at` (`demo.clients`), from the
/// nearest `[table]` header above it; `None` when the line is not `key = value`.
fn field_at(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(line_start..)?.lines().next()?;
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_config_is_valid() {
        let c = HostConfig::load(None).unwrap();
        assert!(c.server.tls);
        assert_eq!(c.demo.clients, 20);
        assert!(c.plugins.is_some());
    }

    #[test]
    fn unknown_fields_are_named_in_every_table() {
        for (table, field) in [
            ("server", "lisen"),
            ("client", "sever"),
            ("xlog", "folder"),
            ("demo", "clientz"),
        ] {
            let err = HostConfig::from_toml_str(&format!("[{table}]\n{field} = 1\n"), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{err}");
        }
        let err = HostConfig::from_toml_str("[serverz]\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("serverz"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("[server]\nlong_link = \"nowhere\"\n", "server.long_link"),
            ("[xlog]\nlevel = \"loud\"\n", "xlog.level"),
            ("[demo]\nrooms = 2\nclients = -1\n", "demo.clients"),
            ("[demo]\nclients = \"x\"\n", "field `demo.clients`"),
            ("[demo]\nclients = 1\n", "demo.clients"),
            ("[demo]\nrooms = 200000000\n", "demo.rooms"),
            ("[demo]\nrooms = 0\n", "demo.rooms"),
            ("[server]\ncert = \"a.pem\"\n", "server.key"),
            ("[client]\nretry_count = 99\n", "client.retry_count"),
            ("[xlog]\nname_prefix = \"a/b\"\n", "xlog.name_prefix"),
        ];
        for (text, field) in cases {
            let err = HostConfig::from_toml_str(text, None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{text:?}: {err}");
        }
    }

    #[test]
    fn relative_paths_are_resolved_against_the_file() {
        let c = HostConfig::from_toml_str(
            "[client]\nca = \"certs/ca.pem\"\n",
            Some(Path::new("/etc/phobos/host.toml")),
        )
        .unwrap();
        assert_eq!(c.client_ca(), Path::new("/etc/phobos/certs/ca.pem"));
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = HostConfig::load(Some(Path::new("/nonexistent/host.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/host.toml"), "{err}");
    }
}
