//! Two chat clients through the server, which restarts midway: every message arrives once, in
//! order within its room.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use phobos_host_example::chat::{ChatClient, ChatEvent, ChatEvents, ChatOptions, TrustedServer};
use phobos_host_example::config::HostConfig;
use phobos_host_example::plugins::LoadedPlugins;
use phobos_host_example::proto::{Message, Target};
use phobos_host_example::server::{Server, ServerConfig, ServerHandle};
use phobos_host_example::tls::{DemoTls, SERVER_NAME};
use phobos_host_example::tokens::TokenIssuer;
use phobos_stn::LinkStatus;
use tokio::sync::Notify;

const PER_CLIENT: usize = 20;
/// A guard against hangs, not a timing assertion.
const GUARD: Duration = Duration::from_secs(60);

fn client(
    server: &ServerHandle,
    tokens: &TokenIssuer,
    tls: &DemoTls,
    plugins: &LoadedPlugins,
    user: &str,
) -> (ChatClient, ChatEvents) {
    let trusted = TrustedServer {
        ca_der: tls.ca_der.clone(),
        server_name: SERVER_NAME.to_owned(),
    };
    ChatClient::start(
        ChatOptions {
            user: user.to_owned(),
            token: tokens.issue(user).unwrap(),
            long_link: server.long_link_addr(),
            http: server.http_addr(),
            tls: Some(trusted.clone()),
            http_tls: Some(trusted),
            retry_count: 10,
            send_timeout: Duration::from_secs(30),
        },
        plugins,
    )
    .expect("client starts")
}

/// Collects messages until `want` arrived from `from`; also counts reconnects.
async fn collect(events: &mut ChatEvents, from: &str, want: usize) -> (Vec<Message>, usize) {
    let mut got = Vec::new();
    let mut connects = 0;
    while got.iter().filter(|m: &&Message| m.from == from).count() < want {
        match tokio::time::timeout(GUARD, events.recv()).await {
            Ok(Some(ChatEvent::Message { message, .. })) => got.push(message),
            Ok(Some(ChatEvent::Link {
                status: LinkStatus::Connected(_),
                ..
            })) => connects += 1,
            Ok(Some(_)) => {}
            Ok(None) => panic!("client stopped"),
            Err(_) => panic!(
                "messages missing: got {} of {want} from {from}: {:?}",
                got.len(),
                got.iter()
                    .map(|m| (&m.conversation, m.seq))
                    .collect::<Vec<_>>()
            ),
        }
    }
    (got, connects)
}

