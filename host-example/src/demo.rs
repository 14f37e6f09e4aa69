//! `demo`: the server in-process on loopback and a crowd of chat clients, no setup.
//!
//! N clients log in (each with its own token), join two of the rooms each and send M
//! messages, most to a room and every `direct_every`-th to another client directly. Midway
//! the server restarts once: both listeners and every connection drop, and the clients show
//! their reconnects and retries. The in-memory state (history, membership, the dedupe window)
//! survives the restart, as a database would. At the end every client must have received
//! every message meant for it exactly once; [`DemoReport::is_clean`] says whether it did.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use phobos_plugin_api::{CmdId, Decoded, FrameHead, PacketCodec, Seq};
use phobos_stn::LinkStatus;
use phobos_xlog::{Level, Xlog};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::chat::{ChatClient, ChatEvent, ChatOptions, TrustedServer, Via};
use crate::config::HostConfig;
use crate::plugins::LoadedPlugins;
use crate::proto::{self, Target};
use crate::server::{Server, ServerConfig, ServerHandle};
use crate::tls::{DemoTls, SERVER_NAME};
use crate::tokens::TokenIssuer;

/// What the demo runs (from `[demo]`, overridden on the command line).
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// How many clients.
    pub clients: usize,
    /// Messages each client sends.
    pub messages: usize,
    /// How many rooms.
    pub rooms: usize,
    /// Every n-th message is a direct message (0: none).
    pub direct_every: usize,
    /// Restart the server midway.
    pub restart: bool,
    /// How long the server stays down.
    pub restart_downtime: Duration,
    /// TLS on the long link.
    pub tls: bool,
    /// Show a progress bar (only drawn on a terminal).
    pub progress: bool,
}

impl DemoOptions {
    /// The `[demo]` table's values.
    pub fn from_config(config: &HostConfig) -> Self {
        let d = &config.demo;
        DemoOptions {
            clients: d.clients,
            messages: d.messages,
            rooms: d.rooms,
            direct_every: d.direct_every,
            restart: d.restart,
            restart_downtime: Duration::from_millis(d.restart_downtime_ms),
            tls: d.tls,
            progress: true,
        }
    }
}

/// The figures the demo measured.
#[derive(Clone, Debug, Default)]
pub struct DemoReport {
    /// Messages the clients sent (acknowledged by the server).
    pub sent: usize,
    /// Sends that failed for good.
    pub send_failures: usize,
    /// Deliveries owed: one per message per other member of its conversation.
    pub expected: usize,
    /// Distinct deliveries that arrived.
    pub delivered: usize,
    /// Of those, how many came as pushes and how many from a history catch-up.
    pub via_push: usize,
    /// See [`via_push`](Self::via_push).
    pub via_history: usize,
    /// Deliveries that arrived more than once.
    pub duplicates: usize,
    /// Pushes a client already had from a catch-up and dropped.
    pub duplicate_pushes_dropped: usize,
    /// Sends the server recognised as retries and did not store again.
    pub retried_sends_deduped: u64,
    /// Send replies the server dropped before the restart (stored, never answered).
    pub replies_lost: u64,
    /// Sorted delivery latencies (send start to arrival at the recipient).
    pub latencies: Vec<Duration>,
    /// Reconnects per client (connections after the first).
    pub reconnects: Vec<usize>,
    /// The link-down reasons the clients reported, with counts.
    pub down_reasons: Vec<(String, usize)>,
    /// After how many acknowledged sends the server restarted (`None`: no restart).
    pub restarted_at: Option<usize>,
    /// Wall time of the message phase.
    pub elapsed: Duration,
    /// The server's long-link address.
    pub server_addr: String,
    /// Short-link requests of the final cross-check (conversation lists, history pages).
    pub short_requests: usize,
    /// Clients whose history over the short link disagreed with what they were delivered.
    pub history_mismatches: usize,
}

impl DemoReport {
    /// True when every message was delivered exactly once and every send succeeded.
    pub fn is_clean(&self) -> bool {
        self.send_failures == 0
            && self.delivered == self.expected
            && self.duplicates == 0
            && self.history_mismatches == 0
    }

    /// The `p`-th latency percentile (0.0 to 1.0).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[idx.min(self.latencies.len() - 1)]
    }
}

