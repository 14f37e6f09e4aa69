//! The terminal client while its server is down: it keeps reading its input, `/quit` ends it
//! at once and names the messages the server never confirmed (and exits with status 3),
//! `/list` and `/history` answer with an error.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use phobos_host_example::config::HostConfig;
use phobos_host_example::plugins::LoadedPlugins;
use phobos_host_example::server::{Server, ServerConfig, ServerHandle};
use phobos_host_example::tokens::TokenIssuer;

use crate::common::TerminalClient;

/// The test config: a send waits up to 600 s for the server (the most the config allows),
/// ten times the hang guard, so a client that finishes a send before reading the next line
/// cannot pass.
const CONFIG: &str =
    "[server]\nauth_secret = \"down-secret\"\n[client]\nsend_timeout_ms = 600000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_ends_the_client_at_once_while_the_server_is_down_and_names_unconfirmed_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut alice = connected_then_server_down(dir.path()).await;
    alice.type_line("typed while the server is down");
    alice.type_line("/to bob typed after it");
    alice.type_line("/quit");

    tokio::task::block_in_place(|| {
        exits_printing(
            alice,
            &[
                "* not confirmed: typed while the server is down",
                "* not sent: /to bob typed after it",
                "* quit with 2 message(s) not confirmed by the server",
            ],
        )
    });
}

/// Ctrl-C ends the client like `/quit`: it names what the server never confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_the_client_like_quit() {
    let dir = tempfile::tempdir().unwrap();
    let mut alice = connected_then_server_down(dir.path()).await;
    alice.type_line("typed before ctrl-c");
    alice.interrupt();

    tokio::task::block_in_place(|| {
        exits_printing(
            alice,
            &[
                "* interrupted",
                "* quit with 1 message(s) not confirmed by the server",
            ],
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_history_answer_with_an_error_while_the_server_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut alice = connected_then_server_down(dir.path()).await;
    // A message waiting for the server must not hold up the commands typed after it.
    alice.type_line("typed while the server is down");
    alice.type_line("/list");
    alice.type_line("/history");
    // Both fail on the same attempt, so their lines may come in either order.
    tokio::task::block_in_place(|| {
        let history = "* /history room:lobby failed: task failed: ";
        let seen = alice.wait_for("* /list failed: task failed: ");
        if !seen.iter().any(|l| l.contains(history)) {
            alice.wait_for(history);
        }
    });

    alice.type_line("/quit");
    tokio::task::block_in_place(|| {
        exits_printing(
            alice,
            &["* quit with 1 message(s) not confirmed by the server"],
        )
    });
}

#[test]
fn a_client_whose_server_was_never_up_quits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("host.toml"), CONFIG).unwrap();
    let mut alice = start_client(dir.path(), dead_port(), dead_port());
    alice.wait_for("type a message for #lobby");
    alice.type_line("hello?");
    alice.type_line("/quit");

    exits_printing(
        alice,
        &[
            "* not joined: #lobby",
            "* not sent: hello?",
            "* quit with 1 message(s) not confirmed by the server",
        ],
    );
}

#[test]
fn at_the_end_of_its_input_the_client_waits_for_its_requests_and_names_the_failed_ones() {
    // Sends give up after 1 s without retries, so the client has an answer for each soon.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("host.toml"),
        "[server]\nauth_secret = \"down-secret\"\n[client]\nsend_timeout_ms = 1000\n\
         retry_count = 0\n",
    )
    .unwrap();
    let mut alice = start_client(dir.path(), dead_port(), dead_port());
    alice.wait_for("type a message for #lobby");
    alice.type_line("first");
    alice.type_line("/to bob second");
    alice.close_input();

    let (status, printed) = alice.wait_exit();
    // Both sends failed: the status says so.
    assert_eq!(status.code(), Some(UNCONFIRMED), "{status}; {printed:#?}");
    let failed: Vec<&str> = printed
        .iter()
        .filter_map(|l| l.strip_prefix("* not sent ("))
        .filter_map(|l| l.split_once("): ").map(|(_, line)| line))
        .collect();
    assert_eq!(failed, ["first", "/to bob second"], "{printed:#?}");
    for start in ["* end of input: waiting for ", "* joining #lobby failed: "] {
        assert!(
            printed.iter().any(|l| l.starts_with(start)),
            "{start:?} in {printed:#?}"
        );
    }
}

/// The client's exit status when messages were not confirmed by the server.
const UNCONFIRMED: i32 = 3;

/// Waits for `client` to exit; checks that it exited with the status that says messages were
/// not confirmed, and printed each of `lines`.
fn exits_printing(client: TerminalClient, lines: &[&str]) {
    let (status, printed) = client.wait_exit();
    assert_eq!(status.code(), Some(UNCONFIRMED), "{status}; {printed:#?}");
    for line in lines {
        assert!(
            printed.iter().any(|l| l == line),
            "{line:?} in {printed:#?}"
        );
    }
}

/// A plain-TCP server on loopback, and the config file the client reads, in `dir`.
async fn start_server(dir: &Path) -> ServerHandle {
    let config_path = dir.join("host.toml");
    std::fs::write(&config_path, CONFIG).unwrap();
    let config = HostConfig::load(Some(&config_path)).unwrap();
    let plugins = LoadedPlugins::load(&config, &[]).unwrap();
    let sc = ServerConfig::new(plugins.codec.clone(), TokenIssuer::new("down-secret"));
    Server::start(sc).await.unwrap()
}

/// `client --user alice --room lobby --no-tls` with `dir`'s config and log folder.
fn start_client(dir: &Path, long_link: SocketAddr, http: SocketAddr) -> TerminalClient {
    let config_path: PathBuf = dir.join("host.toml");
    TerminalClient::start(|cmd| {
        cmd.args(["--user", "alice", "--room", "lobby", "--no-tls", "--server"])
            .arg(long_link.to_string())
            .arg("--http")
            .arg(http.to_string())
            .arg("--config")
            .arg(config_path)
            .arg("--log-dir")
            .arg(dir.join("logs"))
    })
}

/// A client in `dir` that joined `#lobby` on a server that is then shut down: returned
/// once it has seen its link go down.
async fn connected_then_server_down(dir: &Path) -> TerminalClient {
    let server = start_server(dir).await;
    let alice = start_client(dir, server.long_link_addr(), server.http_addr());
    // The join's line and the link's may come in either order.
    tokio::task::block_in_place(|| {
        let seen = alice.wait_for("* joined #lobby");
        if !seen.iter().any(|l| l.starts_with("* connected to ")) {
            alice.wait_for("* connected to ");
        }
    });
    server.shutdown().await;
    tokio::task::block_in_place(|| alice.wait_for("* link down"));
    alice
}

/// A loopback address nothing listens on: a port the system just handed out and took back.
fn dead_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}
