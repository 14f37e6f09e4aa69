//! Two network namespaces joined by a veth pair, with `nft` and `tc` faults between them.
//!
//! ```text
//!   namespace phobos-lab-<pid>-<n>-c            namespace phobos-lab-<pid>-<n>-s
//!  ┌──────────────────────────────┐           ┌──────────────────────────────────────┐
//!  │ lo      127.0.0.1            │           │ lo      127.0.0.1                    │
//!  │ veth0   10.77.0.1/24  ───────┼── veth ───┼─ veth1  10.77.0.2/24, .3, .4, …      │
//!  │ input:  loss (server→client) │           │ input:  SYN drop / RST per address,  │
//!  │ egress: tbf rate             │           │         loss (client→server)         │
//!  └──────────────────────────────┘           │ egress: tbf rate                     │
//!                                             └──────────────────────────────────────┘
//! ```
//!
//! Both namespaces are new and private to one [`Lab`]: the veth pair is created directly
//! inside them (its ends never exist in the caller's namespace), every `nft` table and `tc`
//! qdisc lives inside them, and dropping the [`Lab`] deletes both namespaces, which removes
//! everything in them. Nothing outside the two namespaces is touched, and because each lab
//! has namespaces of its own, the same 10.77.0.0/24 addresses are reused by every lab.
//!
//! Code runs inside a namespace on a dedicated thread that calls `setns(2)` first and then
//! builds its own tokio runtime ([`Lab::spawn_in`]); threads that runtime starts inherit the
//! namespace.
//!
//! Needs root (`CAP_SYS_ADMIN` and `CAP_NET_ADMIN`), `ip` and `tc` from iproute2, and `nft`
//! ([`ensure_tools`] installs the `nftables` package with `apt-get` when `nft` is missing).

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use nix::sched::CloneFlags;

/// One lab: a client and a server namespace joined by a veth pair.
#[derive(Debug)]
pub struct Lab {
    client: String,
    server: String,
    server_addrs: Vec<Ipv4Addr>,
}

/// Which namespace of a [`Lab`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Where clients run; its veth end is [`CLIENT_ADDR`].
    Client,
    /// Where servers run; its veth end carries [`Lab::server_addrs`].
    Server,
}

/// Faults between the two namespaces. The default is a clean link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetFaults {
    /// Random loss of IP packets in percent (0–100), applied independently to each
    /// direction on arrival (`numgen random mod 100 < N drop`).
    pub loss_percent: u8,
    /// Server addresses whose SYNs are dropped: connecting to them times out.
    pub syn_drop: Vec<SocketAddr>,
    /// Server addresses answered with a TCP reset: connecting to them is refused.
    pub reset: Vec<SocketAddr>,
    /// A bandwidth cap in bits per second on both veth ends (`tc qdisc … tbf`).
    pub rate_bits: Option<u64>,
}

/// Bytes the veth pair carried (IP packets with their headers, retransmissions included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireBytes {
    /// Bytes sent from the client namespace towards the server namespace.
    pub client_to_server: u64,
    /// Bytes sent from the server namespace towards the client namespace.
    pub server_to_client: u64,
}

/// Why the lab could not be set up or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// Not running as root: namespaces cannot be created.
    #[error("network namespaces need root (euid {euid})")]
    NotRoot {
        /// The effective user id.
        euid: u32,
    },
    /// A tool is missing and could not be installed.
    #[error("`{tool}` is missing: {reason}")]
    MissingTool {
        /// The tool.
        tool: &'static str,
        /// What went wrong installing it.
        reason: String,
    },
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr (or its exit status).
        stderr: String,
    },
    /// An OS call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A fault setting is out of range.
    #[error("invalid fault: {0}")]
    InvalidFault(String),
}