/// The built-in plugins, the run's TLS material, a token issuer and a TLS server config.
fn setup() -> (LoadedPlugins, DemoTls, TokenIssuer, ServerConfig) {
    let config = HostConfig::load(None).unwrap();
    let plugins = LoadedPlugins::load(&config, &[]).unwrap();
    let tls = DemoTls::generate().unwrap();
    let tokens = TokenIssuer::new("test-secret");
    let mut server_config = ServerConfig::new(plugins.codec.clone(), tokens.clone());
    server_config.tls = Some(tls.server.clone());
    server_config.http_tls = Some(tls.server.clone());
    (plugins, tls, tokens, server_config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_get_every_message_once_and_in_order_across_a_server_restart() {
    let (plugins, tls, tokens, server_config) = setup();
    let server = Server::start(server_config).await.unwrap();

    let (alice, mut alice_events) = client(&server, &tokens, &tls, &plugins, "alice");
    let (bob, mut bob_events) = client(&server, &tokens, &tls, &plugins, "bob");
    alice.join("room-a").await.unwrap();
    bob.join("room-a").await.unwrap();
    bob.join("room-b").await.unwrap();
    alice.join("room-b").await.unwrap();

    let halfway = Arc::new(Notify::new());
    let sender = |c: ChatClient, halfway: Arc<Notify>| async move {
        let mut acks = Vec::new();
        for i in 0..PER_CLIENT {
            if i == PER_CLIENT / 2 {
                halfway.notify_one();
            }
            let to = match i % 3 {
                0 => Target::Room("room-a".into()),
                1 => Target::Room("room-b".into()),
                _ => Target::User(if c.user() == "alice" { "bob" } else { "alice" }.into()),
            };
            let ack = c
                .send(to, format!("{} #{i}", c.user()))
                .await
                .unwrap_or_else(|e| panic!("{} send {i} failed: {e}", c.user()));
            acks.push(ack);
        }
        acks
    };
    let a = tokio::spawn(sender(alice.clone(), halfway.clone()));
    let b = tokio::spawn(sender(bob.clone(), Arc::new(Notify::new())));
    halfway.notified().await;
    server.restart().await.expect("restart");

    let (alice_acks, bob_acks) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(alice_acks.len() + bob_acks.len(), 2 * PER_CLIENT);
    let (to_bob, bob_connects) = collect(&mut bob_events, "alice", PER_CLIENT).await;
    let (to_alice, alice_connects) = collect(&mut alice_events, "bob", PER_CLIENT).await;
    assert!(
        bob_connects >= 1 && alice_connects >= 1,
        "both clients reconnected"
    );

    for (who, got) in [("bob", &to_bob), ("alice", &to_alice)] {
        // No duplicates: each client message id once.
        let mut seen = HashMap::new();
        for m in got.iter() {
            *seen.entry((&m.from, &m.client_msg_id)).or_insert(0) += 1;
        }
        assert!(seen.values().all(|&n| n == 1), "{who} got a duplicate");
        // In order, without gaps, within each conversation.
        let mut by_conv: HashMap<&str, Vec<u64>> = HashMap::new();
        for m in got.iter() {
            by_conv.entry(&m.conversation).or_default().push(m.seq);
        }
        for (conv, seqs) in by_conv {
            assert!(
                seqs.windows(2).all(|w| w[1] > w[0]),
                "{who}: {conv} out of order: {seqs:?}"
            );
        }
    }
    // Every one of the other's sends arrived, matched by the sequence the server gave it.
    for (acks, got) in [(&alice_acks, &to_bob), (&bob_acks, &to_alice)] {
        for ack in acks {
            assert!(
                got.iter()
                    .any(|m| m.conversation == ack.conversation && m.seq == ack.seq),
                "{ack:?} not delivered"
            );
        }
    }
    // The short link's history agrees with what was delivered.
    let convs = bob.conversations().await.unwrap();
    let dm = convs.iter().find(|c| c.id == "dm:alice,bob").expect("dm");
    let page = bob.history(&dm.id, 0, 500).await.unwrap();
    assert_eq!(page.messages.len() as u64, dm.last_seq);
    assert_eq!(server.stats().restarts, 1);

    alice.shutdown().await;
    bob.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_restarts_without_its_history_is_caught_and_its_messages_delivered() {
    // A standalone server process that restarts loses its memory: its sequence numbers count
    // from 1 again. Before the history epoch, the client dropped the new messages as ones it
    // already had (1..=3 ≤ 3 delivered) and never joined its rooms again.
    let (plugins, tls, tokens, mut server_config) = setup();
    let first = Server::start(server_config.clone()).await.unwrap();

    let (alice, _alice_events) = client(&first, &tokens, &tls, &plugins, "alice");
    let (bob, mut bob_events) = client(&first, &tokens, &tls, &plugins, "bob");
    bob.join("lobby").await.unwrap();
    for i in 1..=3 {
        alice
            .send(Target::Room("lobby".into()), format!("before {i}"))
            .await
            .unwrap();
    }
    let (before, _) = collect(&mut bob_events, "alice", 3).await;
    assert_eq!(before.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3]);

    // Another server on the same addresses, with nothing of the first one's state.
    server_config.long_link_addr = first.long_link_addr();
    server_config.http_addr = first.http_addr();
    first.shutdown().await;
    let second = Server::start(server_config).await.unwrap();

    // Alice's sends go to the new server; the room starts at 1 there. Bob is only in the
    // room, which the new server does not know he is in: his client learns the new epoch
    // from the (empty) conversation list after its reconnect, and joins the room again.
    alice
        .send(Target::Room("lobby".into()), "after 1")
        .await
        .unwrap();
    alice
        .send(Target::Room("lobby".into()), "after 2")
        .await
        .unwrap();
    let mut reset = false;
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(GUARD, bob_events.recv()).await {
            Ok(Some(ChatEvent::Message { message, .. })) => got.push(message),
            Ok(Some(ChatEvent::HistoryReset { .. })) => reset = true,
            Ok(Some(_)) => {}
            Ok(None) => panic!("client stopped"),
            Err(_) => panic!("messages missing after the restart: got {got:?}"),
        }
    }
    assert!(reset, "the reset was reported");
    let mut texts: Vec<&str> = got.iter().map(|m| m.text.as_str()).collect();
    texts.sort_unstable();
    assert_eq!(texts, ["after 1", "after 2"]);
    let lobby: Vec<u64> = got
        .iter()
        .filter(|m| m.conversation == "room:lobby")
        .map(|m| m.seq)
        .collect();
    assert_eq!(lobby, [1, 2], "the new server's numbers, in order");
    alice.shutdown().await;
    bob.shutdown().await;
    second.shutdown().await;
}
