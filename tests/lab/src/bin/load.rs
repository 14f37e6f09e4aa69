//! One process holding 1,000 long links, pushing 100,000 tasks through the host-example IM
//! server (`phobos_host_example::server`), which runs in a child process so the figures are
//! the client's alone.
//!
//! ```text
//! cargo run --release -p phobos-lab --bin load -- [--links N] [--tasks N] [--in-flight K]
//! ```
//!
//! Each link is one `phobos_stn::Client` logged in as its own user (token auth); every task
//! is a direct message (`CMD_SEND`) to the next user, so the server also stores and pushes
//! each message. Each client keeps `K` tasks in flight (default 1). Reported: that every task
//! got exactly one end, how many succeeded, throughput, p50/p99/max latency, the time to get
//! every link connected and identified, client RSS (now and peak) and CPU time (getrusage).
//! Everything runs on loopback; RLIMIT_NOFILE is raised to its hard limit in both processes.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use phobos_auth_basic::{TokenAuth, TokenAuthConfig};
use phobos_codec_mars::MarsCodec;
use phobos_host_example::proto::{self, Reply, SendAck, SendRequest, Target};
use phobos_host_example::server::{Server, ServerConfig};
use phobos_host_example::tokens::TokenIssuer;
use phobos_plugin_api::IpPort;
use phobos_stn::{Client, ClientConfig, LinkStatus, TaskSpec};

const SECRET: &str = "phobos-lab-load";
const LINK: &str = "default-longlink";

fn main() -> anyhow::Result<()> {
    let mut links = 1_000usize;
    let mut tasks = 100_000usize;
    let mut in_flight = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--serve" => return serve(),
            "--links" => links = value()?.parse()?,
            "--tasks" => tasks = value()?.parse()?,
            "--in-flight" => in_flight = value()?.parse()?,
            "-h" | "--help" => {
                println!("load [--links N] [--tasks N] [--in-flight K]");
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if links == 0 || in_flight == 0 {
        bail!("--links and --in-flight must be at least 1");
    }
    let nofile = raise_nofile()?;

    // The server: this binary in --serve mode, answering on loopback.
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the server process")?;
    let mut first = String::new();
    BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut first)?;
    let port: u16 = first
        .trim()
        .strip_prefix("port ")
        .context("server did not report its port")?
        .parse()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(drive(port, links, tasks, in_flight));
    drop(rt);
    // Closing stdin stops the server, which prints its counters on stderr.
    drop(child.stdin.take());
    let _ = child.wait();
    let r = report?;
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let cpu = tv(usage.user_time()) + tv(usage.system_time());
    let (rss_now, rss_peak) = rss_kib();
    println!("# Load: {links} long links, {tasks} tasks, {in_flight} in flight per link");
    println!("machine: {}", phobos_lab::matrix::machine_description());
    println!("RLIMIT_NOFILE soft limit: {nofile}");
    println!("server: phobos_host_example::server (child process, plain TCP on loopback)");
    println!(
        "links connected and identified: {}/{} in {:.2} s",
        r.connected,
        links,
        r.connect_time.as_secs_f64()
    );
    println!(
        "task ends: {} for {} tasks, distinct ids: {} (exactly one end each: {})",
        r.ends,
        tasks,
        r.distinct_ids,
        r.ends == tasks && r.distinct_ids == tasks
    );
    println!(
        "succeeded: {}, failed: {} (first errors: {:?})",
        r.ok, r.failed, r.errors
    );
    println!(
        "throughput: {:.0} tasks/s over {:.2} s",
        tasks as f64 / r.run_time.as_secs_f64(),
        r.run_time.as_secs_f64()
    );
    println!(
        "latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(r.p50),
        ms(r.p99),
        ms(r.max)
    );
    println!(
        "client RSS: {:.1} MiB now, {:.1} MiB peak",
        rss_now as f64 / 1024.0,
        rss_peak as f64 / 1024.0
    );
    println!(
        "client CPU (getrusage): user {:.2} s, system {:.2} s, total {:.2} s ({:.1} µs per task)",
        tv(usage.user_time()),
        tv(usage.system_time()),
        cpu,
        cpu * 1e6 / tasks as f64
    );
    if r.ends != tasks || r.distinct_ids != tasks {
        bail!("some task did not get exactly one end");
    }
    Ok(())
}