/// Encodes a frame with `codec`, decodes it back and returns its header bytes as hex.
///
/// # Errors
///
/// The codec cannot encode, or does not give the frame back.
pub fn codec_roundtrip(codec: &dyn PacketCodec) -> anyhow::Result<(usize, String)> {
    let head = FrameHead::new(CmdId(1), Seq(1));
    let body = b"hello, phobos";
    let mut wire = Vec::new();
    codec
        .encode(head, body, &[], &mut wire)
        .context("encoding a frame")?;
    let frame = match codec.decode(&wire).context("decoding the frame back")? {
        Decoded::Frame(f) => f,
        Decoded::Incomplete { needed, .. } => bail!(
            "codec {} wants {needed} bytes for a frame it encoded in {}",
            codec.name(),
            wire.len()
        ),
    };
    if frame.head != head
        || wire.get(frame.body.clone()) != Some(&body[..])
        || frame.len != wire.len()
    {
        bail!("codec {} did not round-trip a frame", codec.name());
    }
    let header_len = wire.len() - body.len();
    Ok((wire.len(), hex::encode(&wire[..header_len])))
}

/// Runs the demo. Progress goes to stderr; link status changes of the first client are
/// printed as they happen.
///
/// # Errors
///
/// The server or a client cannot start. Lost or duplicated messages are not errors here:
/// they are in the report.
pub async fn run(
    config: &HostConfig,
    plugins: &LoadedPlugins,
    opts: &DemoOptions,
    log: &Xlog,
) -> anyhow::Result<DemoReport> {
    let tokens = TokenIssuer::new(&config.server.auth_secret);
    let tls = if opts.tls {
        Some(DemoTls::generate().context("making the demo's TLS certificates")?)
    } else {
        None
    };
    let mut server_config = ServerConfig::new(plugins.codec.clone(), tokens.clone());
    server_config.tls = tls.as_ref().map(|t| t.server.clone());
    server_config.http_tls = server_config.tls.clone();
    server_config.identify_cmd_id = plugins.identify_cmd_id();
    server_config.history_limit = config.server.history_limit;
    server_config.dedupe_window = config.server.dedupe_window;
    let server = Server::start(server_config)
        .await
        .context("starting the demo server")?;
    match &tls {
        Some(_) => println!(
            "Server: long link {} over TLS (certificate for {SERVER_NAME}, signed by a CA made \
             for this run; the clients trust only that CA), short link https://{}",
            server.long_link_addr(),
            server.http_addr()
        ),
        None => println!(
            "Server: long link {} (plain TCP), short link http://{}",
            server.long_link_addr(),
            server.http_addr()
        ),
    }
    log.log_message(
        Level::Info,
        "demo",
        format!(
            "server on {} / {}",
            server.long_link_addr(),
            server.http_addr()
        )
        .as_bytes(),
    );

    let result = run_clients(config, plugins, opts, &server, &tokens, tls.as_ref(), log).await;
    let mut report = result?;
    let stats = server.stats();
    report.retried_sends_deduped = stats.duplicate_sends;
    report.replies_lost = stats.replies_lost;
    report.server_addr = server.long_link_addr().to_string();
    server.shutdown().await;
    log.log_message(
        Level::Info,
        "demo",
        format!(
            "done: {} sent, {} of {} delivered, {} duplicates",
            report.sent, report.delivered, report.expected, report.duplicates
        )
        .as_bytes(),
    );
    Ok(report)
}

/// Who sent what to whom, and what arrived.
#[derive(Debug, Default)]
struct Tally {
    /// (sender, client message id) → when the send started and who should get it.
    sent: HashMap<(usize, String), (Instant, Vec<usize>)>,
    /// (recipient, sender user, client message id) → arrivals.
    arrivals: HashMap<(usize, String, String), usize>,
    latencies: Vec<Duration>,
    via_push: usize,
    via_history: usize,
    duplicate_pushes: usize,
    reasons: HashMap<String, usize>,
}

