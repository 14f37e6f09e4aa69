//! The conversation list a page at a time, through the chat client and the short link: every
//! conversation once, pages of at most the limit, cursors that continue where a page ended;
//! and the catch-up after a reconnect, which reads the list a page at a time over the long
//! link.

use std::time::Duration;

use phobos_host_example::chat::{ChatClient, ChatError, ChatEvent, ChatEvents, ChatOptions, Via};
use phobos_host_example::config::HostConfig;
use phobos_host_example::plugins::LoadedPlugins;
use phobos_host_example::proto::{self, ErrorCode, Target, MAX_LIST_PAGE};
use phobos_host_example::server::{Server, ServerConfig, ServerHandle};
use phobos_host_example::tokens::TokenIssuer;
use phobos_plugin_api::NetKind;
use phobos_stn::LinkStatus;

/// More conversations than two full pages hold.
const MANY_ROOMS: usize = 2 * MAX_LIST_PAGE as usize + 5;
/// A guard against hangs, not a timing assertion.
const GUARD: Duration = Duration::from_secs(60);

/// A server and alice's client; alice is in `rooms` rooms (`r-000`, `r-001`, …) and in a
/// direct conversation with bob.
struct Setup {
    server: ServerHandle,
    plugins: LoadedPlugins,
    tokens: TokenIssuer,
    alice: ChatClient,
    events: ChatEvents,
    /// Alice's conversation ids, in id order.
    ids: Vec<String>,
}

impl Setup {
    async fn start(rooms: usize) -> Setup {
        let config = HostConfig::load(None).expect("built-in config");
        let plugins = LoadedPlugins::load(&config, &[]).expect("plugins");
        let tokens = TokenIssuer::new("test-secret");
        let server = Server::start(ServerConfig::new(plugins.codec.clone(), tokens.clone()))
            .await
            .expect("start");
        let (alice, events) = client(&server, &plugins, &tokens, "alice");
        let mut ids = Vec::new();
        for i in 0..rooms {
            let room = room(i);
            alice.join(&room).await.expect("join");
            ids.push(proto::room_conversation(&room));
        }
        alice
            .send(Target::User("bob".into()), "hi")
            .await
            .expect("send");
        ids.push(proto::direct_conversation("alice", "bob"));
        ids.sort();
        Setup {
            server,
            plugins,
            tokens,
            alice,
            events,
            ids,
        }
    }

    /// Another user's client.
    fn client(&self, user: &str) -> (ChatClient, ChatEvents) {
        client(&self.server, &self.plugins, &self.tokens, user)
    }

    /// Alice's next event.
    async fn next_event(&mut self) -> ChatEvent {
        match tokio::time::timeout(GUARD, self.events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("alice's client stopped"),
            Err(_) => panic!("no event from alice's client within {GUARD:?}"),
        }
    }

    /// Walks the list with pages of `limit` from the first, checking each page's size and
    /// cursor; returns the ids in the order received and the number of pages.
    async fn walk(&self, limit: usize) -> (Vec<String>, usize) {
        let mut walked = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = self
                .alice
                .conversations_page(after.as_deref(), limit as u32)
                .await
                .expect("page");
            pages += 1;
            assert!(page.conversations.len() <= limit, "{page:?}");
            walked.extend(page.conversations.iter().map(|c| c.id.clone()));
            let Some(next) = page.next else {
                return (walked, pages);
            };
            assert_eq!(
                page.conversations.len(),
                limit,
                "only the last page is short"
            );
            assert_eq!(
                Some(&next),
                walked.last(),
                "the cursor is the page's last id"
            );
            after = Some(next);
            assert!(pages <= self.ids.len(), "paging makes progress");
        }
    }

    async fn stop(self) {
        self.alice.shutdown().await;
        self.server.shutdown().await;
    }
}

fn client(
    server: &ServerHandle,
    plugins: &LoadedPlugins,
    tokens: &TokenIssuer,
    user: &str,
) -> (ChatClient, ChatEvents) {
    ChatClient::start(
        ChatOptions {
            user: user.to_owned(),
            token: tokens.issue(user).unwrap(),
            long_link: server.long_link_addr(),
            http: server.http_addr(),
            tls: None,
            http_tls: None,
            retry_count: 3,
            send_timeout: GUARD,
        },
        plugins,
    )
    .expect("client starts")
}

fn room(i: usize) -> String {
    format!("r-{i:03}")
}