impl Lab {
    /// Creates both namespaces, the veth pair, [`CLIENT_ADDR`] on the client end and
    /// `server_addr_count` (at least 1) addresses `10.77.0.2, 10.77.0.3, …` on the server
    /// end, and brings every interface (loopback included) up. Stale labs of dead processes
    /// are swept first.
    ///
    /// # Errors
    ///
    /// [`LabError::NotRoot`] without root, [`LabError::Command`] when `ip` fails; whatever
    /// was created is removed again.
    pub fn create(server_addr_count: usize) -> Result<Lab, LabError> {
        check_root()?;
        let count = server_addr_count.clamp(1, 200);
        sweep_stale();
        let n = NEXT_LAB.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let lab = Lab {
            client: format!("{NS_PREFIX}{pid}-{n}-c"),
            server: format!("{NS_PREFIX}{pid}-{n}-s"),
            server_addrs: (0..count)
                .map(|i| Ipv4Addr::new(10, 77, 0, 2 + i as u8))
                .collect(),
        };
        // From here on, Drop removes whatever exists.
        run("ip", &["netns", "add", &lab.client])?;
        run("ip", &["netns", "add", &lab.server])?;
        run(
            "ip",
            &[
                "link",
                "add",
                "veth0",
                "netns",
                &lab.client,
                "type",
                "veth",
                "peer",
                "name",
                "veth1",
                "netns",
                &lab.server,
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                &lab.client,
                "addr",
                "add",
                "10.77.0.1/24",
                "dev",
                "veth0",
            ],
        )?;
        for a in &lab.server_addrs {
            let cidr = format!("{a}/24");
            run(
                "ip",
                &["-n", &lab.server, "addr", "add", &cidr, "dev", "veth1"],
            )?;
        }
        for (ns, dev) in [(&lab.client, "veth0"), (&lab.server, "veth1")] {
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            run("ip", &["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(lab)
    }

    /// The namespace's name (under `/run/netns`).
    pub fn namespace(&self, side: Side) -> &str {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }

    /// The server end's addresses, in order (`10.77.0.2` first).
    pub fn server_addrs(&self) -> &[Ipv4Addr] {
        &self.server_addrs
    }

    /// Replaces the faults: one `nft` table per namespace (swapped atomically) and a `tbf`
    /// qdisc on each veth end (removed when `rate_bits` is `None`).
    ///
    /// # Errors
    ///
    /// [`LabError::InvalidFault`] for a loss above 100 % or a zero rate, or the failing
    /// command.
    pub fn apply(&self, faults: &NetFaults) -> Result<(), LabError> {
        if faults.loss_percent > 100 {
            return Err(LabError::InvalidFault(format!(
                "loss {} % is above 100 %",
                faults.loss_percent
            )));
        }
        if faults.rate_bits == Some(0) {
            return Err(LabError::InvalidFault("a zero rate".into()));
        }
        ensure_tools()?;
        let server_rules = server_ruleset(faults)?;
        let client_rules = loss_ruleset("veth0", &[], faults.loss_percent);
        self.nft(Side::Server, &server_rules)?;
        self.nft(Side::Client, &client_rules)?;
        for (side, dev) in [(Side::Client, "veth0"), (Side::Server, "veth1")] {
            let ns = self.namespace(side);
            match faults.rate_bits {
                Some(rate) => {
                    // Burst: 10 ms worth of bytes, at least a few full-size frames.
                    let burst = (rate / 8 / 100).max(8 * 1514).to_string();
                    let rate = format!("{rate}bit");
                    run(
                        "tc",
                        &[
                            "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate,
                            "burst", &burst, "latency", "200ms",
                        ],
                    )?;
                }
                None => {
                    // Deleting a qdisc that is not there fails; only delete ours.
                    let shown = output("tc", &["-n", ns, "qdisc", "show", "dev", dev])?;
                    if shown.contains("tbf") {
                        run("tc", &["-n", ns, "qdisc", "del", "dev", dev, "root"])?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Bytes the veth pair carried so far.
    ///
    /// # Errors
    ///
    /// The failing command or unparsable counters.
    pub fn wire_bytes(&self) -> Result<WireBytes, LabError> {
        let tx = |side: Side, dev: &str| -> Result<u64, LabError> {
            let path = format!("/sys/class/net/{dev}/statistics/tx_bytes");
            let out = output("ip", &["netns", "exec", self.namespace(side), "cat", &path])?;
            out.trim().parse().map_err(|_| LabError::Command {
                command: format!("cat {path}"),
                stderr: format!("not a number: {out:?}"),
            })
        };
        Ok(WireBytes {
            client_to_server: tx(Side::Client, "veth0")?,
            server_to_client: tx(Side::Server, "veth1")?,
        })
    }

    /// Runs `f` on a new thread inside the namespace of `side`. `f` typically builds its own
    /// tokio runtime; every thread that runtime starts is inside the namespace too.
    ///
    /// # Errors
    ///
    /// When the namespace cannot be opened or entered, or the thread cannot be spawned.
    pub fn spawn_in<F, T>(&self, side: Side, f: F) -> Result<NsThread<T>, LabError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let path = Path::new("/run/netns").join(self.namespace(side));
        let file = File::open(&path).map_err(|source| LabError::Io {
            what: format!("opening {}", path.display()),
            source,
        })?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = thread::Builder::new()
            .name(format!("lab-{side:?}").to_lowercase())
            .spawn(move || {
                let entered = nix::sched::setns(&file, CloneFlags::CLONE_NEWNET);
                drop(file);
                let failed = entered.is_err();
                let _ = ready_tx.send(entered.map_err(io::Error::from));
                if failed {
                    // The caller gets the error from `ready_rx` and never sees this value.
                    return None;
                }
                Some(f())
            })
            .map_err(|source| LabError::Io {
                what: "spawning a lab thread".into(),
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                let _ = handle.join();
                return Err(LabError::Io {
                    what: format!("setns into {}", path.display()),
                    source,
                });
            }
            Err(_) => {
                return Err(LabError::Io {
                    what: "lab thread ended before entering its namespace".into(),
                    source: io::Error::other("thread ended"),
                })
            }
        }
        Ok(NsThread {
            inner: handle,
            namespace: self.namespace(side).to_owned(),
        })
    }

    /// Runs `f` inside the namespace of `side` and waits for it.
    ///
    /// # Errors
    ///
    /// As [`spawn_in`](Self::spawn_in), or [`LabError::Io`] when `f` panicked.
    pub fn run_in<F, T>(&self, side: Side, f: F) -> Result<T, LabError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_in(side, f)?.join()
    }

    fn nft(&self, side: Side, ruleset: &str) -> Result<(), LabError> {
        let ns = self.namespace(side);
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LabError::Io {
                what: "running nft".into(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(ruleset.as_bytes())
                .map_err(|source| LabError::Io {
                    what: "writing the nft ruleset".into(),
                    source,
                })?;
        }
        let out = child.wait_with_output().map_err(|source| LabError::Io {
            what: "running nft".into(),
            source,
        })?;
        if !out.status.success() {
            return Err(LabError::Command {
                command: format!("ip netns exec {ns} nft -f - <<{ruleset}"),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }
}

/// A thread running inside a lab namespace (from [`Lab::spawn_in`]).
#[derive(Debug)]
pub struct NsThread<T> {
    // `None` only when setns failed, which `spawn_in` reports before returning a handle.
    inner: thread::JoinHandle<Option<T>>,
    namespace: String,
}

impl<T> NsThread<T> {
    /// Waits for the thread and returns what its closure returned.
    ///
    /// # Errors
    ///
    /// [`LabError::Io`] when the closure panicked.
    pub fn join(self) -> Result<T, LabError> {
        match self.inner.join() {
            Ok(Some(v)) => Ok(v),
            Ok(None) | Err(_) => Err(LabError::Io {
                what: format!("code in namespace {} panicked", self.namespace),
                source: io::Error::other("panic"),
            }),
        }
    }

    /// Whether the thread has finished.
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth end (and so the pair), its nft tables and
        // its qdiscs. Errors are ignored: a half-created lab may lack one namespace.
        for ns in [&self.client, &self.server] {
            let _ = quiet("ip", &["netns", "del", ns]);
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Server => "server",
        })
    }
}

/// Whether the lab can run here: `Ok` as root, else the reason.
///
/// # Errors
///
/// [`LabError::NotRoot`].
pub fn check_root() -> Result<(), LabError> {
    let euid = nix::unistd::geteuid().as_raw();
    if euid != 0 {
        return Err(LabError::NotRoot { euid });
    }
    Ok(())
}

/// Makes sure `nft` exists, installing Debian's `nftables` package with `apt-get` when it
/// does not (a fresh CI machine). `ip` and `tc` are expected to be there.
///
/// # Errors
///
/// [`LabError::MissingTool`] when the install fails.
pub fn ensure_tools() -> Result<(), LabError> {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if has_tool("nft") {
        return Ok(());
    }
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let install = |update: bool| -> Result<(), String> {
        if update {
            let st = Command::new("apt-get")
                .args(["update", "-q"])
                .envs(env)
                .stdout(Stdio::null())
                .status()
                .map_err(|e| e.to_string())?;
            if !st.success() {
                return Err(format!("apt-get update: {st}"));
            }
        }
        let st = Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", "nftables"])
            .envs(env)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!("apt-get install nftables: {st}"));
        }
        Ok(())
    };
    if let Err(first) = install(false) {
        install(true).map_err(|second| LabError::MissingTool {
            tool: "nft",
            reason: format!("{first}; after an update: {second}"),
        })?;
    }
    if has_tool("nft") {
        Ok(())
    } else {
        Err(LabError::MissingTool {
            tool: "nft",
            reason: "installed nftables but `nft` is still not on PATH".into(),
        })
    }
}

/// Deletes `phobos-lab-<pid>-*` namespaces whose process is gone (left by a killed run).
/// Namespaces of live processes, and every other namespace, are left alone. Returns how
/// many were deleted.
pub fn sweep_stale() -> usize {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return 0;
    };
    let mut deleted = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = lab_pid(&name) else { continue };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        if quiet("ip", &["netns", "del", &name]) {
            deleted += 1;
        }
    }
    deleted
}

/// The client end's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// The prefix of every namespace a lab creates.
pub const NS_PREFIX: &str = "phobos-lab-";

/// The pid in a lab namespace's name (`phobos-lab-<pid>-<n>-<c|s>`).
fn lab_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NS_PREFIX)?;
    let mut parts = rest.split('-');
    let pid = parts.next()?.parse().ok()?;
    let _n: u64 = parts.next()?.parse().ok()?;
    matches!(parts.next()?, "c" | "s").then_some(pid)?;
    parts.next().is_none().then_some(pid)
}

fn server_ruleset(faults: &NetFaults) -> Result<String, LabError> {
    let mut rules = Vec::new();
    for a in &faults.syn_drop {
        let SocketAddr::V4(a) = a else {
            return Err(LabError::InvalidFault(format!("{a}: the lab is IPv4")));
        };
        rules.push(format!(
            "ip daddr {} tcp dport {} tcp flags & (syn | ack) == syn counter drop",
            a.ip(),
            a.port()
        ));
    }
    for a in &faults.reset {
        let SocketAddr::V4(a) = a else {
            return Err(LabError::InvalidFault(format!("{a}: the lab is IPv4")));
        };
        rules.push(format!(
            "ip daddr {} tcp dport {} counter reject with tcp reset",
            a.ip(),
            a.port()
        ));
    }
    Ok(loss_ruleset("veth1", &rules, faults.loss_percent))
}

/// A whole table: the `rules` first, then random loss; every rule only for packets that
/// arrive on `dev` (so loopback traffic inside a namespace is never touched).
fn loss_ruleset(dev: &str, rules: &[String], loss_percent: u8) -> String {
    let mut s = String::from("add table inet phobos_lab\ndelete table inet phobos_lab\n");
    s.push_str("table inet phobos_lab {\n  chain input {\n");
    s.push_str("    type filter hook input priority 0; policy accept;\n");
    for r in rules {
        s.push_str(&format!("    iifname \"{dev}\" {r}\n"));
    }
    // nft refuses `< 100` (the value is outside 0–99): total loss is a plain drop.
    match loss_percent {
        0 => {}
        100.. => s.push_str(&format!("    iifname \"{dev}\" counter drop\n")),
        n => s.push_str(&format!(
            "    iifname \"{dev}\" numgen random mod 100 < {n} counter drop\n"
        )),
    }
    s.push_str("  }\n}\n");
    s
}

fn has_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(tool).is_file())
}