#[allow(clippy::too_many_arguments)]
async fn run_clients(
    config: &HostConfig,
    plugins: &LoadedPlugins,
    opts: &DemoOptions,
    server: &ServerHandle,
    tokens: &TokenIssuer,
    tls: Option<&DemoTls>,
    log: &Xlog,
) -> anyhow::Result<DemoReport> {
    let n = opts.clients;
    let users: Vec<String> = (0..n).map(|i| format!("user{:02}", i + 1)).collect();
    let rooms: Vec<String> = (0..opts.rooms).map(|r| format!("room{}", r + 1)).collect();
    // Each client is in two rooms (one when there is only one room).
    let rooms_of = |i: usize| -> Vec<usize> {
        let mut v = vec![i % opts.rooms];
        if opts.rooms > 1 {
            v.push((i + 1) % opts.rooms);
        }
        v
    };
    let members: Vec<Vec<usize>> = (0..opts.rooms)
        .map(|r| (0..n).filter(|&i| rooms_of(i).contains(&r)).collect())
        .collect();

    let tally = Arc::new(Mutex::new(Tally::default()));
    let reconnects: Arc<Vec<AtomicUsize>> = Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect());
    let mut clients = Vec::with_capacity(n);
    let mut receivers = JoinSet::new();
    let total_sends = n * opts.messages;
    let bar = if opts.progress && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total_sends as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} sent, {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let delivered_count = Arc::new(AtomicUsize::new(0));
    let trusted = tls.map(|t| TrustedServer {
        ca_der: t.ca_der.clone(),
        server_name: SERVER_NAME.to_owned(),
    });

    for (i, user) in users.iter().enumerate() {
        let (client, mut events) = ChatClient::start(
            ChatOptions {
                user: user.clone(),
                token: tokens.issue(user).context("issuing a token")?,
                long_link: server.long_link_addr(),
                http: server.http_addr(),
                tls: trusted.clone(),
                http_tls: trusted.clone(),
                retry_count: config.client.retry_count,
                send_timeout: Duration::from_millis(config.client.send_timeout_ms),
            },
            plugins,
        )
        .with_context(|| format!("starting client {user}"))?;
        clients.push(client);
        let tally = tally.clone();
        let reconnects = reconnects.clone();
        let bar = bar.clone();
        let user = user.clone();
        let delivered_count = delivered_count.clone();
        let log = log.clone();
        receivers.spawn(async move {
            let mut connected_once = false;
            while let Some(event) = events.recv().await {
                match event {
                    ChatEvent::Message { message, via } => {
                        if message.from == user {
                            // Our own message, echoed in its place in the conversation.
                            continue;
                        }
                        let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                        let sender = message
                            .from
                            .strip_prefix("user")
                            .and_then(|s| s.parse::<usize>().ok())
                            .map(|k| k - 1);
                        if let Some(at) = sender
                            .and_then(|s| t.sent.get(&(s, message.client_msg_id.clone())))
                            .map(|(at, _)| *at)
                        {
                            t.latencies.push(at.elapsed());
                        }
                        match via {
                            Via::Push => t.via_push += 1,
                            Via::History => t.via_history += 1,
                        }
                        *t.arrivals
                            .entry((i, message.from, message.client_msg_id))
                            .or_insert(0) += 1;
                        delivered_count.fetch_add(1, Ordering::Relaxed);
                    }
                    ChatEvent::DuplicatePush { .. } => {
                        tally
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .duplicate_pushes += 1;
                    }
                    ChatEvent::Link { status, reason } => {
                        let line = match (&status, &reason) {
                            (LinkStatus::Connected(addr), _) => {
                                if connected_once {
                                    reconnects[i].fetch_add(1, Ordering::Relaxed);
                                }
                                connected_once = true;
                                format!("{user}: connected to {addr}")
                            }
                            (LinkStatus::Connecting, _) => format!("{user}: connecting"),
                            (_, Some(reason)) => {
                                *tally
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .reasons
                                    .entry(reason.to_string())
                                    .or_insert(0) += 1;
                                format!("{user}: link down ({reason}); reconnecting")
                            }
                            (other, None) => format!("{user}: link down ({other:?}); reconnecting"),
                        };
                        log.log_message(Level::Info, "demo", line.as_bytes());
                        if i == 0 {
                            say(&bar, format!("  [link] {line}"));
                        }
                    }
                    ChatEvent::CatchUpFailed {
                        conversation,
                        error,
                    } => {
                        log.log_message(
                            Level::Warn,
                            "demo",
                            format!("{user}: catching up {conversation} failed: {error}")
                                .as_bytes(),
                        );
                    }
                    _ => {}
                }
            }
        });
    }

    // Everyone joins their rooms before anyone sends, so membership is known up front.
    for (i, client) in clients.iter().enumerate() {
        for r in rooms_of(i) {
            client
                .join(&rooms[r])
                .await
                .with_context(|| format!("{} joining {}", users[i], rooms[r]))?;
        }
    }
    log.log_message(
        Level::Info,
        "demo",
        format!("{n} clients logged in and joined their rooms").as_bytes(),
    );

    let started = Instant::now();
    let acked = Arc::new(AtomicUsize::new(0));
    let halfway = Arc::new(Notify::new());
    let mut senders = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let (tally, acked, halfway, bar, log) = (
            tally.clone(),
            acked.clone(),
            halfway.clone(),
            bar.clone(),
            log.clone(),
        );
        let my_rooms = rooms_of(i);
        let (messages, direct_every) = (opts.messages, opts.direct_every);
        let room_names = rooms.clone();
        let members = members.clone();
        senders.spawn(async move {
            let mut failures = 0usize;
            for j in 0..messages {
                let (to, recipients) = if direct_every > 0 && j % direct_every == direct_every - 1 {
                    let peer = (i + 1 + j % (n - 1)) % n;
                    let peer = if peer == i { (i + 1) % n } else { peer };
                    (Target::User(format!("user{:02}", peer + 1)), vec![peer])
                } else {
                    let r = my_rooms[j % my_rooms.len()];
                    let others = members[r].iter().copied().filter(|&m| m != i).collect();
                    (Target::Room(room_names[r].clone()), others)
                };
                let id = client.next_client_msg_id();
                tally
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .sent
                    .insert((i, id.clone()), (Instant::now(), recipients));
                let text = format!("message {j} from {}", client.user());
                if let Err(e) = client.send_with_id(id.clone(), to, text).await {
                    failures += 1;
                    tally
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .sent
                        .remove(&(i, id));
                    log.log_message(
                        Level::Error,
                        "demo",
                        format!("{} send {j} failed: {e}", client.user()).as_bytes(),
                    );
                }
                bar.inc(1);
                if acked.fetch_add(1, Ordering::Relaxed) + 1 == total_sends / 2 {
                    halfway.notify_one();
                }
            }
            failures
        });
    }

    let mut restarted_at = None;
    if opts.restart {
        halfway.notified().await;
        // Lose the replies of a few sends first, as a crash between storing a message and
        // answering would: Phobos retries those sends after the reconnect and the server's
        // dedupe window must answer them without storing them twice.
        let lose = (n / 4).max(1) as u64;
        server.lose_next_send_replies(lose);
        let waiting_since = Instant::now();
        while server.stats().replies_lost < lose && waiting_since.elapsed() < LOSE_WAIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let lost = server.stats().replies_lost;
        server.lose_next_send_replies(0);
        let at = acked.load(Ordering::Relaxed);
        say(
            &bar,
            format!(
            "  [server] restarting after {at} of {total_sends} sends, {lost} of them stored but \
             unanswered: listeners and connections drop for {:?}; the in-memory state stays",
            opts.restart_downtime
        ),
        );
        log.log_message(Level::Info, "demo", b"restarting the server");
        server
            .restart_after(opts.restart_downtime)
            .await
            .context("restarting the server")?;
        say(
            &bar,
            "  [server] listening again on the same addresses".to_owned(),
        );
        restarted_at = Some(at);
    }

    let mut send_failures = 0;
    while let Some(joined) = senders.join_next().await {
        send_failures += joined.context("a sender panicked")?;
    }
    let expected: usize = tally
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .sent
        .values()
        .map(|(_, r)| r.len())
        .sum();
    bar.set_message("waiting for the last deliveries");
    // Wait for the deliveries; a quiet period of `SETTLE` without progress ends the wait.
    let mut last = delivered_count.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while delivered_count.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = delivered_count.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > SETTLE {
            break;
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();

    // Cross-check over the short link: each client's conversation list and the history of
    // each conversation must hold exactly the messages it was delivered (plus its own).
    let mut short_requests = 0usize;
    let mut history_mismatches = 0usize;
    for (i, client) in clients.iter().enumerate() {
        let delivered_to_i = {
            let t = tally.lock().unwrap_or_else(|e| e.into_inner());
            t.arrivals.keys().filter(|(r, _, _)| *r == i).count()
        };
        let convs = client
            .conversations()
            .await
            .with_context(|| format!("{}: conversation list over the short link", users[i]))?;
        short_requests += 1;
        let mut from_others = 0usize;
        for conv in convs {
            let mut after = 0;
            loop {
                let page = client
                    .history(&conv.id, after, proto::MAX_HISTORY_PAGE)
                    .await
                    .with_context(|| format!("{}: history of {}", users[i], conv.id))?;
                short_requests += 1;
                from_others += page.messages.iter().filter(|m| m.from != users[i]).count();
                match page.messages.last() {
                    Some(last) if page.more => after = last.seq,
                    _ => break,
                }
            }
        }
        if from_others != delivered_to_i {
            history_mismatches += 1;
            log.log_message(
                Level::Error,
                "demo",
                format!(
                    "{}: history holds {from_others} messages from others, {delivered_to_i} \
                     were delivered",
                    users[i]
                )
                .as_bytes(),
            );
        }
    }

    let mut reconnect_counts = Vec::with_capacity(n);
    for (i, client) in clients.iter().enumerate() {
        reconnect_counts.push(reconnects[i].load(Ordering::Relaxed));
        client.shutdown().await;
    }
    drop(clients);
    while receivers.join_next().await.is_some() {}

    let t = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    let mut delivered = 0;
    let mut duplicates = 0;
    for ((sender, id), (_, recipients)) in &t.sent {
        for r in recipients {
            let key = (*r, users[*sender].clone(), id.clone());
            match t.arrivals.get(&key).copied().unwrap_or(0) {
                0 => {}
                1 => delivered += 1,
                k => {
                    delivered += 1;
                    duplicates += k - 1;
                }
            }
        }
    }
    let mut latencies = t.latencies;
    latencies.sort_unstable();
    let mut down_reasons: Vec<(String, usize)> = t.reasons.into_iter().collect();
    down_reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(DemoReport {
        sent: t.sent.len(),
        send_failures,
        expected,
        delivered,
        via_push: t.via_push,
        via_history: t.via_history,
        duplicates,
        duplicate_pushes_dropped: t.duplicate_pushes,
        retried_sends_deduped: 0,
        replies_lost: 0,
        latencies,
        reconnects: reconnect_counts,
        down_reasons,
        restarted_at,
        elapsed,
        server_addr: String::new(),
        short_requests,
        history_mismatches,
    })
}

