//! The short link's keep-alive pool (spec §8.5).
//!
//! Rules, as Mars's:
//!
//! - A task asks for reuse with its own `Connection: Keep-Alive` header (the default
//!   request says `Connection: close`).
//! - After a complete 200 response on a connection both sides keep open, the connection is
//!   cached under (address, host, TLS or not) for the server's `Keep-Alive: timeout=N`
//!   when `0 < N < 60`, else 5 s.
//! - Before connecting to an address, a live cached connection for the same key is used
//!   instead (expired or closed ones are dropped on the way).
//! - A reused connection that then fails to give a response bans the pool for 5 min.
//! - A network change or `redo_tasks` empties it.
//!
//! Design: the pool keeps at most [`MAX_IDLE`] connections (oldest dropped first), so a
//! server that keeps everything alive cannot make the client hoard sockets.

use std::time::{Duration, Instant};

use phobos_plugin_api::IpPort;

use super::exchange::H1Conn;

/// What a cached connection is good for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(crate) addr: IpPort,
    pub(crate) host: String,
    pub(crate) tls: bool,
}

/// Idle keep-alive connections.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Vec<Idle>,
    banned_until: Option<Instant>,
}

struct Idle {
    key: PoolKey,
    conn: H1Conn,
    expires: Instant,
}

impl Pool {
    /// A live connection for `key`, if one is cached (and the pool is not banned).
    pub(crate) fn take(&mut self, key: &PoolKey, now: Instant) -> Option<H1Conn> {
        self.idle.retain(|i| i.expires > now && i.conn.is_open());
        if self.is_banned(now) {
            return None;
        }
        let pos = self.idle.iter().position(|i| &i.key == key)?;
        Some(self.idle.swap_remove(pos).conn)
    }

    /// Caches `conn` after a response whose `Keep-Alive` header (if any) was `keep_alive`.
    pub(crate) fn put(
        &mut self,
        key: PoolKey,
        conn: H1Conn,
        keep_alive: Option<&str>,
        now: Instant,
    ) {
        if self.is_banned(now) || !conn.is_open() {
            return;
        }
        if self.idle.len() >= MAX_IDLE {
            let oldest = self
                .idle
                .iter()
                .enumerate()
                .min_by_key(|(_, i)| i.expires)
                .map(|(n, _)| n);
            if let Some(n) = oldest {
                self.idle.swap_remove(n);
            }
        }
        self.idle.push(Idle {
            key,
            conn,
            expires: now + keep_alive_timeout(keep_alive),
        });
    }

    /// A reused connection failed: no reuse for [`BAN`].
    pub(crate) fn ban(&mut self, now: Instant) {
        self.idle.clear();
        self.banned_until = Some(now + BAN);
    }

    /// Drops every cached connection (network change, redo).
    pub(crate) fn clear(&mut self) {
        self.idle.clear();
    }

    /// Connections cached now.
    pub(crate) fn len(&self) -> usize {
        self.idle.len()
    }

    fn is_banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|t| now < t)
    }
}

/// How long a connection may stay cached: the server's `timeout=N` when `0 < N < 60`, else
/// 5 s (Mars's rule).
pub(crate) fn keep_alive_timeout(header: Option<&str>) -> Duration {
    let n = header.and_then(|h| {
        h.split(',').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("timeout")
                .then(|| v.trim().parse::<u64>().ok())
                .flatten()
        })
    });
    match n {
        Some(n) if n > 0 && n < 60 => Duration::from_secs(n),
        _ => DEFAULT_KEEP_ALIVE,
    }
}

/// Whether the request asks for a reusable connection (`Connection: Keep-Alive`).
pub(crate) fn wants_keep_alive(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("connection")
            && v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("keep-alive"))
    })
}

/// Keep-alive time when the server names none (or an out-of-range one).
const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a failed reuse disables the pool.
const BAN: Duration = Duration::from_secs(300);
/// Most idle connections kept.
const MAX_IDLE: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_timeout_follows_mars_bounds() {
        assert_eq!(keep_alive_timeout(None), Duration::from_secs(5));
        assert_eq!(
            keep_alive_timeout(Some("timeout=30, max=100")),
            Duration::from_secs(30)
        );
        assert_eq!(
            keep_alive_timeout(Some("max=3, Timeout = 7")),
            Duration::from_secs(7)
        );
        assert_eq!(
            keep_alive_timeout(Some("timeout=0")),
            Duration::from_secs(5)
        );
        assert_eq!(
            keep_alive_timeout(Some("timeout=60")),
            Duration::from_secs(5)
        );
        assert_eq!(
            keep_alive_timeout(Some("timeout=x")),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn keep_alive_is_asked_by_the_connection_header() {
        let h = |v: &str| vec![("connection".to_owned(), v.to_owned())];
        assert!(wants_keep_alive(&h("Keep-Alive")));
        assert!(wants_keep_alive(&h("Upgrade, keep-alive")));
        assert!(!wants_keep_alive(&h("close")));
        assert!(!wants_keep_alive(&[]));
    }

    #[tokio::test]
    async fn cached_connections_expire_and_bans_stop_reuse() {
        let t0 = Instant::now();
        let key = PoolKey {
            addr: "127.0.0.1:80"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
            host: "h".to_owned(),
            tls: false,
        };
        let limits = super::super::exchange::Limits {
            max_head: 8192,
            max_body: 8192,
        };
        let open = || async {
            let (c, s) = tokio::io::duplex(64);
            (H1Conn::handshake(Box::new(c), limits).await.unwrap(), s)
        };
        let mut pool = Pool::default();
        let (conn, _s1) = open().await;
        pool.put(key.clone(), conn, Some("timeout=2"), t0);
        assert_eq!(pool.len(), 1);
        let other = PoolKey {
            tls: true,
            ..key.clone()
        };
        assert!(pool.take(&other, t0).is_none());
        assert!(pool.take(&key, t0 + Duration::from_secs(3)).is_none());
        assert_eq!(pool.len(), 0);

        let (conn, _s2) = open().await;
        pool.put(key.clone(), conn, None, t0);
        assert!(pool.take(&key, t0 + Duration::from_secs(1)).is_some());

        pool.ban(t0);
        let (conn, _s3) = open().await;
        pool.put(key.clone(), conn, None, t0 + Duration::from_secs(1));
        assert_eq!(pool.len(), 0);
        let (conn, _s4) = open().await;
        pool.put(key.clone(), conn, None, t0 + BAN);
        assert!(pool.take(&key, t0 + BAN).is_some());
    }
}
