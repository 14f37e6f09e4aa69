//! `demo`: an embedded server and a crowd of clients, all on loopback, no setup.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use phobos_plugin_api::{CmdId, Decoded, FrameHead, PacketCodec, Seq};
use phobos_stn::{Client, ClientConfig, LinkStatus, TaskSpec, TlsConfig, TlsConnector};
use phobos_xlog::{Level, Xlog, XlogGuard};
use tokio::task::JoinSet;

use crate::plugins::LoadedPlugins;
use crate::server::{DemoServer, CMD_BROADCAST, CMD_ECHO, CMD_PUSH};
use phobos_host_example::tls::{DemoTls, SERVER_NAME};

/// What the demo runs.
#[derive(Clone, Debug)]
pub(crate) struct DemoOptions {
    /// How many clients.
    pub clients: usize,
    /// Messages each client sends.
    pub messages: usize,
    /// Every n-th message is a broadcast (pushed to every other client).
    pub broadcast_every: usize,
    /// Where the xlog files go.
    pub log_dir: PathBuf,
    /// Whether the long link runs over TLS.
    pub tls: bool,
}

/// The figures the demo prints.
#[derive(Debug, Default)]
pub(crate) struct DemoSummary {
    /// Tasks started.
    pub tasks: usize,
    /// Tasks answered with the expected body.
    pub ok: usize,
    /// Tasks that failed or came back wrong.
    pub failed: usize,
    /// Pushes the clients should have received.
    pub pushes_expected: usize,
    /// Pushes they did receive.
    pub pushes_received: usize,
    /// Sorted task latencies.
    pub latencies: Vec<Duration>,
    /// Wall time of the message phase.
    pub elapsed: Duration,
    /// Request frames the server answered.
    pub served: u64,
    /// Connect attempts of each client (1 each when no link ever dropped).
    pub connects: Vec<u64>,
}

impl DemoSummary {
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[idx.min(self.latencies.len() - 1)]
    }
}

/// Opens the demo's xlog writer, encrypted with the configured cipher if there is one.
pub(crate) fn open_log(plugins: &LoadedPlugins, dir: &Path) -> anyhow::Result<XlogGuard> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating log dir {}", dir.display()))?;
    let mut xlog = Xlog::builder().log_dir(dir).name_prefix("demo");
    if let Some(cipher) = &plugins.cipher {
        xlog = xlog.cipher(cipher.clone());
    }
    xlog.build().context("opening the xlog writer")
}

/// Runs the demo: plugins, codec round trip, server, clients. Logs into `log`.
pub(crate) async fn run(
    plugins: &LoadedPlugins,
    opts: &DemoOptions,
    log: &Xlog,
) -> anyhow::Result<DemoSummary> {
    println!(
        "Phobos demo: {} clients × {} messages over the long link\n",
        opts.clients, opts.messages
    );
    println!("Plugins:");
    print!("{}", plugins.describe());
    println!();

    codec_roundtrip(plugins.codec.as_ref())?;

    let tls = if opts.tls {
        Some(DemoTls::generate().context("making the demo's TLS certificates")?)
    } else {
        None
    };
    let server = DemoServer::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        plugins.codec.clone(),
        tls.as_ref().map(|t| t.server.clone()),
    )
    .await
    .context("starting the demo server")?;
    log.log_message(
        Level::Info,
        "demo",
        format!("server listening on {}", server.addr()).as_bytes(),
    );
    match &tls {
        Some(_) => println!(
            "Server listening on {} over TLS (certificate for {SERVER_NAME}, signed by a CA \
             made for this run; the clients trust only that CA)",
            server.addr()
        ),
        None => println!("Server listening on {} (plain TCP)", server.addr()),
    }

    let mut summary = run_clients(plugins, opts, server.addr(), tls.as_ref(), log).await?;
    summary.served = server.frames_served();
    server.shutdown();

    log.log_message(
        Level::Info,
        "demo",
        format!(
            "done: {} ok, {} failed, {} pushes",
            summary.ok, summary.failed, summary.pushes_received
        )
        .as_bytes(),
    );
    Ok(summary)
}

