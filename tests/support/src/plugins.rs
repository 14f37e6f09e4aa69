//! Plugins for tests: a scriptable [`AuthCheck`] and a static, optionally slow [`IpSource`].
//!
//! Both count their calls and wait only with `tokio::time`, so they work under paused time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use phobos_plugin_api::{
    AddrSource, AuthCheck, AuthError, CmdId, IdentifyRequest, IdentifyVerdict, IpPort, IpSource,
    LinkPurpose, ResolveError, ResolvedAddr,
};

/// An [`AuthCheck`] for tests.
///
/// Identify: when built [`with_identify`](Self::with_identify) it asks for an identify frame
/// on every new link and accepts exactly the reply body given; otherwise it never identifies.
/// Auth gate: [`is_authed`](AuthCheck::is_authed) returns the current flag;
/// `ensure_authed` waits `login_delay` and then succeeds (setting the flag) or fails as
/// configured.
#[derive(Debug)]
pub struct TestAuth {
    identify: Option<(CmdId, Vec<u8>, Vec<u8>)>,
    authed: AtomicBool,
    login_delay: Duration,
    login_result: Mutex<Result<(), AuthError>>,
    logins: AtomicU32,
    identify_replies: AtomicU32,
}

impl TestAuth {
    /// Authenticated, no identify.
    pub fn new() -> Self {
        TestAuth {
            identify: None,
            authed: AtomicBool::new(true),
            login_delay: Duration::ZERO,
            login_result: Mutex::new(Ok(())),
            logins: AtomicU32::new(0),
            identify_replies: AtomicU32::new(0),
        }
    }

    /// Sends an identify frame `(cmd_id, body)` on every new link and accepts the reply whose
    /// body is `accept`; any other reply is rejected.
    pub fn with_identify(mut self, cmd_id: CmdId, body: &[u8], accept: &[u8]) -> Self {
        self.identify = Some((cmd_id, body.to_vec(), accept.to_vec()));
        self
    }

    /// Starts unauthenticated; `ensure_authed` takes `delay` and then gives `result`.
    pub fn needing_login(mut self, delay: Duration, result: Result<(), AuthError>) -> Self {
        self.authed = AtomicBool::new(false);
        self.login_delay = delay;
        self.login_result = Mutex::new(result);
        self
    }

    /// How many times `ensure_authed` ran.
    pub fn logins(&self) -> u32 {
        self.logins.load(Ordering::SeqCst)
    }

    /// How many identify replies were judged.
    pub fn identify_replies(&self) -> u32 {
        self.identify_replies.load(Ordering::SeqCst)
    }
}

impl Default for TestAuth {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl AuthCheck for TestAuth {
    fn name(&self) -> &str {
        "test-auth"
    }

    fn is_authed(&self, _host: &str) -> bool {
        self.authed.load(Ordering::SeqCst)
    }

    async fn ensure_authed(&self, _host: &str) -> Result<(), AuthError> {
        self.logins.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.login_delay).await;
        let result = self
            .login_result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if result.is_ok() {
            self.authed.store(true, Ordering::SeqCst);
        }
        result
    }

    fn identify_request(&self, _link: &str) -> IdentifyRequest {
        match &self.identify {
            Some((cmd_id, body, _)) => IdentifyRequest::Now {
                cmd_id: *cmd_id,
                body: body.clone(),
                hash: b"test-hash".to_vec(),
            },
            None => IdentifyRequest::Never,
        }
    }

    fn on_identify_response(&self, _link: &str, body: &[u8], _hash: &[u8]) -> IdentifyVerdict {
        self.identify_replies.fetch_add(1, Ordering::SeqCst);
        match &self.identify {
            Some((_, _, accept)) if accept == body => IdentifyVerdict::Accepted,
            _ => IdentifyVerdict::Rejected,
        }
    }
}

/// An [`IpSource`] answering from a fixed table, after an optional (tokio-time) delay.
#[derive(Debug, Default)]
pub struct StaticIpSource {
    table: HashMap<String, Vec<IpPort>>,
    delay: Duration,
    calls: AtomicU32,
}

impl StaticIpSource {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `host` with `addrs` (with their ports).
    pub fn with_host(mut self, host: &str, addrs: impl IntoIterator<Item = IpPort>) -> Self {
        self.table
            .insert(host.to_owned(), addrs.into_iter().collect());
        self
    }

    /// Waits this long before every answer.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// How many lookups ran.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl IpSource for StaticIpSource {
    fn name(&self) -> &str {
        "static-test"
    }

    async fn resolve(
        &self,
        host: &str,
        _purpose: LinkPurpose,
    ) -> Result<Vec<ResolvedAddr>, ResolveError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let Some(addrs) = self.table.get(host) else {
            return Err(ResolveError::NoSuchHost);
        };
        Ok(addrs
            .iter()
            .map(|a| ResolvedAddr {
                ip: a.ip,
                port: Some(a.port),
                source: AddrSource::Debug,
            })
            .collect())
    }
}