/// Prints the summary table.
pub fn print_summary(report: &DemoReport, opts: &DemoOptions, plugins: &LoadedPlugins) {
    let (min, max) = (
        report.reconnects.iter().min().copied().unwrap_or(0),
        report.reconnects.iter().max().copied().unwrap_or(0),
    );
    let total_reconnects: usize = report.reconnects.iter().sum();
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| clients × messages | {} × {} ({} rooms, every {} a direct message) |",
        opts.clients,
        opts.messages,
        opts.rooms,
        if opts.direct_every == 0 {
            "none is".to_owned()
        } else {
            format!("{}th is", opts.direct_every)
        }
    );
    println!("| messages sent | {} |", report.sent);
    println!("| sends failed | {} |", report.send_failures);
    println!(
        "| sends answered only after a retry (reply lost in the restart) | {} |",
        report.replies_lost
    );
    println!(
        "| retried sends the server deduped | {} |",
        report.retried_sends_deduped
    );
    println!("| deliveries expected | {} |", report.expected);
    println!(
        "| delivered | {} ({} by push, {} from history after a gap or reconnect) |",
        report.delivered, report.via_push, report.via_history
    );
    println!(
        "| lost | {} |",
        report.expected - report.delivered.min(report.expected)
    );
    println!("| duplicates | {} |", report.duplicates);
    println!(
        "| pushes already had, dropped by sequence | {} |",
        report.duplicate_pushes_dropped
    );
    println!(
        "| delivery latency p50 / p99 | {:.2?} / {:.2?} |",
        report.percentile(0.50),
        report.percentile(0.99)
    );
    match report.restarted_at {
        Some(at) => println!(
            "| server restart | once, after {at} sends, down {:?}; listeners and connections dropped, in-memory state kept |",
            opts.restart_downtime
        ),
        None => println!("| server restart | none |"),
    }
    println!("| reconnects per client (min / max / total) | {min} / {max} / {total_reconnects} |");
    if !report.down_reasons.is_empty() {
        let reasons: Vec<String> = report
            .down_reasons
            .iter()
            .map(|(r, k)| format!("{r} ×{k}"))
            .collect();
        println!("| link-down reasons | {} |", reasons.join("; "));
    }
    println!(
        "| TLS | {} |",
        if opts.tls {
            "on, long and short link (rustls; certificate verified against the run's CA)"
        } else {
            "off"
        }
    );
    println!("| codec | {} |", plugins.codec_label());
    println!("| log cipher | {} |", plugins.cipher_label());
    println!(
        "| short-link cross-check | {} requests over {}; histories disagreeing with deliveries: {} |",
        report.short_requests,
        if opts.tls { "HTTPS" } else { "HTTP" },
        report.history_mismatches
    );
    println!("| message phase | {:.2?} |", report.elapsed);
}

/// Prints above the progress bar, or plainly when there is none.
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

/// How long the demo waits for the sends whose replies it drops before the restart.
const LOSE_WAIT: Duration = Duration::from_millis(500);

/// How long the demo waits without any new delivery before it counts what is missing.
const SETTLE: Duration = Duration::from_secs(10);