/// Prints the summary table and the decoded tail of the log. Fails if any message was lost,
/// duplicated or answered wrongly.
pub(crate) fn report(
    plugins: &LoadedPlugins,
    opts: &DemoOptions,
    summary: &DemoSummary,
) -> anyhow::Result<()> {
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| tasks started | {} |", summary.tasks);
    println!("| answered correctly | {} |", summary.ok);
    println!("| failed or wrong | {} |", summary.failed);
    println!(
        "| pushes expected / received | {} / {} |",
        summary.pushes_expected, summary.pushes_received
    );
    println!("| frames the server answered | {} |", summary.served);
    println!(
        "| task latency p50 / p99 | {:.2?} / {:.2?} |",
        summary.percentile(0.50),
        summary.percentile(0.99)
    );
    let secs = summary.elapsed.as_secs_f64().max(f64::EPSILON);
    println!(
        "| throughput | {:.0} tasks/s |",
        summary.tasks as f64 / secs
    );
    let (min, max) = (
        summary.connects.iter().min().copied().unwrap_or(0),
        summary.connects.iter().max().copied().unwrap_or(0),
    );
    println!("| connects per client (min / max) | {min} / {max} |");
    println!(
        "| TLS | {} |",
        if opts.tls {
            "on (rustls, certificate verified against the run's CA)"
        } else {
            "off"
        }
    );
    println!("| codec | {} |", plugins.codec.name());
    println!(
        "| log cipher | {} |",
        plugins
            .cipher
            .as_ref()
            .map_or("none (plain logs)".to_owned(), |c| c.name().to_owned())
    );

    print_log_tail(&opts.log_dir, plugins)?;

    if summary.failed > 0
        || summary.ok != summary.tasks
        || summary.pushes_received != summary.pushes_expected
    {
        bail!(
            "{} of {} tasks failed, {} of {} pushes arrived",
            summary.failed,
            summary.tasks,
            summary.pushes_received,
            summary.pushes_expected
        );
    }
    println!("\nEvery message was delivered exactly once.");
    Ok(())
}