struct Report {
    connected: usize,
    connect_time: Duration,
    ends: usize,
    distinct_ids: usize,
    ok: usize,
    failed: usize,
    errors: Vec<String>,
    run_time: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn drive(port: u16, links: usize, tasks: usize, in_flight: usize) -> anyhow::Result<Report> {
    let addr = IpPort::from(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let issuer = TokenIssuer::new(SECRET);
    let codec = Arc::new(MarsCodec::default());
    let mut clients = Vec::with_capacity(links);
    let t0 = Instant::now();
    let mut waits = Vec::with_capacity(links);
    for i in 0..links {
        let token = issuer
            .issue(&user(i))
            .map_err(|e| anyhow::anyhow!("token: {e}"))?;
        let auth = TokenAuth::new(TokenAuthConfig {
            token: Some(token),
            ..Default::default()
        })?;
        let config = ClientConfig::builder(codec.clone())
            .link_addrs(LINK, [addr])
            .auth(Arc::new(auth))
            .core(|c| c.seed(i as u64))
            .build()?;
        let client = Client::start(config)?;
        let mut events = client.link_events();
        client.make_sure_connected(LINK);
        waits.push(tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(60),
                events.wait_for(LINK, |e| matches!(e.status, LinkStatus::Connected(_))),
            )
            .await
            .is_ok_and(|r| r.is_ok())
        }));
        clients.push(client);
    }
    let mut connected = 0;
    for w in waits {
        connected += usize::from(w.await.unwrap_or(false));
    }
    let connect_time = t0.elapsed();

    // Tasks are dealt round robin: link i sends tasks i, i + links, i + 2 links…
    let start = Instant::now();
    let mut workers = Vec::with_capacity(links * in_flight);
    let clients = Arc::new(clients);
    for i in 0..links {
        for lane in 0..in_flight {
            let clients = clients.clone();
            workers.push(tokio::spawn(async move {
                let mut out = Vec::new();
                let mut n = i + lane * links;
                while n < tasks {
                    let req = SendRequest {
                        client_msg_id: format!("m{n}"),
                        to: Target::User(user((i + 1) % clients.len())),
                        text: format!("load message {n}"),
                    };
                    let body = serde_json::to_vec(&req).unwrap_or_default();
                    let began = Instant::now();
                    let handle = clients[i].start_task(TaskSpec::new(proto::CMD_SEND, body));
                    let end = handle.end().await;
                    let took = began.elapsed();
                    out.push(match end {
                        None => (None, took, Err("driver stopped".to_string())),
                        Some(end) => {
                            let verdict = match end.outcome {
                                Ok(resp) => {
                                    match serde_json::from_slice::<Reply<SendAck>>(&resp.body) {
                                        Ok(Reply::Ok(_)) => Ok(()),
                                        Ok(Reply::Error(e)) => Err(format!("server: {e}")),
                                        Err(e) => Err(format!("bad reply: {e}")),
                                    }
                                }
                                Err(e) => Err(e.to_string()),
                            };
                            (Some(end.id), took, verdict)
                        }
                    });
                    n += links * in_flight;
                }
                out
            }));
        }
    }
    let mut latencies = Vec::with_capacity(tasks);
    let mut ids = HashSet::with_capacity(tasks);
    let (mut ends, mut ok, mut failed) = (0, 0, 0);
    let mut errors = Vec::new();
    for (w, worker) in workers.into_iter().enumerate() {
        for (id, took, verdict) in worker.await? {
            ends += 1;
            if let Some(id) = id {
                // Ids are per client: key them by the link too.
                ids.insert((w / in_flight, id));
            }
            latencies.push(took);
            match verdict {
                Ok(()) => ok += 1,
                Err(e) => {
                    failed += 1;
                    if errors.len() < 5 {
                        errors.push(e);
                    }
                }
            }
        }
    }
    let run_time = start.elapsed();
    for c in clients.iter() {
        c.shutdown().await;
    }
    latencies.sort();
    let q = |q: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    };
    Ok(Report {
        connected,
        connect_time,
        ends,
        distinct_ids: ids.len(),
        ok,
        failed,
        errors,
        run_time,
        p50: q(0.5),
        p99: q(0.99),
        max: latencies.last().copied().unwrap_or_default(),
    })
}

/// `--serve`: runs the host-example server on loopback, prints `port N`, stops when stdin
/// closes.
fn serve() -> anyhow::Result<()> {
    raise_nofile()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let codec = Arc::new(MarsCodec::default());
        let server = Server::start(ServerConfig::new(codec, TokenIssuer::new(SECRET))).await?;
        println!("port {}", server.long_link_addr().port());
        std::io::stdout().flush()?;
        // Wait for the parent to close our stdin.
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await?;
        eprintln!("server: {:?}", server.stats());
        server.shutdown().await;
        anyhow::Ok(())
    })
}

fn user(i: usize) -> String {
    format!("u{i}")
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
fn raise_nofile() -> anyhow::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?.0)
}

/// (VmRSS, VmHWM) of this process in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn tv(t: nix::sys::time::TimeVal) -> f64 {
    t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