#[tokio::test]
async fn conversations_returns_every_conversation_exactly_once_across_pages() {
    let setup = Setup::start(MANY_ROOMS).await;
    let before = setup.server.stats().http_requests;
    let all = setup.alice.conversations().await.expect("list");
    let requests = setup.server.stats().http_requests - before;

    let ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, setup.ids, "every conversation once, in id order");
    assert!(
        requests >= 3,
        "{} conversations take three pages, got {requests} request(s)",
        all.len()
    );
    let dm = all.iter().find(|c| c.id == "dm:alice,bob").expect("dm");
    assert_eq!(dm.last_seq, 1);
    assert_eq!(dm.members, ["alice", "bob"]);
    setup.stop().await;
}

#[tokio::test]
async fn a_page_holds_at_most_the_limit_and_its_cursor_continues_right_after_it() {
    // 24 conversations: pages of 5 end with a short page, pages of 6 with a full one.
    let setup = Setup::start(23).await;
    assert_eq!(setup.ids.len(), 24);
    for (limit, pages) in [(5, 5), (6, 4), (24, 1), (30, 1)] {
        let (walked, got_pages) = setup.walk(limit).await;
        assert_eq!(walked, setup.ids, "pages of {limit}");
        assert_eq!(got_pages, pages, "pages of {limit}");
    }
    setup.stop().await;
}

#[tokio::test]
async fn a_limit_of_zero_or_above_the_maximum_is_clamped() {
    let setup = Setup::start(MANY_ROOMS).await;
    let page = setup.alice.conversations_page(None, 0).await.expect("page");
    let ids: Vec<&str> = page.conversations.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [setup.ids[0].as_str()], "a limit of 0 counts as 1");
    assert_eq!(page.next.as_ref(), Some(&setup.ids[0]));

    let max = MAX_LIST_PAGE as usize;
    for limit in [MAX_LIST_PAGE + 1, u32::MAX] {
        let page = setup
            .alice
            .conversations_page(None, limit)
            .await
            .expect("page");
        let ids: Vec<&String> = page.conversations.iter().map(|c| &c.id).collect();
        assert_eq!(ids.len(), max, "a limit of {limit} counts as {max}");
        assert!(ids.iter().copied().eq(&setup.ids[..max]));
        assert_eq!(page.next.as_ref(), Some(&setup.ids[max - 1]));
    }
    setup.stop().await;
}

#[tokio::test]
async fn an_unknown_cursor_continues_after_its_place_and_a_malformed_one_is_refused() {
    // dm:alice,bob, room:r-000 … room:r-004.
    let setup = Setup::start(5).await;
    let page_after = |after: &'static str| {
        let alice = setup.alice.clone();
        async move {
            let page = alice.conversations_page(Some(after), 10).await;
            page.map(|p| {
                let ids: Vec<String> = p.conversations.into_iter().map(|c| c.id).collect();
                (ids, p.next)
            })
        }
    };
    // Not one of alice's conversations: the page starts at the next one in id order.
    let (ids, next) = page_after("room:r-001x").await.expect("page");
    assert_eq!(ids, ["room:r-002", "room:r-003", "room:r-004"]);
    assert_eq!(next, None);
    let (ids, _) = page_after("dm:alice,carol").await.expect("page");
    assert_eq!(ids, &setup.ids[1..], "every room, no dm");
    // At or past the end: an empty last page.
    for after in ["room:r-004", "room:zzz"] {
        assert_eq!(page_after(after).await.expect("page"), (vec![], None));
    }
    // Not a conversation id at all: refused, naming the field.
    for after in ["", "r-001", "room:", "dm:alice", "room:a b"] {
        match page_after(after).await {
            Err(ChatError::Server(e)) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{after:?}: {e}");
                assert!(e.message.contains("after"), "{after:?}: {e}");
            }
            other => panic!("{after:?}: {other:?}"),
        }
    }
    setup.stop().await;
}

#[tokio::test]
async fn a_walk_neither_skips_nor_repeats_while_conversations_change() {
    // dm:alice,bob, room:r-000 … room:r-011.
    let setup = Setup::start(12).await;
    let first = setup.alice.conversations_page(None, 5).await.expect("page");
    let mut walked: Vec<String> = first.conversations.into_iter().map(|c| c.id).collect();
    assert_eq!(walked, &setup.ids[..5]);
    let mut after = first.next;
    assert_eq!(after.as_deref(), Some("room:r-003"));

    // Meanwhile: messages in conversations before and after the cursor (newer activity),
    // and two new conversations, one sorting before the cursor and one after it.
    for i in [0, 3, 4, 11] {
        setup
            .alice
            .send(Target::Room(room(i)), "news")
            .await
            .expect("send");
    }
    setup
        .alice
        .send(Target::User("aaron".into()), "hi")
        .await
        .expect("send");
    setup.alice.join("s-new").await.expect("join");

    while let Some(cursor) = after {
        let page = setup
            .alice
            .conversations_page(Some(&cursor), 5)
            .await
            .expect("page");
        walked.extend(page.conversations.into_iter().map(|c| c.id));
        after = page.next;
    }
    // Every conversation of the start once, plus the new one after the cursor; the new one
    // before it shows up in the next walk.
    let mut want = setup.ids.clone();
    want.push("room:s-new".to_owned());
    assert_eq!(walked, want);
    let again: Vec<String> = setup
        .alice
        .conversations()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(again.contains(&"dm:aaron,alice".to_owned()), "{again:?}");
    assert_eq!(again.len(), want.len() + 1);
    setup.stop().await;
}