/// Encodes a frame with the configured codec, decodes it back and shows the bytes.
pub(crate) fn codec_roundtrip(codec: &dyn PacketCodec) -> anyhow::Result<()> {
    let head = FrameHead::new(CMD_ECHO, Seq(1));
    let body = b"hello, phobos";
    let mut wire = Vec::new();
    codec
        .encode(head, body, &[], &mut wire)
        .context("encoding a frame")?;
    let frame = match codec.decode(&wire).context("decoding the frame back")? {
        Decoded::Frame(f) => f,
        Decoded::Incomplete { needed, .. } => {
            bail!(
                "codec {} wants {needed} bytes for a frame it encoded in {}",
                codec.name(),
                wire.len()
            )
        }
    };
    if frame.head != head || &wire[frame.body.clone()] != body || frame.len != wire.len() {
        bail!("codec {} did not round-trip a frame", codec.name());
    }
    let header_len = wire.len() - body.len();
    println!(
        "Codec round trip: {} bytes on the wire, header {}",
        wire.len(),
        wire[..header_len]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    Ok(())
}

async fn run_clients(
    plugins: &LoadedPlugins,
    opts: &DemoOptions,
    server: SocketAddr,
    tls: Option<&DemoTls>,
    log: &Xlog,
) -> anyhow::Result<DemoSummary> {
    let mut clients = Vec::with_capacity(opts.clients);
    for _ in 0..opts.clients {
        let mut config = ClientConfig::builder(plugins.codec.clone())
            .link_addrs("default-longlink", [server.into()])
            .auth(plugins.auth.clone())
            .heartbeat(plugins.heartbeat.clone());
        if let Some(tls) = tls {
            let tls = TlsConfig::builder(SERVER_NAME)
                .ca_der(tls.ca_der.clone())
                .build()
                .context("the clients' TLS config")?;
            config = config.connector(Arc::new(TlsConnector::new(tls)));
        }
        let config = config.build().context("building the client config")?;
        let client = Client::start(config).context("starting a client")?;
        client.set_foreground(true);
        clients.push(client);
    }
    // Connect everyone first, so every broadcast reaches every other client.
    for client in &clients {
        let mut events = client.link_events();
        client.make_sure_connected("default-longlink");
        let connected = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if matches!(
                    client.link_status("default-longlink"),
                    Some(LinkStatus::Connected(_))
                ) {
                    return true;
                }
                if events.recv().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        if !matches!(connected, Ok(true)) {
            bail!("a client could not connect to {server}");
        }
    }
    log.log_message(
        Level::Info,
        "demo",
        format!("{} clients connected", clients.len()).as_bytes(),
    );

    let mut push_counters = JoinSet::new();
    let broadcasts_per_client = (1..=opts.messages)
        .filter(|j| j % opts.broadcast_every == 0)
        .count();
    let expected_each = broadcasts_per_client * (opts.clients - 1);
    for client in &clients {
        let mut pushes = client.subscribe_pushes();
        push_counters.spawn(async move {
            let mut n = 0usize;
            while n < expected_each {
                match tokio::time::timeout(Duration::from_secs(5), pushes.recv()).await {
                    Ok(Ok(p)) if p.cmd_id == CMD_PUSH => n += 1,
                    Ok(Ok(_)) | Ok(Err(phobos_stn::StreamError::Lagged(_))) => {}
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            n
        });
    }

    let started = Instant::now();
    let mut senders = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let messages = opts.messages;
        let every = opts.broadcast_every;
        let log = log.clone();
        senders.spawn(async move {
            let mut lat = Vec::with_capacity(messages);
            let (mut ok, mut failed) = (0usize, 0usize);
            for j in 1..=messages {
                let body = format!("client {i} message {j}");
                let cmd: CmdId = if j % every == 0 {
                    CMD_BROADCAST
                } else {
                    CMD_ECHO
                };
                let t0 = Instant::now();
                let result = client
                    .start_task(TaskSpec::new(cmd, body.clone().into_bytes()))
                    .await;
                lat.push(t0.elapsed());
                let expect: &[u8] = if cmd == CMD_BROADCAST {
                    b"ok"
                } else {
                    body.as_bytes()
                };
                match result {
                    Ok(resp) if &resp.body[..] == expect => ok += 1,
                    Ok(_) => {
                        failed += 1;
                        log.log_message(
                            Level::Error,
                            "demo",
                            format!("client {i}: wrong answer to {j}").as_bytes(),
                        );
                    }
                    Err(e) => {
                        failed += 1;
                        log.log_message(
                            Level::Error,
                            "demo",
                            format!("client {i}: task {j} failed: {e}").as_bytes(),
                        );
                    }
                }
            }
            (lat, ok, failed)
        });
    }
    let mut summary = DemoSummary {
        tasks: opts.clients * opts.messages,
        ..Default::default()
    };
    while let Some(joined) = senders.join_next().await {
        let (lat, ok, failed) = joined.context("a client task panicked")?;
        summary.latencies.extend(lat);
        summary.ok += ok;
        summary.failed += failed;
    }
    summary.elapsed = started.elapsed();
    summary.latencies.sort_unstable();
    summary.pushes_expected = expected_each * opts.clients;
    while let Some(joined) = push_counters.join_next().await {
        summary.pushes_received += joined.context("a push counter panicked")?;
    }
    for client in &clients {
        if let Ok(stats) = client.stats().await {
            summary.connects.push(stats.connect_attempts);
        }
        client.shutdown().await;
    }
    Ok(summary)
}

/// Decodes the newest log file of the run and prints its last lines.
fn print_log_tail(dir: &Path, plugins: &LoadedPlugins) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xlog"))
        .collect();
    files.sort();
    let Some(file) = files.last() else {
        bail!("the demo wrote no .xlog file into {}", dir.display());
    };
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut decoder = phobos_xlog_decode::Decoder::builder();
    if let Some(cipher) = &plugins.cipher {
        decoder = decoder.cipher(cipher.clone());
    }
    let text = decoder.build().decode(&bytes);
    let text = String::from_utf8_lossy(&text);
    println!(
        "\nxlog file: {} ({} bytes, encrypted: {})",
        file.display(),
        bytes.len(),
        plugins.cipher.is_some()
    );
    println!("Its last lines, decoded with phobos-xlog-decode (the whole file: `cargo run -p phobos-xlog-decode -- decode --key PRIVATE_KEY {}`):", file.display());
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines[lines.len().saturating_sub(4)..] {
        println!("  {line}");
    }
    Ok(())
}

/// Where the demo logs by default: a fresh folder under the system temp dir.
pub(crate) fn default_log_dir() -> PathBuf {
    std::env::temp_dir().join(format!("phobos-demo-{}", std::process::id()))
}
