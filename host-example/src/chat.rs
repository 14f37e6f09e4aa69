//! The chat client: a [`phobos_stn::Client`] plus the app logic that turns server pushes into
//! an exactly-once, in-order message stream.
//!
//! - [`ChatClient::send`] is a long-link task carrying a [`SendRequest`] with a client
//!   message id; Phobos retries it across reconnects and the server drops the retries it has
//!   already stored, so a message is stored once whatever happened to the link.
//! - Pushes arrive on the long link. Each message has a sequence number in its conversation;
//!   the client remembers the last one it delivered per conversation. A push it already has
//!   is dropped; a push after a gap, a push stream that fell behind, or a long link that came
//!   back after going down makes it fetch the conversation's history from the last delivered
//!   sequence on. So [`ChatEvents`] yields every message once, in sequence order per
//!   conversation.
//! - The conversation list and history browsing ([`ChatClient::conversations`],
//!   [`ChatClient::conversations_page`], [`ChatClient::history`]) go over the short link, a
//!   page per request (see [`crate::proto`]'s "Paging").
//!
//! Design: the catch-up after a reconnect uses the long link, not the short link: on the long
//! link the request travels behind the identify frame on the same connection, so the server
//! has put the user back online before it reads the history, and a message stored in
//! between is pushed rather than missed. Over the short link (another connection) a message
//! stored between the history read and the identify would reach the client only with the
//! conversation's next message.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use phobos_plugin_api::CmdId;
use phobos_stn::{
    Client, ClientConfig, LinkError, LinkStatus, StreamError, TaskError, TaskSpec, TlsConfig,
    TlsConnector,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, Mutex};

use crate::plugins::LoadedPlugins;
use crate::proto::{
    self, Conversation, ConversationPage, HistoryPage, HistoryRequest, JoinRequest, ListRequest,
    Message, Reply, SendAck, SendRequest, ServerError, Target,
};

/// The long link's name.
pub const LINK: &str = "default-longlink";

/// How to reach the server, as whom.
#[derive(Clone, Debug)]
pub struct ChatOptions {
    /// The user name.
    pub user: String,
    /// The login token (see [`crate::tokens`]).
    pub token: String,
    /// The server's long-link address.
    pub long_link: SocketAddr,
    /// The server's short-link (HTTP) address.
    pub http: SocketAddr,
    /// TLS for the long link: the CA to trust and the name to verify; `None` for plain TCP.
    pub tls: Option<TrustedServer>,
    /// TLS for the short link (HTTPS), verified the same way; `None` for plain HTTP.
    pub http_tls: Option<TrustedServer>,
    /// Extra attempts per send after the first.
    pub retry_count: u32,
    /// The longest a send may take, retries included.
    pub send_timeout: Duration,
}

/// The server identity a TLS client verifies.
#[derive(Clone, Debug)]
pub struct TrustedServer {
    /// The CA certificate (DER).
    pub ca_der: Vec<u8>,
    /// The name in the server's certificate.
    pub server_name: String,
}

/// A running chat client. Cloning gives another handle to the same client.
#[derive(Clone, Debug)]
pub struct ChatClient {
    inner: Arc<Inner>,
}

/// What the client tells the app.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChatEvent {
    /// A message for the app: each exactly once, in sequence order per conversation.
    Message {
        /// The message.
        message: Message,
        /// How it arrived.
        via: Via,
    },
    /// The long link changed status.
    Link {
        /// The new status.
        status: LinkStatus,
        /// Why it went down or failed.
        reason: Option<LinkError>,
    },
    /// A conversation was caught up from its history.
    CaughtUp {
        /// The conversation.
        conversation: String,
        /// Messages that came from the history.
        fetched: usize,
    },
    /// A push the client already had (delivered earlier from the history) was dropped.
    DuplicatePush {
        /// The conversation.
        conversation: String,
        /// The sequence number.
        seq: u64,
    },
    /// Catching up failed; it is tried again at the next gap or reconnect.
    CatchUpFailed {
        /// The conversation.
        conversation: String,
        /// Why.
        error: String,
    },
    /// The server names another history epoch than before: it restarted without its
    /// history, and its sequence numbers count from 1 again. Every conversation starts over:
    /// the new server's messages are delivered from its first, none taken for one the
    /// client already has.
    HistoryReset {
        /// The new epoch ([`Message::epoch`]).
        epoch: u64,
    },
}

