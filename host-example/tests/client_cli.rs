//! The interactive `client` command, driven through its stdin against an in-process server.

mod common;

use std::time::Duration;

use phobos_host_example::chat::{ChatClient, ChatEvent, ChatOptions, TrustedServer};
use phobos_host_example::config::HostConfig;
use phobos_host_example::plugins::LoadedPlugins;
use phobos_host_example::proto::Target;
use phobos_host_example::server::{Server, ServerConfig};
use phobos_host_example::tls::{DemoTls, SERVER_NAME};
use phobos_host_example::tokens::TokenIssuer;

use crate::common::{TerminalClient, GUARD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_logs_in_sends_shows_pushes_and_link_status_and_names_its_log_folder() {
    let dir = tempfile::tempdir().unwrap();
    let tls = DemoTls::generate().unwrap();
    tls.write_pem(dir.path()).unwrap();
    let config_path = dir.path().join("host.toml");
    std::fs::write(
        &config_path,
        "[server]\nauth_secret = \"cli-secret\"\n[client]\nca = \"ca.pem\"\n",
    )
    .unwrap();
    let config = HostConfig::load(Some(&config_path)).unwrap();
    let plugins = LoadedPlugins::load(&config, &[]).unwrap();
    let tokens = TokenIssuer::new("cli-secret");
    let mut sc = ServerConfig::new(plugins.codec.clone(), tokens.clone());
    sc.tls = Some(tls.server.clone());
    sc.http_tls = Some(tls.server.clone());
    let server = Server::start(sc).await.unwrap();

    let trusted = TrustedServer {
        ca_der: tls.ca_der.clone(),
        server_name: SERVER_NAME.to_owned(),
    };
    let (bob, mut bob_events) = ChatClient::start(
        ChatOptions {
            user: "bob".into(),
            token: tokens.issue("bob").unwrap(),
            long_link: server.long_link_addr(),
            http: server.http_addr(),
            tls: Some(trusted.clone()),
            http_tls: Some(trusted),
            retry_count: 3,
            send_timeout: Duration::from_secs(20),
        },
        &plugins,
    )
    .unwrap();
    bob.join("lobby").await.unwrap();

    let mut alice = TerminalClient::start(|cmd| {
        cmd.args(["--user", "alice", "--room", "lobby", "--server"])
            .arg(server.long_link_addr().to_string())
            .arg("--http")
            .arg(server.http_addr().to_string())
            .arg("--config")
            .arg(&config_path)
            .arg("--log-dir")
            .arg(dir.path().join("logs"))
    });
    let mut seen = tokio::task::block_in_place(|| alice.wait_for("* joined #lobby"));
    assert!(
        seen.iter().any(|l| l.starts_with("Logging to ")),
        "{seen:#?}"
    );
    // The long link's status is reported too. Not necessarily before the join's line: the
    // status goes through the chat client's event task to the printer task, the join's
    // result straight to the terminal, and on a loaded machine the join can print first.
    if !seen.iter().any(|l| l.starts_with("* connected to ")) {
        seen.extend(tokio::task::block_in_place(|| {
            alice.wait_for("* connected to ")
        }));
    }

    alice.type_line("hello from the terminal");
    let got = tokio::time::timeout(GUARD, async {
        loop {
            if let Some(ChatEvent::Message { message, .. }) = bob_events.recv().await {
                if message.from == "alice" {
                    return message;
                }
            }
        }
    })
    .await
    .expect("bob gets alice's message");
    assert_eq!(got.text, "hello from the terminal");

    bob.send(Target::Room("lobby".into()), "hi alice")
        .await
        .unwrap();
    tokio::task::block_in_place(|| alice.wait_for("bob: hi alice"));

    // The server restarts: the client reports its link going down and coming back.
    server.restart().await.unwrap();
    tokio::task::block_in_place(|| {
        alice.wait_for("* link down");
        alice.wait_for("* connected to ");
    });

    // `/history` lists the room's latest messages, the server's restart notwithstanding.
    alice.type_line("/history");
    let seen = tokio::task::block_in_place(|| alice.wait_for("bob: hi alice"));
    let line = seen.last().unwrap();
    assert!(line.starts_with("  [room:lobby #"), "{seen:#?}");

    alice.type_line("/quit");
    let (status, _) = tokio::task::block_in_place(|| alice.wait_exit());
    assert!(status.success());
    let logs: Vec<_> = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "xlog"))
        .collect();
    assert!(!logs.is_empty(), "the client wrote an xlog file");
    bob.shutdown().await;
    server.shutdown().await;
}