fn run(cmd: &str, args: &[&str]) -> Result<(), LabError> {
    output(cmd, args).map(drop)
}

fn output(cmd: &str, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Io {
            what: format!("running {cmd}"),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(LabError::Command {
            command: format!("{cmd} {}", args.join(" ")),
            stderr: if stderr.is_empty() {
                out.status.to_string()
            } else {
                stderr
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn quiet(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

static NEXT_LAB: AtomicU64 = AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_namespace_names_parse_back_to_their_pid() {
        assert_eq!(lab_pid("phobos-lab-123-4-c"), Some(123));
        assert_eq!(lab_pid("phobos-lab-123-4-s"), Some(123));
        assert_eq!(lab_pid("phobos-lab-123-4-x"), None);
        assert_eq!(lab_pid("phobos-lab-123-4-c-extra"), None);
        assert_eq!(lab_pid("phobos-lab-probe-c"), None);
        assert_eq!(lab_pid("other-123-4-c"), None);
    }

    #[test]
    fn server_rules_put_address_faults_before_loss() {
        let faults = NetFaults {
            loss_percent: 15,
            syn_drop: vec!["10.77.0.2:4000".parse().unwrap()],
            reset: vec!["10.77.0.3:4000".parse().unwrap()],
            rate_bits: None,
        };
        let r = server_ruleset(&faults).unwrap();
        let drop_at = r.find("10.77.0.2 tcp dport 4000 tcp flags").unwrap();
        let rst_at = r.find("10.77.0.3 tcp dport 4000 counter reject").unwrap();
        let loss_at = r.find("numgen random mod 100 < 15").unwrap();
        assert!(drop_at < loss_at && rst_at < loss_at);
        assert!(r.starts_with("add table inet phobos_lab\ndelete table"));
        assert!(r
            .lines()
            .filter(|l| l.contains("iifname"))
            .all(|l| l.contains("\"veth1\"")));
    }

    #[test]
    fn total_loss_is_a_plain_drop() {
        let r = loss_ruleset("veth0", &[], 100);
        assert!(r.contains("iifname \"veth0\" counter drop") && !r.contains("numgen"));
    }

    #[test]
    fn no_loss_means_no_loss_rule_and_ipv6_faults_are_refused() {
        assert!(!loss_ruleset("veth0", &[], 0).contains("numgen"));
        let v6 = NetFaults {
            syn_drop: vec!["[fd00::1]:1".parse().unwrap()],
            ..Default::default()
        };
        assert!(matches!(
            server_ruleset(&v6),
            Err(LabError::InvalidFault(_))
        ));
    }
}