/// How a message reached the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A server push.
    Push,
    /// A history fetch after a gap or a reconnect.
    History,
}

/// The app's end of the event stream.
#[derive(Debug)]
pub struct ChatEvents {
    rx: mpsc::UnboundedReceiver<ChatEvent>,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// Phobos could not complete the task (its error names the level: timeout, dial, …).
    #[error("task failed: {0}")]
    Task(#[from] TaskError),
    /// The server refused the request.
    #[error("server refused: {0}")]
    Server(#[from] ServerError),
    /// The server's answer is not what the protocol says.
    #[error("unexpected answer from the server: {0}")]
    BadAnswer(String),
}

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configured auth plugin refused the token.
    #[error("the auth plugin refused the token: {0}")]
    Auth(String),
    /// The TLS settings are invalid.
    #[error("TLS settings: {0}")]
    Tls(String),
    /// Phobos refused the configuration.
    #[error("client configuration: {0}")]
    Config(String),
}

#[derive(Debug)]
struct Inner {
    stn: Client,
    user: String,
    token: String,
    id_prefix: String,
    next_id: AtomicU64,
    retry_count: u32,
    send_timeout: Duration,
    http: SocketAddr,
    /// The last delivered sequence number per conversation, in the server's epoch.
    delivered: Mutex<Delivered>,
    /// The event stream's sender, weak so that the stream still ends when the client stops.
    events: mpsc::WeakUnboundedSender<ChatEvent>,
    /// The rooms joined, joined again when the server has lost its history.
    rooms: Mutex<BTreeSet<String>>,
}

/// How far the client has delivered each conversation.
#[derive(Debug, Default)]
struct Delivered {
    /// The server's history epoch the numbers count in (0: none named yet).
    epoch: u64,
    /// The last delivered sequence number per conversation.
    seqs: HashMap<String, u64>,
    /// The epoch changed and the rooms joined are not yet joined again.
    rejoin: bool,
}

impl Delivered {
    /// Takes in an epoch the server named. Another one than before (the server lost its
    /// history) starts every conversation over, reported on `events` (while the client
    /// runs); returns whether it did. 0 (a server that names none) changes nothing.
    fn see_epoch(&mut self, epoch: u64, events: &mpsc::WeakUnboundedSender<ChatEvent>) -> bool {
        if epoch == 0 || epoch == self.epoch {
            return false;
        }
        let known = std::mem::replace(&mut self.epoch, epoch);
        if known == 0 {
            return false;
        }
        tracing::warn!(
            old = known,
            new = epoch,
            "the server's history epoch changed: conversations start over"
        );
        self.seqs.clear();
        self.rejoin = true;
        if let Some(events) = events.upgrade() {
            let _ = events.send(ChatEvent::HistoryReset { epoch });
        }
        true
    }
}

impl ChatClient {
    /// Starts a client for `opts` with the configured plugins (the auth plugin is built for
    /// this user's token) and connects the long link. Must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StartError`].
    pub fn start(
        opts: ChatOptions,
        plugins: &LoadedPlugins,
    ) -> Result<(ChatClient, ChatEvents), StartError> {
        let auth = plugins
            .auth_for(&opts.token)
            .map_err(|e| StartError::Auth(e.to_string()))?;
        let mut config = ClientConfig::builder(plugins.codec.clone())
            .link_addrs(LINK, [opts.long_link.into()])
            .auth(auth)
            .heartbeat(plugins.heartbeat.clone());
        let tls_config = |t: &TrustedServer| {
            TlsConfig::builder(t.server_name.clone())
                .ca_der(t.ca_der.clone())
                .build()
                .map_err(|e| StartError::Tls(e.to_string()))
        };
        if let Some(tls) = &opts.tls {
            config = config.connector(Arc::new(TlsConnector::new(tls_config(tls)?)));
        }
        if let Some(tls) = &opts.http_tls {
            config = config.short_link_tls(tls_config(tls)?);
        }
        let config = config
            .build()
            .map_err(|e| StartError::Config(e.to_string()))?;
        let stn = Client::start(config).map_err(|e| StartError::Config(e.to_string()))?;
        // Subscribed before anything can connect the link (going to the foreground connects
        // a keep-alive link at once): the streams carry changes from now on.
        let pushes = stn.subscribe_pushes();
        let links = stn.link_events();
        stn.set_foreground(true);
        stn.set_account(true);
        stn.make_sure_connected(LINK);
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            stn,
            user: opts.user,
            token: opts.token,
            id_prefix: run_nonce(),
            next_id: AtomicU64::new(1),
            retry_count: opts.retry_count,
            send_timeout: opts.send_timeout,
            http: opts.http,
            delivered: Mutex::new(Delivered::default()),
            events: tx.downgrade(),
            rooms: Mutex::new(BTreeSet::new()),
        });
        tokio::spawn(pump(inner.clone(), pushes, links, tx));
        Ok((ChatClient { inner }, ChatEvents { rx }))
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.inner.user
    }

    /// The Phobos client underneath.
    pub fn stn(&self) -> &Client {
        &self.inner.stn
    }

    /// The short-link (HTTP) address.
    pub fn http_addr(&self) -> SocketAddr {
        self.inner.http
    }

    /// A fresh client message id (unique per run of this process).
    pub fn next_client_msg_id(&self) -> String {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.inner.id_prefix)
    }

    /// Sends `text` to a room or a user with a fresh client message id.
    ///
    /// # Errors
    ///
    /// [`ChatError`].
    pub async fn send(&self, to: Target, text: impl Into<String>) -> Result<SendAck, ChatError> {
        let id = self.next_client_msg_id();
        self.send_with_id(id, to, text).await
    }

    /// Sends with a given client message id (a retry by the app reuses it).
    ///
    /// # Errors
    ///
    /// [`ChatError`].
    pub async fn send_with_id(
        &self,
        client_msg_id: String,
        to: Target,
        text: impl Into<String>,
    ) -> Result<SendAck, ChatError> {
        let req = SendRequest {
            client_msg_id,
            to,
            text: text.into(),
        };
        self.inner.call(proto::CMD_SEND, &req).await
    }

    /// Joins a room.
    ///
    /// # Errors
    ///
    /// [`ChatError`].
    pub async fn join(&self, room: &str) -> Result<Conversation, ChatError> {
        let conv: Conversation = self
            .inner
            .call(
                proto::CMD_JOIN,
                &JoinRequest {
                    room: room.to_owned(),
                },
            )
            .await?;
        self.inner.rooms.lock().await.insert(room.to_owned());
        // Messages from before the join are history, not news.
        let mut delivered = self.inner.delivered.lock().await;
        delivered.see_epoch(conv.epoch, &self.inner.events);
        delivered
            .seqs
            .entry(conv.id.clone())
            .or_insert(conv.last_seq);
        Ok(conv)
    }

    /// Marks every conversation the user has as read up to now, so only newer messages are
    /// delivered as events. Uses the short link.
    ///
    /// # Errors
    ///
    /// [`ChatError`].
    pub async fn start_from_now(&self) -> Result<Vec<Conversation>, ChatError> {
        let convs = self.conversations().await?;
        let mut delivered = self.inner.delivered.lock().await;
        for c in &convs {
            delivered.see_epoch(c.epoch, &self.inner.events);
            delivered.seqs.entry(c.id.clone()).or_insert(c.last_seq);
        }
        Ok(convs)
    }

    /// All the user's conversations, in id order, over the short link: it asks for pages of
    /// [`proto::MAX_LIST_PAGE`] (see [`conversations_page`](Self::conversations_page)) until
    /// the last one. Each conversation the user had when it started comes back exactly once,
    /// whatever is sent meanwhile; one joined meanwhile may or may not be included.
    ///
    /// # Errors
    ///
    /// [`ChatError`] of the first page request that failed (the pages already fetched are
    /// dropped); [`ChatError::BadAnswer`] when the server's cursor does not move forward.
    pub async fn conversations(&self) -> Result<Vec<Conversation>, ChatError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .conversations_page(after.as_deref(), proto::MAX_LIST_PAGE)
                .await?;
            all.extend(page.conversations);
            match next_cursor(after.as_deref(), page.next)? {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// One page of the user's conversations, over the short link: at most `limit` of them
    /// (0 counts as 1, more than [`proto::MAX_LIST_PAGE`] as that many; the server may return
    /// fewer to fit a page into one frame), in id order, starting after the conversation id
    /// `after` (`None`: from the first). Pass the page's [`next`](ConversationPage::next) as
    /// `after` to get the following page; it is `None` on the last page.
    ///
    /// `after` need not be one of the user's conversations: the page starts at the first one
    /// whose id sorts after it, and is empty (with no `next`) past the last one.
    ///
    /// # Errors
    ///
    /// [`ChatError`]; a `after` that is not shaped like a conversation id (`room:NAME` or
    /// `dm:A,B`) is refused by the server with [`proto::ErrorCode::BadRequest`].
    pub async fn conversations_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ConversationPage, ChatError> {
        let req = ListRequest {
            after: after.map(str::to_owned),
            limit,
        };
        self.inner.short_call(proto::PATH_CONVERSATIONS, &req).await
    }

    /// Up to `limit` messages of `conversation` after `after_seq`, over the short link.
    ///
    /// # Errors
    ///
    /// [`ChatError`].
    pub async fn history(
        &self,
        conversation: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<HistoryPage, ChatError> {
        self.history_page(conversation, after_seq, None, limit)
            .await
    }

    /// The newest `limit` messages of `conversation` before `before_seq` (`u64::MAX`: its
    /// latest), in sequence order, over the short link; `more` says whether older ones
    /// precede them (the next older page is before the first message's sequence number).
    ///
    /// # Errors
    ///
    /// [`ChatError`].
    pub async fn history_before(
        &self,
        conversation: &str,
        before_seq: u64,
        limit: u32,
    ) -> Result<HistoryPage, ChatError> {
        self.history_page(conversation, 0, Some(before_seq), limit)
            .await
    }

    /// A [`HistoryRequest`] over the short link.
    async fn history_page(
        &self,
        conversation: &str,
        after_seq: u64,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<HistoryPage, ChatError> {
        let req = HistoryRequest {
            conversation: conversation.to_owned(),
            after_seq,
            limit,
            before_seq,
        };
        self.inner.short_call(proto::PATH_HISTORY, &req).await
    }

    /// The last delivered sequence number of each conversation.
    pub async fn delivered(&self) -> HashMap<String, u64> {
        self.inner.delivered.lock().await.seqs.clone()
    }

    /// Stops the client: unfinished sends end with an error, the link closes.
    pub async fn shutdown(&self) {
        self.inner.stn.shutdown().await;
    }
}

impl ChatEvents {
    /// The next event; `None` after the client stopped.
    pub async fn recv(&mut self) -> Option<ChatEvent> {
        self.rx.recv().await
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<ChatEvent> {
        self.rx.try_recv().ok()
    }
}

impl Inner {
    /// A long-link request with a JSON body and a JSON [`Reply`].
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        cmd: CmdId,
        req: &Req,
    ) -> Result<Resp, ChatError> {
        let body = serde_json::to_vec(req).map_err(|e| ChatError::BadAnswer(e.to_string()))?;
        let mut spec = TaskSpec::new(cmd, body);
        spec.retry_count = Some(self.retry_count);
        spec.total_timeout = Some(self.send_timeout);
        spec.needs_auth = true;
        // Retried sends repeat their body on purpose; the server dedupes them.
        spec.limit_frequency = false;
        let resp = self.stn.start_task(spec).await?;
        parse_reply(&resp.body)
    }

    /// A short-link request: `Authed { token, request }` posted to `path`.
    async fn short_call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, ChatError> {
        let body = serde_json::to_vec(&proto::Authed {
            token: self.token.clone(),
            request: req,
        })
        .map_err(|e| ChatError::BadAnswer(e.to_string()))?;
        let resp = crate::shortlink::post(
            &self.stn,
            self.http,
            path,
            Bytes::from(body),
            self.retry_count,
            self.send_timeout,
        )
        .await?;
        parse_reply(&resp)
    }

    /// Fetches `conversation`'s history after the last delivered message over the long link
    /// and delivers it.
    async fn catch_up(
        &self,
        conversation: &str,
        events: &mpsc::UnboundedSender<ChatEvent>,
    ) -> Result<usize, ChatError> {
        let mut delivered = self.delivered.lock().await;
        let mut fetched = 0;
        'pages: loop {
            let before = *delivered.seqs.entry(conversation.to_owned()).or_insert(0);
            let req = HistoryRequest {
                conversation: conversation.to_owned(),
                after_seq: before,
                limit: proto::MAX_HISTORY_PAGE,
                before_seq: None,
            };
            let page: HistoryPage = self.call(proto::CMD_HISTORY, &req).await?;
            if let Some(first) = page.messages.first() {
                if delivered.see_epoch(first.epoch, &self.events) && before > 0 {
                    // The page was read after a number of the old epoch: read again from
                    // the new epoch's first message.
                    continue 'pages;
                }
            }
            let last = delivered.seqs.entry(conversation.to_owned()).or_insert(0);
            for message in page.messages {
                if message.seq > *last {
                    *last = message.seq;
                    fetched += 1;
                    let _ = events.send(ChatEvent::Message {
                        message,
                        via: Via::History,
                    });
                }
            }
            if !more_history(before, *last, page.more)? {
                return Ok(fetched);
            }
        }
    }

    /// Catches up every conversation with messages the client has not delivered: the list
    /// comes from the server (over the long link, behind the identify frame), so conversations
    /// that began while the link was down are included. The list is read a page at a time,
    /// each page's conversations caught up before the next page is asked for.
    async fn catch_up_all(&self, events: &mpsc::UnboundedSender<ChatEvent>) {
        let mut after: Option<String> = None;
        loop {
            let req = ListRequest {
                after: after.clone(),
                limit: proto::MAX_LIST_PAGE,
            };
            let page = self
                .call::<_, ConversationPage>(proto::CMD_CONVERSATIONS, &req)
                .await
                .and_then(|page| {
                    let next = next_cursor(after.as_deref(), page.next)?;
                    Ok((page.conversations, next, page.epoch))
                });
            let (convs, next, epoch) = match page {
                Ok(page) => page,
                Err(e) => {
                    let _ = events.send(ChatEvent::CatchUpFailed {
                        conversation: "(conversation list)".to_owned(),
                        error: e.to_string(),
                    });
                    return;
                }
            };
            // The page's own epoch first: the list of a server that lost its history may
            // name none of the user's rooms.
            self.delivered.lock().await.see_epoch(epoch, &self.events);
            for conv in convs {
                let behind = {
                    let mut delivered = self.delivered.lock().await;
                    delivered.see_epoch(conv.epoch, &self.events);
                    delivered.seqs.get(&conv.id).copied().unwrap_or(0) < conv.last_seq
                };
                if behind {
                    self.report_catch_up(&conv.id, events).await;
                }
            }
            match next {
                Some(next) => after = Some(next),
                None => return,
            }
        }
    }

    /// After the server lost its history (a new epoch), joins the rooms joined before again,
    /// as the new server does not know them, and delivers their messages from the first.
    async fn rejoin_after_reset(&self, events: &mpsc::UnboundedSender<ChatEvent>) {
        if !std::mem::take(&mut self.delivered.lock().await.rejoin) {
            return;
        }
        let rooms: Vec<String> = self.rooms.lock().await.iter().cloned().collect();
        for room in rooms {
            let joined = self
                .call::<_, Conversation>(proto::CMD_JOIN, &JoinRequest { room: room.clone() })
                .await;
            match joined {
                Ok(conv) => {
                    {
                        let mut delivered = self.delivered.lock().await;
                        delivered.see_epoch(conv.epoch, &self.events);
                        // Everything in the new epoch is news: no `last_seq` marked read.
                        delivered.seqs.entry(conv.id.clone()).or_insert(0);
                    }
                    self.report_catch_up(&conv.id, events).await;
                }
                Err(e) => {
                    let _ = events.send(ChatEvent::CatchUpFailed {
                        conversation: proto::room_conversation(&room),
                        error: format!("joining again after the server's restart: {e}"),
                    });
                }
            }
        }
    }

    async fn report_catch_up(&self, conv: &str, events: &mpsc::UnboundedSender<ChatEvent>) {
        let event = match self.catch_up(conv, events).await {
            Ok(fetched) => ChatEvent::CaughtUp {
                conversation: conv.to_owned(),
                fetched,
            },
            Err(e) => ChatEvent::CatchUpFailed {
                conversation: conv.to_owned(),
                error: e.to_string(),
            },
        };
        let _ = events.send(event);
    }
}

/// Turns pushes and link events into [`ChatEvent`]s until the client stops.
async fn pump(
    inner: Arc<Inner>,
    mut pushes: phobos_stn::PushStream,
    mut links: phobos_stn::LinkEvents,
    events: mpsc::UnboundedSender<ChatEvent>,
) {
    let mut was_down = false;
    loop {
        tokio::select! {
            push = pushes.recv() => match push {
                Ok(push) if push.cmd_id == proto::CMD_PUSH_MESSAGE => {
                    let Ok(message) = serde_json::from_slice::<Message>(&push.body) else {
                        tracing::warn!(user = %inner.user, "a push that is not a message");
                        continue;
                    };
                    on_message(&inner, message, &events).await;
                    inner.rejoin_after_reset(&events).await;
                }
                Ok(_) => {}
                Err(StreamError::Lagged(n)) => {
                    tracing::warn!(user = %inner.user, dropped = n, "push stream fell behind");
                    inner.catch_up_all(&events).await;
                    inner.rejoin_after_reset(&events).await;
                }
                Err(_) => return,
            },
            link = links.recv() => match link {
                Ok(ev) if &*ev.link == LINK => {
                    let reconnected = matches!(ev.status, LinkStatus::Connected(_)) && was_down;
                    match ev.status {
                        LinkStatus::Disconnected | LinkStatus::ConnectFailed => was_down = true,
                        LinkStatus::Connected(_) => was_down = false,
                        _ => {}
                    }
                    let _ = events.send(ChatEvent::Link { status: ev.status, reason: ev.reason });
                    if reconnected {
                        inner.catch_up_all(&events).await;
                    }
                    inner.rejoin_after_reset(&events).await;
                }
                Err(StreamError::Lagged(n)) => {
                    // Status changes were missed, a reconnect among them perhaps (whose
                    // catch-up would then never run): catch up now, which costs a list
                    // request when nothing was missed.
                    tracing::warn!(user = %inner.user, dropped = n, "link events fell behind");
                    inner.catch_up_all(&events).await;
                    inner.rejoin_after_reset(&events).await;
                }
                Ok(_) => {}
                Err(_) => return,
            },
        }
    }
}

async fn on_message(inner: &Inner, message: Message, events: &mpsc::UnboundedSender<ChatEvent>) {
    let conv = message.conversation.clone();
    {
        let mut delivered = inner.delivered.lock().await;
        delivered.see_epoch(message.epoch, &inner.events);
        let last = delivered.seqs.entry(conv.clone()).or_insert(0);
        if message.seq <= *last {
            let _ = events.send(ChatEvent::DuplicatePush {
                conversation: conv,
                seq: message.seq,
            });
            return;
        }
        if message.seq == *last + 1 {
            *last = message.seq;
            let _ = events.send(ChatEvent::Message {
                message,
                via: Via::Push,
            });
            return;
        }
    }
    // A gap: messages were missed (pushed while the link was down); the history has them
    // and this one.
    inner.report_catch_up(&conv, events).await;
}

fn parse_reply<T: DeserializeOwned>(body: &[u8]) -> Result<T, ChatError> {
    match serde_json::from_slice::<Reply<T>>(body) {
        Ok(Reply::Ok(v)) => Ok(v),
        Ok(Reply::Error(e)) => Err(ChatError::Server(e)),
        Err(e) => Err(ChatError::BadAnswer(format!(
            "{e} in {:?}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        ))),
    }
}

/// The cursor a conversation list page gives for the next page, checked to move forward past
/// `after` (the cursor that page was asked for): a server answering with the same cursor again
/// would otherwise keep a caller paging forever.
fn next_cursor(after: Option<&str>, next: Option<String>) -> Result<Option<String>, ChatError> {
    match (after, next) {
        (Some(after), Some(next)) if next.as_str() <= after => Err(ChatError::BadAnswer(format!(
            "the conversation list did not move forward: {next:?} came after {after:?}"
        ))),
        (_, next) => Ok(next),
    }
}

/// Whether to ask for the history page after one that was asked for after sequence number
/// `before` and left the client at `last`: when the page says there is `more`, checked to
/// have moved forward (a server answering "more" with nothing new would otherwise keep the
/// client asking, holding up delivery, for ever).
fn more_history(before: u64, last: u64, more: bool) -> Result<bool, ChatError> {
    if more && last <= before {
        return Err(ChatError::BadAnswer(format!(
            "a history page after {before} said there was more but brought nothing newer"
        )));
    }
    Ok(more)
}

/// A prefix that makes this process's client message ids unique across runs.
fn run_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_cursor_must_move_forward() {
        assert_eq!(next_cursor(None, None), Ok(None));
        assert_eq!(
            next_cursor(None, Some("room:a".into())),
            Ok(Some("room:a".into()))
        );
        assert_eq!(
            next_cursor(Some("room:a"), Some("room:b".into())),
            Ok(Some("room:b".into()))
        );
        assert_eq!(next_cursor(Some("room:b"), None), Ok(None));
        for stuck in ["room:b", "room:a"] {
            let err = next_cursor(Some("room:b"), Some(stuck.into())).unwrap_err();
            assert!(matches!(err, ChatError::BadAnswer(_)), "{err:?}");
        }
    }

    #[test]
    fn history_paging_must_move_forward() {
        assert_eq!(more_history(3, 9, true), Ok(true));
        assert_eq!(more_history(3, 9, false), Ok(false));
        assert_eq!(more_history(3, 3, false), Ok(false), "an empty last page");
        let err = more_history(3, 3, true).unwrap_err();
        assert!(matches!(err, ChatError::BadAnswer(_)), "{err:?}");
    }
}
