//! `phobos-host-example`: a small IM app built on Phobos.
//!
//! - `demo` — the README's first command: the server in-process on loopback (TLS with a
//!   certificate made for the run), N chat clients exchanging messages across rooms, a server
//!   restart midway, a summary table, and the decoded tail of the xlog. Exits non-zero if a
//!   message was lost or duplicated.
//! - `server` — runs the IM server until Ctrl-C.
//! - `client --server ADDR --user NAME` — interactive chat in the terminal.
//! - `token --user NAME` — prints the user's login token (the demo's stand-in for a login
//!   service).
//! - `plugins` — loads and lists the configured plugins and runs a codec round trip.
//! - `decode-log PATH` — decodes xlog files (a file or a folder) with the configured cipher,
//!   plugin ciphers included.
//!
//! Every subcommand takes `--config FILE` (one TOML file for server and client; see
//! `docs/HOST_EXAMPLE.md`) and any number of `--plugin PATH` (a plugin library whose plugins
//! then become available by name in the config).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use phobos_host_example::chat::{
    ChatClient, ChatError, ChatEvent, ChatOptions, TrustedServer, Via,
};
use phobos_host_example::config::{HostConfig, MAX_DEMO_CLIENTS};
use phobos_host_example::demo::{self, DemoOptions};
use phobos_host_example::logging::{self, LogSetup};
use phobos_host_example::plugins::LoadedPlugins;
use phobos_host_example::proto::{self, Conversation, Target};
use phobos_host_example::server::{Server, ServerConfig};
use phobos_host_example::tls::{self as demo_tls, DemoTls};
use phobos_host_example::tokens::TokenIssuer;
use phobos_stn::LinkStatus;
use phobos_xlog::Level;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::task::{JoinError, JoinSet};

#[derive(Debug, Parser)]
#[command(
    name = "phobos-host-example",
    version,
    about = "A small IM app built on Phobos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Server + clients on loopback with a restart midway, no setup.
    Demo {
        #[command(flatten)]
        common: Common,
        /// Number of clients (overrides `[demo] clients`).
        #[arg(long)]
        clients: Option<usize>,
        /// Messages per client (overrides `[demo] messages`).
        #[arg(long)]
        messages: Option<usize>,
        /// Where to write the xlog files (overrides `[xlog] dir`).
        #[arg(long)]
        log_dir: Option<PathBuf>,
        /// Run the long link over plain TCP instead of TLS.
        #[arg(long)]
        no_tls: bool,
        /// Do not restart the server midway.
        #[arg(long)]
        no_restart: bool,
    },
    /// Run the IM server until Ctrl-C.
    Server {
        #[command(flatten)]
        common: Common,
        /// Long-link listen address (overrides `[server] long_link`).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Short-link (HTTP) listen address (overrides `[server] http`).
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Plain TCP and HTTP instead of TLS.
        #[arg(long)]
        no_tls: bool,
    },
    /// Interactive chat in the terminal. Exits with status 3 when a message typed in the
    /// session was not confirmed by the server (its send failed, or it was still waiting at
    /// `/quit`, Ctrl-C or the end of the input).
    Client {
        #[command(flatten)]
        common: Common,
        /// The server's long-link address (overrides `[client] server`).
        #[arg(long)]
        server: Option<SocketAddr>,
        /// The server's short-link (HTTP) address (overrides `[client] http`).
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Who you are.
        #[arg(long)]
        user: String,
        /// The room to join and talk in first.
        #[arg(long, default_value = "lobby")]
        room: String,
        /// The CA file to trust (overrides `[client] ca`).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Plain TCP and HTTP instead of TLS.
        #[arg(long)]
        no_tls: bool,
        /// Where to write the xlog files (overrides `[xlog] dir`).
        #[arg(long)]
        log_dir: Option<PathBuf>,
    },
    /// Print a user's login token.
    Token {
        #[command(flatten)]
        common: Common,
        /// The user.
        #[arg(long)]
        user: String,
    },
    /// Load and list the configured plugins; run a frame round trip through the codec.
    Plugins {
        #[command(flatten)]
        common: Common,
    },
    /// Decode xlog files (a file, or every .xlog in a folder) with the configured cipher.
    DecodeLog {
        #[command(flatten)]
        common: Common,
        /// A .xlog file or a folder of them.
        path: PathBuf,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// A TOML config file (default: the built-in config, `host-example/config/demo.toml`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A plugin library to load; its plugins become available by name. Repeatable.
    #[arg(long = "plugin", value_name = "PATH")]
    plugins: Vec<PathBuf>,
}