#[tokio::test]
async fn a_reconnect_catches_up_conversations_beyond_the_first_list_page() {
    // Alice's list: dm:alice,bob, room:r-000 … room:r-100, room:zz-marker. room:r-100 is on
    // the second page.
    let mut setup = Setup::start(MAX_LIST_PAGE as usize + 1).await;
    setup.alice.join("zz-marker").await.expect("join");
    let far = room(MAX_LIST_PAGE as usize);
    let (bob, _bob_events) = setup.client("bob");

    // Alice loses her network: her link drops and, without a network, stays down.
    setup.alice.stn().set_network(NetKind::None, "none");
    loop {
        if let ChatEvent::Link {
            status: LinkStatus::Disconnected,
            ..
        } = setup.next_event().await
        {
            break;
        }
    }
    // Stored while she is away, so she can only get it from the history.
    bob.send(Target::Room(far.clone()), "while away")
        .await
        .expect("send");

    setup.alice.stn().set_network(NetKind::Wifi, "wifi_test");
    setup
        .alice
        .stn()
        .make_sure_connected(phobos_host_example::chat::LINK);
    loop {
        if let ChatEvent::Link {
            status: LinkStatus::Connected(_),
            ..
        } = setup.next_event().await
        {
            break;
        }
    }
    // The client catches up before it handles the next push, and room:zz-marker sorts after
    // every other conversation: the marker reaches alice after the whole list was walked.
    bob.send(Target::Room("zz-marker".into()), "marker")
        .await
        .expect("send");
    let mut caught_up = None;
    loop {
        let ChatEvent::Message { message, via } = setup.next_event().await else {
            continue;
        };
        if message.text == "marker" {
            break;
        }
        if message.conversation == proto::room_conversation(&far) {
            caught_up = Some((message.text, via));
        }
    }
    assert_eq!(
        caught_up,
        Some(("while away".to_owned(), Via::History)),
        "the message in {far} (second page of the list) was caught up"
    );
    bob.shutdown().await;
    setup.stop().await;
}

/// A room whose member list alone is larger than a frame (here a 4 KiB frame and 50 members
/// with 64-byte names) is listed and joined with its member list cut: the list goes on past
/// it and every conversation is there. (The page holding it did not fit in a frame: the list
/// failed, and with it the catch-up of every conversation after a reconnect, and joining
/// the room.)
#[tokio::test]
async fn a_room_too_large_for_a_frame_is_listed_and_joined_with_its_members_cut() {
    let config = HostConfig::from_toml_str(
        "[plugins]\ncodec = { name = \"mars\", config = { client_version = 1, max_frame_len = 4096 } }\n",
        None,
    )
    .unwrap();
    let plugins = LoadedPlugins::load(&config, &[]).expect("plugins");
    let tokens = TokenIssuer::new("test-secret");
    let server = Server::start(ServerConfig::new(plugins.codec.clone(), tokens.clone()))
        .await
        .expect("start");
    let (alice, _events) = client(&server, &plugins, &tokens, "alice");
    alice.join("big").await.expect("join");
    alice.join("zzz").await.expect("join");
    let mut last = None;
    for u in 0..50 {
        let name = format!("{u:0>64}");
        let (c, _) = client(&server, &plugins, &tokens, &name);
        last = Some(tokio::time::timeout(GUARD, c.join("big")).await.unwrap());
        c.shutdown().await;
    }
    let joined = last.unwrap().expect("a join of the big room is answered");
    assert!(joined.members_cut && joined.members.len() < 51);
    let all = tokio::time::timeout(GUARD, alice.conversations())
        .await
        .unwrap()
        .expect("the list is answered");
    let ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["room:big", "room:zzz"]);
    assert!(all[0].members_cut && !all[1].members_cut);
    assert_eq!(
        all[0].members.first(),
        Some(&format!("{:0>64}", 0)),
        "the first, sorted"
    );
    alice.shutdown().await;
    server.shutdown().await;
}
