//! The server spoken to frame by frame: login, fan-out, dedupe, history, restart, and garbage.

use std::net::SocketAddr;
use std::sync::Arc;

use phobos_host_example::config::HostConfig;
use phobos_host_example::plugins::LoadedPlugins;
use phobos_host_example::proto::{
    self, Authed, Conversation, ConversationPage, HistoryPage, HistoryRequest, ListRequest,
    Message, Reply, SendAck, SendRequest, Target,
};
use phobos_host_example::server::{Server, ServerConfig, ServerHandle};
use phobos_host_example::tokens::TokenIssuer;
use phobos_plugin_api::codec::{IDENTIFY_SEQ, PUSH_SEQ};
use phobos_plugin_api::{CmdId, Decoded, FrameHead, PacketCodec, Seq};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn codec() -> Arc<dyn PacketCodec> {
    let config = HostConfig::load(None).expect("built-in config");
    LoadedPlugins::load(&config, &[]).expect("plugins").codec
}

async fn start() -> (ServerHandle, TokenIssuer) {
    let tokens = TokenIssuer::new("test-secret");
    let server = Server::start(ServerConfig::new(codec(), tokens.clone()))
        .await
        .expect("start");
    (server, tokens)
}

/// A raw long-link connection.
struct Raw {
    stream: TcpStream,
    codec: Arc<dyn PacketCodec>,
    buf: Vec<u8>,
    next_seq: u32,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw::connect_with(addr, codec()).await
    }

    async fn connect_with(addr: SocketAddr, codec: Arc<dyn PacketCodec>) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.expect("connect"),
            codec,
            buf: Vec::new(),
            next_seq: 1,
        }
    }

    async fn login(addr: SocketAddr, token: &str) -> Raw {
        Raw::login_with(addr, codec(), token).await
    }

    async fn login_with(addr: SocketAddr, codec: Arc<dyn PacketCodec>, token: &str) -> Raw {
        let mut raw = Raw::connect_with(addr, codec).await;
        let reply = raw.identify(token).await;
        assert_eq!(reply, vec![0x00], "token {token} accepted");
        raw
    }

    async fn identify(&mut self, token: &str) -> Vec<u8> {
        let mut body = vec![0x01];
        body.extend_from_slice(&(token.len() as u16).to_be_bytes());
        body.extend_from_slice(token.as_bytes());
        let head = FrameHead::new(phobos_auth_basic::DEFAULT_IDENTIFY_CMD, IDENTIFY_SEQ);
        self.write(head, &body).await;
        let (h, body) = self.read().await.expect("identify reply");
        assert_eq!(h, head);
        body
    }

    async fn write(&mut self, head: FrameHead, body: &[u8]) {
        let mut out = Vec::new();
        self.codec
            .encode(head, body, &[], &mut out)
            .expect("encode");
        self.stream.write_all(&out).await.expect("write");
    }

    /// The next frame, or `None` at EOF.
    async fn read(&mut self) -> Option<(FrameHead, Vec<u8>)> {
        loop {
            if let Decoded::Frame(f) = self.codec.decode(&self.buf).expect("valid frame") {
                let body = self.buf[f.body.clone()].to_vec();
                self.buf.drain(..f.len);
                return Some((f.head, body));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a request and returns its reply body, skipping pushes (returned separately).
    async fn call(&mut self, cmd: CmdId, body: &[u8]) -> (Vec<u8>, Vec<Message>) {
        let seq = Seq(self.next_seq);
        self.next_seq += 1;
        self.write(FrameHead::new(cmd, seq), body).await;
        let mut pushes = Vec::new();
        loop {
            let (head, body) = self.read().await.expect("reply");
            if head.seq == PUSH_SEQ {
                pushes.push(serde_json::from_slice(&body).expect("push body"));
                continue;
            }
            assert_eq!(head.seq, seq);
            return (body, pushes);
        }
    }

    async fn send(&mut self, id: &str, to: Target, text: &str) -> SendAck {
        let req = SendRequest {
            client_msg_id: id.to_owned(),
            to,
            text: text.to_owned(),
        };
        let (body, _) = self
            .call(proto::CMD_SEND, &serde_json::to_vec(&req).unwrap())
            .await;
        match serde_json::from_slice::<Reply<SendAck>>(&body).expect("send reply") {
            Reply::Ok(ack) => ack,
            Reply::Error(e) => panic!("send refused: {e}"),
        }
    }

    async fn join(&mut self, room: &str) {
        let body = format!(r#"{{"room":"{room}"}}"#);
        let (reply, _) = self.call(proto::CMD_JOIN, body.as_bytes()).await;
        assert!(matches!(
            serde_json::from_slice::<Reply<Conversation>>(&reply),
            Ok(Reply::Ok(_))
        ));
    }

    /// A conversation list page for the raw request body `body`.
    async fn list(&mut self, body: &[u8]) -> ConversationPage {
        let (reply, _) = self.call(proto::CMD_CONVERSATIONS, body).await;
        match serde_json::from_slice::<Reply<ConversationPage>>(&reply).expect("list reply") {
            Reply::Ok(page) => page,
            Reply::Error(e) => panic!("list refused: {e}"),
        }
    }

    async fn next_push(&mut self) -> Message {
        let (head, body) = self.read().await.expect("push");
        assert_eq!(head, FrameHead::new(proto::CMD_PUSH_MESSAGE, PUSH_SEQ));
        serde_json::from_slice(&body).expect("push body")
    }
}

#[tokio::test]
async fn a_room_message_is_pushed_to_other_members_once_even_when_the_send_is_retried() {
    let (server, tokens) = start().await;
    let addr = server.long_link_addr();
    let mut alice = Raw::login(addr, &tokens.issue("alice").unwrap()).await;
    let mut bob = Raw::login(addr, &tokens.issue("bob").unwrap()).await;
    bob.join("lobby").await;

    let ack = alice
        .send("a-1", Target::Room("lobby".into()), "hello")
        .await;
    assert_eq!((ack.seq, ack.duplicate), (1, false));
    let push = bob.next_push().await;
    assert_eq!(
        (push.from.as_str(), push.text.as_str(), push.seq),
        ("alice", "hello", 1)
    );

    // The same send again (a retry after a lost reply): same sequence, nothing pushed.
    let retry = alice
        .send("a-1", Target::Room("lobby".into()), "hello")
        .await;
    assert_eq!((retry.seq, retry.duplicate), (1, true));
    let second = alice
        .send("a-2", Target::Room("lobby".into()), "again")
        .await;
    assert_eq!(second.seq, 2);
    assert_eq!(bob.next_push().await.client_msg_id, "a-2");
    assert_eq!(server.stats().duplicate_sends, 1);
    assert_eq!(server.stats().messages_stored, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_bad_token_is_rejected_and_the_connection_closed() {
    let (server, tokens) = start().await;
    let mut raw = Raw::connect(server.long_link_addr()).await;
    let forged = TokenIssuer::new("other-secret").issue("mallory").unwrap();
    assert_eq!(raw.identify(&forged).await, vec![0x01]);
    assert!(raw.read().await.is_none(), "closed after the rejection");

    // Without identifying, requests are refused but echo works.
    let mut anon = Raw::connect(server.long_link_addr()).await;
    let (body, _) = anon.call(proto::CMD_ECHO, b"ping").await;
    assert_eq!(body, b"ping");
    let (body, _) = anon.call(proto::CMD_CONVERSATIONS, b"{}").await;
    assert!(String::from_utf8_lossy(&body).contains("unauthenticated"));
    assert_eq!(server.stats().logins_rejected, 1);
    let _ = tokens;
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_closes_only_its_own_connection() {
    let (server, tokens) = start().await;
    let addr = server.long_link_addr();
    let mut alice = Raw::login(addr, &tokens.issue("alice").unwrap()).await;

    let mut junk = TcpStream::connect(addr).await.unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\xff garbage")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = junk.read_to_end(&mut rest).await; // the server closes it
    assert!(rest.is_empty());

    // HTTP port: garbage gets an error or a close, never a crash.
    let mut junk = TcpStream::connect(server.http_addr()).await.unwrap();
    junk.write_all(b"\x16\x03\x01\x00\x05hello\r\n\r\n")
        .await
        .unwrap();
    let _ = junk.read_to_end(&mut rest).await;

    let (body, _) = alice.call(proto::CMD_ECHO, b"still here").await;
    assert_eq!(body, b"still here");
    assert_eq!(server.stats().malformed_closed, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn history_and_conversations_survive_a_restart_and_are_served_over_http() {
    let (server, tokens) = start().await;
    let addr = server.long_link_addr();
    let alice_token = tokens.issue("alice").unwrap();
    let mut alice = Raw::login(addr, &alice_token).await;
    for i in 1..=3 {
        alice
            .send(
                &format!("m{i}"),
                Target::User("bob".into()),
                &format!("hi {i}"),
            )
            .await;
    }
    server.restart().await.expect("restart");
    assert_eq!(server.long_link_addr(), addr, "same address after restart");
    assert!(alice.read().await.is_none(), "old connection dropped");

    let bob_token = tokens.issue("bob").unwrap();
    let mut bob = Raw::login(addr, &bob_token).await;
    let req = HistoryRequest {
        conversation: proto::direct_conversation("alice", "bob"),
        after_seq: 1,
        limit: 10,
        before_seq: None,
    };
    let (body, _) = bob
        .call(proto::CMD_HISTORY, &serde_json::to_vec(&req).unwrap())
        .await;
    let Reply::Ok(page) = serde_json::from_slice::<Reply<HistoryPage>>(&body).unwrap() else {
        panic!("history refused: {}", String::from_utf8_lossy(&body));
    };
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [2, 3]);
    assert!(!page.more);

    // The same over the short link.
    let http = post(
        server.http_addr(),
        proto::PATH_CONVERSATIONS,
        &serde_json::to_vec(&Authed {
            token: bob_token.clone(),
            request: serde_json::json!({}),
        })
        .unwrap(),
    )
    .await;
    assert!(http.starts_with("HTTP/1.1 200"), "{http}");
    assert!(
        http.contains(r#""id":"dm:alice,bob""#) && http.contains(r#""last_seq":3"#),
        "{http}"
    );
    let http = post(
        server.http_addr(),
        proto::PATH_HISTORY,
        &serde_json::to_vec(&Authed {
            token: "bob.00000000000000000000000000000000".to_owned(),
            request: req,
        })
        .unwrap(),
    )
    .await;
    assert!(http.contains("unauthenticated"), "{http}");
    server.shutdown().await;
}

/// [`post`], expecting a 200 with a JSON [`Reply`].
async fn post_reply<T: DeserializeOwned>(addr: SocketAddr, path: &str, body: &[u8]) -> Reply<T> {
    let http = post(addr, path, body).await;
    assert!(http.starts_with("HTTP/1.1 200"), "{http}");
    let (_, body) = http.split_once("\r\n\r\n").expect("a head and a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A minimal HTTP/1.1 POST; returns the whole response.
async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_history_page_too_large_for_one_frame_is_cut_and_the_rest_can_be_paged() {
    // The client's catch-up asks for 500 messages at once: a page that would not fit in one
    // frame is cut to fit, so a member can always page through a conversation.
    let (server, tokens) = start().await;
    let mut alice = Raw::login(server.long_link_addr(), &tokens.issue("alice").unwrap()).await;

    // 60 messages of the longest text, each of whose bytes JSON writes as `\u0001`
    // (~24 KiB a message): ~1.4 MiB in all, more than the codec's 1 MiB frame.
    let text = "\u{1}".repeat(proto::MAX_TEXT_LEN);
    let total = 60u64;
    for i in 0..total {
        let req = SendRequest {
            client_msg_id: format!("m{i}"),
            to: Target::Room("big".into()),
            text: text.clone(),
        };
        let (reply, _) = alice
            .call(proto::CMD_SEND, &serde_json::to_vec(&req).unwrap())
            .await;
        assert!(matches!(
            serde_json::from_slice::<Reply<SendAck>>(&reply),
            Ok(Reply::Ok(_))
        ));
    }

    let mut after_seq = 0;
    let mut pages = 0;
    loop {
        let req = HistoryRequest {
            conversation: proto::room_conversation("big"),
            after_seq,
            limit: proto::MAX_HISTORY_PAGE,
            before_seq: None,
        };
        // A reply, not a closed link (`call` panics on one).
        let (reply, _) = alice
            .call(proto::CMD_HISTORY, &serde_json::to_vec(&req).unwrap())
            .await;
        let page = match serde_json::from_slice::<Reply<HistoryPage>>(&reply).unwrap() {
            Reply::Ok(page) => page,
            Reply::Error(e) => panic!("history refused: {e}"),
        };
        pages += 1;
        for m in &page.messages {
            assert_eq!(m.seq, after_seq + 1, "pages are contiguous");
            assert_eq!(m.text, text);
            after_seq = m.seq;
        }
        if !page.more {
            break;
        }
        assert!(pages < 10, "paging makes progress");
    }
    assert_eq!(after_seq, total, "every message came back");
    assert!(pages >= 2, "the page was cut to fit a frame");
    assert_eq!(server.stats().long_link_open, 1, "the link stayed up");
    server.shutdown().await;
}

#[tokio::test]
async fn history_read_backwards_gives_the_newest_messages_first_and_pages_to_the_oldest() {
    // `/history` shows a conversation's latest messages: a page read forward from 0 would
    // show its oldest ones instead.
    let (server, tokens) = start().await;
    let mut alice = Raw::login(server.long_link_addr(), &tokens.issue("alice").unwrap()).await;
    for i in 1..=12 {
        alice
            .send(
                &format!("m{i}"),
                Target::User("bob".into()),
                &format!("hi {i}"),
            )
            .await;
    }
    let conversation = proto::direct_conversation("alice", "bob");
    let mut read = async |after_seq: u64, before_seq: u64, limit: u32| {
        let req = HistoryRequest {
            conversation: conversation.clone(),
            after_seq,
            limit,
            before_seq: Some(before_seq),
        };
        let (body, _) = alice
            .call(proto::CMD_HISTORY, &serde_json::to_vec(&req).unwrap())
            .await;
        let Reply::Ok(page) = serde_json::from_slice::<Reply<HistoryPage>>(&body).unwrap() else {
            panic!("history refused: {}", String::from_utf8_lossy(&body));
        };
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        (seqs, page.more)
    };
    assert_eq!(read(0, u64::MAX, 5).await, (vec![8, 9, 10, 11, 12], true));
    assert_eq!(read(0, 8, 5).await, (vec![3, 4, 5, 6, 7], true));
    assert_eq!(read(0, 3, 5).await, (vec![1, 2], false));
    assert_eq!(
        read(1, 3, 5).await,
        (vec![2], false),
        "after_seq still bounds it"
    );
    assert_eq!(read(0, 1, 5).await, (vec![], false));
    assert_eq!(read(0, u64::MAX, 500).await.0, (1..=12).collect::<Vec<_>>());

    // The field is optional: a request without it (an older client's) reads forward.
    let http = post(
        server.http_addr(),
        proto::PATH_HISTORY,
        &serde_json::to_vec(&serde_json::json!({
            "token": tokens.issue("bob").unwrap(),
            "request": {"conversation": conversation, "after_seq": 0, "limit": 2},
        }))
        .unwrap(),
    )
    .await;
    assert!(
        http.contains(r#""seq":1"#) && http.contains(r#""seq":2"#) && !http.contains(r#""seq":3"#),
        "{http}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_empty_list_request_is_the_first_page_of_the_largest_size_on_both_links() {
    let (server, tokens) = start().await;
    let token = tokens.issue("alice").unwrap();
    let mut alice = Raw::login(server.long_link_addr(), &token).await;
    // One more conversation than a page holds.
    let max = proto::MAX_LIST_PAGE as usize;
    for i in 0..=max {
        alice.join(&format!("r-{i:03}")).await;
    }
    let first_page = |page: &ConversationPage| {
        assert_eq!(page.conversations.len(), max);
        assert_eq!(page.conversations[0].id, "room:r-000");
        assert_eq!(
            page.next.as_deref(),
            Some(format!("room:r-{:03}", max - 1).as_str())
        );
    };

    // The long link: no body, or an object without fields.
    for body in [&b""[..], b"{}", br#"{"after":null}"#] {
        first_page(&alice.list(body).await);
    }
    let last = alice
        .list(
            &serde_json::to_vec(&ListRequest {
                after: Some(format!("room:r-{:03}", max - 1)),
                limit: 5,
            })
            .unwrap(),
        )
        .await;
    let ids: Vec<&str> = last.conversations.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [format!("room:r-{max:03}")]);
    assert_eq!(last.next, None);

    // The short link: `request` absent, `null`, or `{}`.
    for body in [
        format!(r#"{{"token":"{token}"}}"#),
        format!(r#"{{"token":"{token}","request":null}}"#),
        format!(r#"{{"token":"{token}","request":{{}}}}"#),
    ] {
        let reply = post_reply::<ConversationPage>(
            server.http_addr(),
            proto::PATH_CONVERSATIONS,
            body.as_bytes(),
        )
        .await;
        let Reply::Ok(page) = reply else {
            panic!("refused: {reply:?} for {body}");
        };
        first_page(&page);
    }
    // A field the request does not have is refused, not ignored.
    let (reply, _) = alice
        .call(proto::CMD_CONVERSATIONS, br#"{"cursor":"room:r-005"}"#)
        .await;
    assert!(String::from_utf8_lossy(&reply).contains("bad_request"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_list_page_too_large_for_one_frame_is_cut_and_the_rest_can_be_paged() {
    // A 4 KiB frame limit, and rooms of twelve members with 60-byte names: each listed room
    // takes ~800 bytes, so six of them (a page of the default limit) do not fit in one frame.
    let config = HostConfig::from_toml_str(
        r#"
        [plugins]
        codec = { name = "mars", config = { client_version = 1, max_frame_len = 4096 } }
        "#,
        None,
    )
    .expect("config");
    let small = LoadedPlugins::load(&config, &[]).expect("plugins").codec;
    assert_eq!(small.max_frame_len(), 4096);
    let tokens = TokenIssuer::new("test-secret");
    let server = Server::start(ServerConfig::new(small.clone(), tokens.clone()))
        .await
        .expect("start");
    let addr = server.long_link_addr();
    let rooms = 6;
    let mut first = None;
    for u in 0..12 {
        let user = format!("{u:0>60}");
        let mut raw = Raw::login_with(addr, small.clone(), &tokens.issue(&user).unwrap()).await;
        for r in 0..rooms {
            raw.join(&format!("big-{r}")).await;
        }
        first.get_or_insert(raw);
    }
    let mut alice = first.expect("a member");

    let mut walked = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let req = ListRequest {
            after,
            limit: proto::MAX_LIST_PAGE,
        };
        // A page, not an error saying the reply does not fit (`list` panics on one).
        let page = alice.list(&serde_json::to_vec(&req).unwrap()).await;
        pages += 1;
        assert!(!page.conversations.is_empty(), "paging makes progress");
        assert!(page.conversations.iter().all(|c| c.members.len() == 12));
        walked.extend(page.conversations.into_iter().map(|c| c.id));
        after = page.next;
        if after.is_none() {
            break;
        }
        assert!(pages < 10, "paging makes progress");
    }
    let want: Vec<String> = (0..rooms).map(|r| format!("room:big-{r}")).collect();
    assert_eq!(walked, want, "every room once, in order");
    assert!(pages >= 2, "the page was cut to fit a frame");
    server.shutdown().await;
}

#[tokio::test]
async fn a_member_that_asks_much_and_reads_nothing_is_closed_before_its_replies_pile_up() {
    // ~1 MiB of history (60 messages of ~24 KiB of JSON), then a member writes 200 history
    // requests of ~100 bytes in a row and reads nothing: every reply is a ~1 MiB page. The
    // server queued all of them (200 MiB held for a connection that does not read); now it
    // closes the connection once `MAX_QUEUED` bytes wait.
    let (server, tokens) = start().await;
    let mut alice = Raw::login(server.long_link_addr(), &tokens.issue("alice").unwrap()).await;
    let text = "\u{1}".repeat(proto::MAX_TEXT_LEN);
    for i in 0..60 {
        let req = SendRequest {
            client_msg_id: format!("m{i}"),
            to: Target::Room("big".into()),
            text: text.clone(),
        };
        alice
            .call(proto::CMD_SEND, &serde_json::to_vec(&req).unwrap())
            .await;
    }
    let req = HistoryRequest {
        conversation: proto::room_conversation("big"),
        after_seq: 0,
        limit: proto::MAX_HISTORY_PAGE,
        before_seq: None,
    };
    let body = serde_json::to_vec(&req).unwrap();
    let mut burst = Vec::new();
    for seq in 100..300 {
        let head = FrameHead::new(proto::CMD_HISTORY, Seq(seq));
        alice.codec.encode(head, &body, &[], &mut burst).unwrap();
    }
    alice.stream.write_all(&burst).await.unwrap();
    // Now read: what the socket and the queue held, then the end of the connection
    // (before, all 200 pages came, and the connection stayed).
    let mut got = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        alice.stream.read_to_end(&mut got),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "the server closed the connection"
    );
    assert!(
        got.len() < 100 << 20,
        "{} bytes came: not every reply",
        got.len()
    );
    assert_eq!(server.stats().stalled_closed, 1);
    assert_eq!(server.stats().long_link_open, 0);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_identifies_is_closed() {
    let (server, tokens) = start().await;
    let mut silent = Raw::connect(server.long_link_addr()).await;
    // Virtual time: the server's identify deadline passes while nothing else is to be done.
    assert!(silent.read().await.is_none(), "closed");
    assert_eq!(server.stats().stalled_closed, 1);
    // One that identified in time stays.
    let mut alice = Raw::login(server.long_link_addr(), &tokens.issue("alice").unwrap()).await;
    tokio::time::sleep(phobos_host_example::server::IDENTIFY_TIMEOUT * 2).await;
    alice.join("lobby").await;
    assert_eq!(server.stats().stalled_closed, 1);
    server.shutdown().await;
}

/// Reads until the server closes (`true`) or an hour of virtual time passes (`false`).
async fn closed_within_an_hour(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(3600), s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_https_connection_that_never_handshakes_is_closed() {
    // Before, the TLS accept had no deadline: a silent peer held a task and a descriptor for
    // ever (hyper's header timeout starts after the handshake).
    let tls = phobos_host_example::tls::DemoTls::generate().unwrap();
    let mut config = ServerConfig::new(codec(), TokenIssuer::new("s"));
    config.http_tls = Some(tls.server.clone());
    let server = Server::start(config).await.unwrap();
    let mut silent = TcpStream::connect(server.http_addr()).await.unwrap();
    assert!(closed_within_an_hour(&mut silent).await);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_http_request_whose_body_stalls_is_answered_and_closed() {
    // Before, a body that stopped coming held the connection for ever.
    let server = Server::start(ServerConfig::new(codec(), TokenIssuer::new("s")))
        .await
        .unwrap();
    let mut s = TcpStream::connect(server.http_addr()).await.unwrap();
    s.write_all(b"POST /v1/history HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n{\"tok")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(3600),
        s.read_to_end(&mut reply),
    )
    .await;
    assert!(read.is_ok(), "still open after an hour");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    server.shutdown().await;
}