impl Common {
    fn load(&self) -> anyhow::Result<(HostConfig, LoadedPlugins)> {
        let config = HostConfig::load(self.config.as_deref())?;
        let plugins = LoadedPlugins::load(&config, &self.plugins)?;
        Ok((config, plugins))
    }
}

/// The client's exit status when messages of the session were not confirmed by the server.
const UNCONFIRMED_EXIT: u8 = 3;

/// How many of a conversation's latest messages `/history` shows.
const HISTORY_SHOWN: u32 = 50;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Command::Demo {
            common,
            clients,
            messages,
            log_dir,
            no_tls,
            no_restart,
        } => {
            let (config, plugins) = common.load()?;
            let mut opts = DemoOptions::from_config(&config);
            if let Some(c) = clients {
                if !(2..=MAX_DEMO_CLIENTS).contains(&c) {
                    bail!("--clients must be 2 to {MAX_DEMO_CLIENTS}, got {c}");
                }
                opts.clients = c;
            }
            if let Some(m) = messages {
                if m == 0 {
                    bail!("--messages must be at least 1");
                }
                opts.messages = m;
            }
            opts.tls &= !no_tls;
            opts.restart &= !no_restart;
            run_demo(&runtime, &config, &plugins, &opts, log_dir)
        }
        Command::Server {
            common,
            listen,
            http,
            no_tls,
        } => {
            let (config, plugins) = common.load()?;
            logging::init_tracing(None, config.xlog.level);
            runtime.block_on(run_server(&config, &plugins, listen, http, no_tls))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Client {
            common,
            server,
            http,
            user,
            room,
            ca,
            no_tls,
            log_dir,
        } => {
            let (mut config, plugins) = common.load()?;
            if let Some(s) = server {
                config.client.server = s;
            }
            if let Some(h) = http {
                config.client.http = h;
            }
            if let Some(ca) = ca {
                config.client.ca = Some(std::path::absolute(&ca).unwrap_or(ca));
            }
            config.client.tls &= !no_tls;
            config.client.http_tls &= !no_tls;
            proto::check_name("user", &user)?;
            proto::check_name("room", &room)?;
            let log = LogSetup::open(&config, &plugins, &format!("client-{user}"), log_dir)?;
            println!("Logging to {} (xlog)", log.dir.display());
            logging::init_tracing(Some(log.xlog()), config.xlog.level);
            let result = runtime.block_on(run_client(&config, &plugins, &user, &room, &log));
            // After Ctrl-C a read of stdin is still blocked on tokio's blocking pool, and a
            // dropped runtime would wait for it (for the next line the user types).
            runtime.shutdown_background();
            drop(log);
            Ok(match result? {
                0 => ExitCode::SUCCESS,
                _ => ExitCode::from(UNCONFIRMED_EXIT),
            })
        }
        Command::Token { common, user } => {
            let (config, _) = common.load()?;
            println!(
                "{}",
                TokenIssuer::new(&config.server.auth_secret).issue(&user)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins { common } => {
            logging::init_tracing(None, phobos_host_example::config::LogLevel::Warn);
            let (_, plugins) = common.load()?;
            println!("Plugins:");
            print!("{}", plugins.describe());
            let (len, header) = demo::codec_roundtrip(plugins.codec.as_ref())?;
            println!("Codec round trip: {len} bytes on the wire, header {header}");
            Ok(ExitCode::SUCCESS)
        }
        Command::DecodeLog { common, path } => {
            let (_, plugins) = common.load()?;
            print!("{}", logging::decode_all(&path, &plugins)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_demo(
    runtime: &tokio::runtime::Runtime,
    config: &HostConfig,
    plugins: &LoadedPlugins,
    opts: &DemoOptions,
    log_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    println!(
        "Phobos demo: {} clients × {} messages across {} rooms, server restart midway: {}\n",
        opts.clients,
        opts.messages,
        opts.rooms,
        if opts.restart { "yes" } else { "no" }
    );
    println!("Plugins:");
    print!("{}", plugins.describe());
    let (len, header) = demo::codec_roundtrip(plugins.codec.as_ref())?;
    println!("Codec round trip: {len} bytes on the wire, header {header}\n");

    let log = LogSetup::open(config, plugins, "demo", log_dir)?;
    println!("Logging to {} (xlog)", log.dir.display());
    logging::init_tracing(Some(log.xlog()), config.xlog.level);
    let report = runtime.block_on(demo::run(config, plugins, opts, &log.xlog()));
    let dir = log.dir.clone();
    drop(log); // flushes and closes the log before it is decoded
    let report = report?;
    demo::print_summary(&report, opts, plugins);

    let (file, size, tail) = logging::decode_tail(&dir, plugins, 5)?;
    println!(
        "\nxlog file: {} ({size} bytes, encrypted: {})",
        file.display(),
        plugins.cipher.is_some()
    );
    println!(
        "Its last lines, decoded with the {} cipher (the whole folder: `cargo run -p \
         phobos-host-example -- decode-log{} {}`):",
        plugins.cipher_label(),
        config
            .origin
            .as_ref()
            .map_or(String::new(), |p| format!(" --config {}", p.display())),
        dir.display()
    );
    for line in tail {
        println!("  {line}");
    }
    if report.is_clean() {
        println!("\nEvery message was delivered exactly once.");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "\nerror: {} of {} deliveries arrived, {} duplicates, {} sends failed, {} histories \
             disagree",
            report.delivered,
            report.expected,
            report.duplicates,
            report.send_failures,
            report.history_mismatches
        );
        Ok(ExitCode::FAILURE)
    }
}

async fn run_server(
    config: &HostConfig,
    plugins: &LoadedPlugins,
    listen: Option<SocketAddr>,
    http: Option<SocketAddr>,
    no_tls: bool,
) -> anyhow::Result<()> {
    let mut server_config = ServerConfig::new(
        plugins.codec.clone(),
        TokenIssuer::new(&config.server.auth_secret),
    );
    server_config.long_link_addr = listen.unwrap_or(config.server.long_link);
    server_config.http_addr = http.unwrap_or(config.server.http);
    server_config.identify_cmd_id = plugins.identify_cmd_id();
    server_config.history_limit = config.server.history_limit;
    server_config.dedupe_window = config.server.dedupe_window;
    let tls = if (config.server.tls || config.server.http_tls) && !no_tls {
        Some(match (&config.server.cert, &config.server.key) {
            (Some(cert), Some(key)) => {
                let (cert, key) = (config.resolve(cert), config.resolve(key));
                println!(
                    "TLS certificate {} and key {}",
                    cert.display(),
                    key.display()
                );
                demo_tls::server_config_from_files(&cert, &key)?
            }
            _ => {
                // For the name the config's clients verify, which the message below names.
                let generated = DemoTls::generate_for(&config.client.server_name)?;
                let dir = config.tls_dir();
                generated.write_pem(&dir)?;
                println!(
                    "TLS: made a CA and a certificate for {}; clients trust {}",
                    config.client.server_name,
                    dir.join("ca.pem").display()
                );
                generated.server
            }
        })
    } else {
        None
    };
    server_config.tls = tls.clone().filter(|_| config.server.tls);
    if config.server.http_tls {
        server_config.http_tls = tls;
    }
    let server = Server::start(server_config).await?;
    println!(
        "Serving codec {} on {} ({}), short link on {}://{}; Ctrl-C stops.",
        plugins.codec_label(),
        server.long_link_addr(),
        if server.is_tls() { "TLS" } else { "plain TCP" },
        if config.server.http_tls && !no_tls {
            "https"
        } else {
            "http"
        },
        server.http_addr()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    let stats = server.stats();
    server.shutdown().await;
    println!(
        "Stopped: {} logins, {} messages stored, {} pushes, {} retried sends deduped",
        stats.logins, stats.messages_stored, stats.pushes, stats.duplicate_sends
    );
    Ok(())
}

/// The terminal client until `/quit`, Ctrl-C or the end of its input; returns how many
/// messages of the session the server did not confirm.
async fn run_client(
    config: &HostConfig,
    plugins: &LoadedPlugins,
    user: &str,
    room: &str,
    log: &LogSetup,
) -> anyhow::Result<usize> {
    let token = match &config.client.token {
        Some(t) => t.clone(),
        None => TokenIssuer::new(&config.server.auth_secret).issue(user)?,
    };
    let trusted = if config.client.tls || config.client.http_tls {
        let ca_path = config.client_ca();
        let ca_der = demo_tls::read_ca(&ca_path).with_context(|| {
            format!(
                "the CA to trust ({}): start the server first (it writes its CA there), pass \
                 --ca FILE, or --no-tls",
                ca_path.display()
            )
        })?;
        Some(TrustedServer {
            ca_der,
            server_name: config.client.server_name.clone(),
        })
    } else {
        None
    };
    let (client, mut events) = ChatClient::start(
        ChatOptions {
            user: user.to_owned(),
            token,
            long_link: config.client.server,
            http: config.client.http,
            tls: trusted.clone().filter(|_| config.client.tls),
            http_tls: trusted.filter(|_| config.client.http_tls),
            retry_count: config.client.retry_count,
            send_timeout: Duration::from_millis(config.client.send_timeout_ms),
        },
        plugins,
    )?;
    let xlog = log.xlog();
    println!(
        "{user} → {} ({}); type a message for #{room}, or /join ROOM, /room ROOM, /to USER TEXT, \
         /list, /history CONVERSATION, /quit",
        config.client.server,
        if config.client.tls {
            "TLS"
        } else {
            "plain TCP"
        }
    );

    // Link status and messages as they arrive.
    let printer = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let line = match event {
                ChatEvent::Message { message, via } => format!(
                    "[{} #{}] {}: {}{}",
                    message.conversation,
                    message.seq,
                    message.from,
                    message.text,
                    if via == Via::History {
                        " (caught up)"
                    } else {
                        ""
                    }
                ),
                ChatEvent::Link { status, reason } => match (status, reason) {
                    (LinkStatus::Connecting, _) => "* connecting…".to_owned(),
                    (LinkStatus::Connected(addr), _) => format!("* connected to {addr}"),
                    (_, Some(reason)) => format!("* link down: {reason}; reconnecting"),
                    (other, None) => format!("* link down: {other:?}; reconnecting"),
                },
                ChatEvent::CaughtUp {
                    conversation,
                    fetched,
                } if fetched > 0 => format!("* caught up {fetched} message(s) in {conversation}"),
                ChatEvent::CatchUpFailed {
                    conversation,
                    error,
                } => format!("* catching up {conversation} failed: {error}"),
                ChatEvent::HistoryReset { .. } => "* the server restarted without its history: \
                                                   conversations start over, rooms are joined \
                                                   again"
                    .to_owned(),
                _ => continue,
            };
            xlog.log_message(Level::Info, "client", line.as_bytes());
            println!("{line}");
        }
    });

    let mut terminal = Terminal::new(client, room);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let read = terminal.run(&mut lines).await;
    let unconfirmed = terminal.close().await;
    let _ = printer.await;
    read.context("reading stdin")?;
    Ok(unconfirmed)
}

/// The terminal's side of a chat session: what it typed, which of it the server has answered.
///
/// Messages and joins go to the server one at a time, in the order typed, and a message goes
/// to the room that is current when its turn comes: the room of the last join before it that
/// went through, as if each line waited for the one before. `/list` and `/history` run beside
/// them. None of them holds up the input: a line is read and acted on while any number of
/// requests wait on a server that is down, so `/quit` always ends the session at once.
///
/// Design: one request at a time rather than one task per line keeps the server's order of a
/// user's messages the order they were typed, also when retries cross a reconnect.
#[derive(Debug)]
struct Terminal {
    client: ChatClient,
    /// Where plain text goes.
    current: String,
    /// Messages and joins not started yet, in the order typed.
    waiting: VecDeque<Ordered>,
    /// The message or join on its way to the server; its task is the one in `ordered`.
    in_flight: Option<Ordered>,
    /// At most one task: `in_flight`'s.
    ordered: JoinSet<Outcome>,
    /// Messages whose send failed.
    failed: usize,
    /// `/list`, `/history` and the conversation list at start (all over the short link);
    /// each prints its own answer.
    reads: JoinSet<()>,
}

/// A line that goes to the server in order.
#[derive(Debug)]
enum Ordered {
    /// Plain text for the current room.
    Say(String),
    /// `/to USER TEXT`.
    To { peer: String, text: String },
    /// `/join ROOM`, or `--room` at start (`first`).
    Join { room: String, first: bool },
}

/// How an [`Ordered`] request ended.
#[derive(Debug)]
enum Outcome {
    Sent(Result<proto::SendAck, ChatError>),
    Joined(Result<Conversation, ChatError>),
}

/// Whether the session goes on after a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

impl Terminal {
    /// A session that joins `room` first and marks the user's other conversations read.
    fn new(client: ChatClient, room: &str) -> Self {
        let mut terminal = Terminal {
            client,
            current: room.to_owned(),
            waiting: VecDeque::new(),
            in_flight: None,
            ordered: JoinSet::new(),
            failed: 0,
            reads: JoinSet::new(),
        };
        terminal.push(Ordered::Join {
            room: room.to_owned(),
            first: true,
        });
        let client = terminal.client.clone();
        terminal.reads.spawn(async move {
            if let Err(e) = client.start_from_now().await {
                println!("* conversation list over the short link failed: {e}");
            }
        });
        terminal
    }

    /// Reads and carries out lines until `/quit`, or until the input ends and every request
    /// has been answered. Requests still waiting at `/quit` are left to [`Terminal::close`].
    async fn run(&mut self, lines: &mut Lines<BufReader<tokio::io::Stdin>>) -> std::io::Result<()> {
        let mut reading = true;
        // Ctrl-C ends the session like `/quit`, so what the server never confirmed is named.
        let interrupt = tokio::signal::ctrl_c();
        tokio::pin!(interrupt);
        let mut watching = true;
        loop {
            if !reading && self.is_idle() {
                return Ok(());
            }
            tokio::select! {
                signal = &mut interrupt, if watching => match signal {
                    Ok(()) => {
                        println!("* interrupted");
                        return Ok(());
                    }
                    // No handler could be installed: Ctrl-C keeps its default.
                    Err(_) => watching = false,
                },
                // `next_line` is cancel safe: a line read while a request ends is kept.
                line = lines.next_line(), if reading => match line? {
                    Some(line) => {
                        if self.on_line(&line) == Flow::Quit {
                            return Ok(());
                        }
                    }
                    None => {
                        reading = false;
                        let pending = self.pending();
                        if pending > 0 {
                            println!("* end of input: waiting for {pending} request(s) to finish");
                        }
                    }
                },
                Some(end) = self.ordered.join_next() => self.on_ordered_end(end),
                Some(end) = self.reads.join_next() => {
                    // Only a task that panicked ends with an error; each prints its own result.
                    if let Err(e) = end {
                        println!("* a short-link request failed: {e}");
                    }
                }
                // Not reached: with the input ended, the check above returns once both task
                // sets are empty (a waiting request always has one in flight before it).
                else => return Ok(()),
            }
        }
    }

    /// Carries out one line of input.
    fn on_line(&mut self, line: &str) -> Flow {
        let line = line.trim();
        if line.is_empty() {
            return Flow::Continue;
        }
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match cmd {
            "/quit" => return Flow::Quit,
            "/join" | "/room" => match proto::check_name("room", rest) {
                Ok(()) => self.push(Ordered::Join {
                    room: rest.to_owned(),
                    first: false,
                }),
                Err(e) => println!("* {e}"),
            },
            "/to" => match rest.split_once(' ') {
                Some((peer, text)) => self.push(Ordered::To {
                    peer: peer.to_owned(),
                    text: text.trim().to_owned(),
                }),
                None => println!("* usage: /to USER TEXT"),
            },
            "/list" => {
                let client = self.client.clone();
                self.reads.spawn(async move {
                    match client.conversations().await {
                        Ok(convs) if convs.is_empty() => println!("* no conversations yet"),
                        Ok(convs) => {
                            for c in convs {
                                println!(
                                    "* {} — {} messages, members {}{}",
                                    c.id,
                                    c.last_seq,
                                    c.members.join(", "),
                                    if c.members_cut { " and more" } else { "" }
                                );
                            }
                        }
                        Err(e) => println!("* /list failed: {e}"),
                    }
                });
            }
            "/history" => {
                let conv = if rest.is_empty() {
                    proto::room_conversation(self.typed_room())
                } else {
                    rest.to_owned()
                };
                let client = self.client.clone();
                self.reads.spawn(async move {
                    match client.history_before(&conv, u64::MAX, HISTORY_SHOWN).await {
                        Ok(page) if page.messages.is_empty() => {
                            println!("* no messages in {conv}")
                        }
                        Ok(page) => {
                            if page.more {
                                let first = page.messages.first().map_or(0, |m| m.seq);
                                println!("* the latest messages of {conv}, from #{first}:");
                            }
                            for m in page.messages {
                                println!(
                                    "  [{} #{}] {}: {}",
                                    m.conversation, m.seq, m.from, m.text
                                );
                            }
                        }
                        Err(e) => println!("* /history {conv} failed: {e}"),
                    }
                });
            }
            c if c.starts_with('/') => println!("* unknown command {c}"),
            _ => self.push(Ordered::Say(line.to_owned())),
        }
        Flow::Continue
    }

    /// Queues a message or join behind the ones typed before it.
    fn push(&mut self, request: Ordered) {
        self.waiting.push_back(request);
        self.start_next();
    }

    /// Starts the next waiting message or join unless one is on its way.
    fn start_next(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        let Some(request) = self.waiting.pop_front() else {
            return;
        };
        let client = self.client.clone();
        match &request {
            Ordered::Say(text) => {
                let (to, text) = (Target::Room(self.current.clone()), text.clone());
                self.ordered
                    .spawn(async move { Outcome::Sent(client.send(to, text).await) });
            }
            Ordered::To { peer, text } => {
                let (to, text) = (Target::User(peer.clone()), text.clone());
                self.ordered
                    .spawn(async move { Outcome::Sent(client.send(to, text).await) });
            }
            Ordered::Join { room, .. } => {
                let room = room.clone();
                self.ordered
                    .spawn(async move { Outcome::Joined(client.join(&room).await) });
            }
        }
        self.in_flight = Some(request);
    }

    /// Reports how the request in flight ended and starts the next one.
    fn on_ordered_end(&mut self, end: Result<Outcome, JoinError>) {
        let Some(request) = self.in_flight.take() else {
            return;
        };
        match (request, end) {
            (Ordered::Join { room, first }, Ok(Outcome::Joined(Ok(conv)))) => {
                if first {
                    println!(
                        "* joined #{room} ({}{} members, {} earlier messages; /history {} shows \
                         them)",
                        if conv.members_cut { "over " } else { "" },
                        conv.members.len(),
                        conv.last_seq,
                        conv.id
                    );
                } else {
                    let over = if conv.members_cut { "over " } else { "" };
                    println!("* now in #{room} ({over}{} members)", conv.members.len());
                }
                self.current = room;
            }
            (Ordered::Join { room, first }, Ok(Outcome::Joined(Err(e)))) => {
                if first {
                    println!("* joining #{room} failed: {e}");
                } else {
                    println!("* joining #{room} failed: {e}; still in #{}", self.current);
                }
            }
            (request, Ok(Outcome::Sent(result))) => {
                if !report_send(&request, result) {
                    self.failed += 1;
                }
            }
            (request, Ok(Outcome::Joined(_)) | Err(_)) => {
                // A join's task gives a join's outcome; only a task that panicked gets here.
                // A message whose task failed is not confirmed, and counts in the exit
                // status like one whose send failed.
                println!("* {}: the request's task failed", request.line());
                if request.is_message() {
                    self.failed += 1;
                }
            }
        }
        self.start_next();
    }

    /// The room plain text will go to once the joins typed so far went through.
    fn typed_room(&self) -> &str {
        self.waiting
            .iter()
            .rev()
            .chain(&self.in_flight)
            .find_map(|r| match r {
                Ordered::Join { room, .. } => Some(room.as_str()),
                _ => None,
            })
            .unwrap_or(&self.current)
    }

    /// Requests not answered yet.
    fn pending(&self) -> usize {
        self.waiting.len() + usize::from(self.in_flight.is_some()) + self.reads.len()
    }

    fn is_idle(&self) -> bool {
        self.pending() == 0
    }

    /// Stops the client and tells the user which messages the server has not confirmed: the
    /// one on its way (the server may or may not have it) and those never sent. `/list` and
    /// `/history` requests still waiting are dropped; they change nothing. Returns how many
    /// messages of the session the server did not confirm, these and those whose send failed.
    async fn close(mut self) -> usize {
        self.reads.shutdown().await;
        // Ends the request in flight at once: with its answer if the server gave one in time,
        // otherwise with an error.
        self.client.shutdown().await;
        let mut unconfirmed = 0;
        if let Some(request) = self.in_flight.take() {
            let end = self.ordered.join_next().await;
            match (request, end) {
                (request, Some(Ok(Outcome::Sent(Ok(ack))))) => {
                    report_send(&request, Ok(ack));
                }
                (Ordered::Join { .. }, Some(Ok(Outcome::Joined(Ok(_))))) => {}
                (Ordered::Join { room, .. }, _) => println!("* not joined: #{room}"),
                (request, _) => {
                    unconfirmed += 1;
                    println!("* not confirmed: {}", request.line());
                }
            }
        }
        for request in self.waiting {
            match request {
                Ordered::Join { room, .. } => println!("* not joined: #{room}"),
                request => {
                    unconfirmed += 1;
                    println!("* not sent: {}", request.line());
                }
            }
        }
        if unconfirmed > 0 {
            println!("* quit with {unconfirmed} message(s) not confirmed by the server");
        }
        unconfirmed + self.failed
    }
}

impl Ordered {
    /// Whether it is a message (the server confirms it or not), not a join.
    fn is_message(&self) -> bool {
        !matches!(self, Ordered::Join { .. })
    }

    /// The request as the user typed it.
    fn line(&self) -> String {
        match self {
            Ordered::Say(text) => text.clone(),
            Ordered::To { peer, text } => format!("/to {peer} {text}"),
            Ordered::Join { room, .. } => format!("/join {room}"),
        }
    }
}

/// Says how a message ended unless it simply arrived (its push shows it).
/// Returns whether the server confirmed the message.
fn report_send(request: &Ordered, result: Result<proto::SendAck, ChatError>) -> bool {
    match result {
        Ok(ack) if ack.duplicate => {
            println!("* sent ({} #{}, a retry)", ack.conversation, ack.seq);
            true
        }
        Ok(_) => true,
        Err(e) => {
            println!("* not sent ({e}): {}", request.line());
            false
        }
    }
}
