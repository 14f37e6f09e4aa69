//! `phobos-host-example`: a small app built on Phobos.
//!
//! - `demo` — the README's first command: loads the plugins named in the config (built-in by
//!   default), shows which were loaded and from where, runs a frame round trip through the
//!   codec, starts an embedded long-link server on loopback (TLS with a certificate made for
//!   the run, unless `--no-tls`) and a crowd of clients that
//!   exchange messages and broadcasts through it, logs through xlog (encrypted with the
//!   configured cipher) and decodes the log at the end.
//! - `plugins` — loads and lists the configured plugins and runs the codec round trip.
//! - `server` — runs the demo server until Ctrl-C.
//!
//! Every subcommand takes `--config FILE` and any number of `--plugin PATH` (a plugin library
//! whose plugins then become available by name in the config).

mod demo;
#[path = "legacy_plugins.rs"]
mod plugins;
#[path = "legacy_server.rs"]
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "phobos-host-example",
    version,
    about = "A small app built on Phobos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Embedded server + clients on loopback, no setup.
    Demo {
        #[command(flatten)]
        common: Common,
        /// Number of clients (overrides the config).
        #[arg(long)]
        clients: Option<usize>,
        /// Messages per client (overrides the config).
        #[arg(long)]
        messages: Option<usize>,
        /// Where to write the xlog files (default: a new folder in the temp dir).
        #[arg(long)]
        log_dir: Option<PathBuf>,
        /// Run the long link over plain TCP instead of TLS.
        #[arg(long)]
        no_tls: bool,
    },
    /// Load and list the configured plugins; run a frame round trip through the codec.
    Plugins {
        #[command(flatten)]
        common: Common,
    },
    /// Run the demo server until Ctrl-C.
    Server {
        #[command(flatten)]
        common: Common,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// A TOML config file (default: the built-in demo config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A plugin library to load; its plugins become available by name. Repeatable.
    #[arg(long = "plugin", value_name = "PATH")]
    plugins: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
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
        } => {
            let (config, plugins) = plugins::load(common.config.as_deref(), &common.plugins)?;
            let opts = demo::DemoOptions {
                clients: clients.unwrap_or(config.demo.clients).max(2),
                messages: messages.unwrap_or(config.demo.messages).max(1),
                broadcast_every: config.demo.broadcast_every.max(1),
                log_dir: log_dir
                    .or(config.demo.log_dir)
                    .unwrap_or_else(demo::default_log_dir),
                tls: config.demo.tls && !no_tls,
            };
            let guard = demo::open_log(&plugins, &opts.log_dir)?;
            init_tracing(Some(guard.xlog()));
            let result = runtime.block_on(demo::run(&plugins, &opts, &guard.xlog()));
            drop(guard); // flushes and closes the log before it is decoded
            result.and_then(|summary| demo::report(&plugins, &opts, &summary))
        }
        Command::Plugins { common } => {
            init_tracing(None);
            let (_, plugins) = plugins::load(common.config.as_deref(), &common.plugins)?;
            println!("Plugins:");
            print!("{}", plugins.describe());
            demo::codec_roundtrip(plugins.codec.as_ref())
        }
        Command::Server { common, listen } => {
            init_tracing(None);
            let (_, plugins) = plugins::load(common.config.as_deref(), &common.plugins)?;
            runtime.block_on(async {
                let server = server::DemoServer::start(listen, plugins.codec.clone(), None)
                    .await
                    .with_context(|| format!("listening on {listen}"))?;
                println!(
                    "Serving codec {} on {}; Ctrl-C stops.",
                    plugins.codec.name(),
                    server.addr()
                );
                tokio::signal::ctrl_c()
                    .await
                    .context("waiting for Ctrl-C")?;
                server.shutdown();
                Ok(())
            })
        }
    }
}

/// Logs warnings to stderr and, when `xlog` is given, Phobos's own info events (link status
/// changes with their reasons, task ends) into the xlog through its tracing layer.
fn init_tracing(xlog: Option<phobos_xlog::Xlog>) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{filter::LevelFilter, EnvFilter};

    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")));
    let xlog = xlog.map(|x| phobos_xlog::XlogLayer::new(x).with_filter(LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(stderr)
        .with(xlog)
        .init();
}
