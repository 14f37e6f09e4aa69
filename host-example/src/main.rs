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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use phobos_host_example::chat::{ChatClient, ChatEvent, ChatOptions, TrustedServer, Via};
use phobos_host_example::config::{HostConfig, MAX_DEMO_CLIENTS};
use phobos_host_example::demo::{self, DemoOptions};
use phobos_host_example::logging::{self, LogSetup};
use phobos_host_example::plugins::LoadedPlugins;
use phobos_host_example::proto::{self, Target};
use phobos_host_example::server::{Server, ServerConfig};
use phobos_host_example::tls::{self as demo_tls, DemoTls};
use phobos_host_example::tokens::TokenIssuer;
use phobos_stn::LinkStatus;
use phobos_xlog::Level;
use tokio::io::AsyncBufReadExt;

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
    /// Interactive chat in the terminal.
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
            drop(log);
            result?;
            Ok(ExitCode::SUCCESS)
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
                let generated = DemoTls::generate()?;
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

async fn run_client(
    config: &HostConfig,
    plugins: &LoadedPlugins,
    user: &str,
    room: &str,
    log: &LogSetup,
) -> anyhow::Result<()> {
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
                _ => continue,
            };
            xlog.log_message(Level::Info, "client", line.as_bytes());
            println!("{line}");
        }
    });

    let joined = client.join(room).await;
    match joined {
        Ok(conv) => println!(
            "* joined #{room} ({} members, {} earlier messages; /history {} shows them)",
            conv.members.len(),
            conv.last_seq,
            conv.id
        ),
        Err(e) => println!("* joining #{room} failed: {e}"),
    }
    if let Err(e) = client.start_from_now().await {
        println!("* conversation list over the short link failed: {e}");
    }

    let mut current = room.to_owned();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match cmd {
            "/quit" => break,
            "/join" | "/room" => match client.join(rest).await {
                Ok(conv) => {
                    current = rest.to_owned();
                    println!("* now in #{rest} ({} members)", conv.members.len());
                }
                Err(e) => println!("* {e}"),
            },
            "/to" => {
                let Some((peer, text)) = rest.split_once(' ') else {
                    println!("* usage: /to USER TEXT");
                    continue;
                };
                report_send(client.send(Target::User(peer.to_owned()), text).await);
            }
            "/list" => match client.conversations().await {
                Ok(convs) => {
                    for c in convs {
                        println!(
                            "* {} — {} messages, members {}",
                            c.id,
                            c.last_seq,
                            c.members.join(", ")
                        );
                    }
                }
                Err(e) => println!("* {e}"),
            },
            "/history" => {
                let conv = if rest.is_empty() {
                    proto::room_conversation(&current)
                } else {
                    rest.to_owned()
                };
                match client.history(&conv, 0, proto::MAX_HISTORY_PAGE).await {
                    Ok(page) => {
                        for m in page.messages {
                            println!("  [{} #{}] {}: {}", m.conversation, m.seq, m.from, m.text);
                        }
                    }
                    Err(e) => println!("* {e}"),
                }
            }
            c if c.starts_with('/') => println!("* unknown command {c}"),
            _ => report_send(client.send(Target::Room(current.clone()), line).await),
        }
    }
    client.shutdown().await;
    let _ = printer.await;
    Ok(())
}

fn report_send(result: Result<proto::SendAck, phobos_host_example::chat::ChatError>) {
    match result {
        Ok(ack) if ack.duplicate => {
            println!("* sent ({} #{}, a retry)", ack.conversation, ack.seq)
        }
        Ok(_) => {}
        Err(e) => println!("* not sent: {e}"),
    }
}
