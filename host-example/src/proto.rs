//! The chat protocol the host example's server and clients speak, on top of Phobos.
//!
//! Phobos moves opaque bodies; this module gives them meaning. Bodies are JSON (readable in a
//! packet capture and in the logs; a production app would pick protobuf or similar).
//!
//! # Long link (frames through the configured [`PacketCodec`](phobos_plugin_api::PacketCodec))
//!
//! | Command id | Request body | Reply body |
//! |---|---|---|
//! | identify (sequence `0xFFFF_FFFE`, the auth plugin's command) | `phobos-auth-basic`'s token body | one status byte: `0x00` accepted, `0x01` rejected |
//! | heartbeat (the codec's) | empty | empty |
//! | [`CMD_ECHO`] | anything | the same bytes |
//! | [`CMD_SEND`] | [`SendRequest`] | [`Reply`] of [`SendAck`] |
//! | [`CMD_JOIN`] | [`JoinRequest`] | [`Reply`] of [`Conversation`] |
//! | [`CMD_CONVERSATIONS`] | [`ListRequest`] (an empty body: the first page) | [`Reply`] of [`ConversationPage`] |
//! | [`CMD_HISTORY`] | [`HistoryRequest`] | [`Reply`] of [`HistoryPage`] |
//!
//! The server pushes every new message (sequence 0, command [`CMD_PUSH_MESSAGE`], a
//! [`Message`]) to each online connection of each member of its conversation, the sender's
//! own connections included: a client sees its own messages in their place in the
//! conversation (and its other devices see them at all), so its sequence numbers have no
//! holes.
//!
//! # Short link (HTTP/1.1 `POST`, body and answer JSON)
//!
//! | Path | Request body | Answer |
//! |---|---|---|
//! | [`PATH_CONVERSATIONS`] | [`Authed`] of [`ListRequest`] (`request` absent or `null`: the first page) | [`Reply`] of [`ConversationPage`] |
//! | [`PATH_HISTORY`] | [`Authed`] of [`HistoryRequest`] | [`Reply`] of [`HistoryPage`] |
//! | [`PATH_ECHO`] | anything | the same bytes |
//!
//! A short-link request carries the same token the long link identified with, inside its body
//! ([`Authed`]), so it needs no session on the server.
//!
//! # Paging
//!
//! Both lists a client reads are paged, so no answer grows with the data: a history page holds
//! at most [`MAX_HISTORY_PAGE`] messages after a sequence number ([`HistoryRequest`]), a
//! conversation list page at most [`MAX_LIST_PAGE`] conversations after a conversation id
//! ([`ListRequest`]). The server also cuts a page short when it would not fit in one long-link
//! frame (at least one item is always returned, so paging makes progress); the page says
//! whether more follow ([`HistoryPage::more`], [`ConversationPage::next`]).
//!
//! Conversations are listed in the byte order of their ids. Design: an id never changes and a
//! user's membership only grows, so each conversation keeps its place in that order for good,
//! and a walk that continues after the last id it got ([`ConversationPage::next`]) returns
//! every conversation that existed when it began exactly once, whatever is sent meanwhile.
//! Ordering by last activity would move a conversation to the front at each new message, and
//! a walk under traffic would skip or repeat conversations. A conversation the user joins
//! during a walk shows up in it if its id sorts after the cursor, otherwise in the next walk.
//!
//! # Delivery guarantees
//!
//! Every message gets a sequence number in its conversation (1, 2, 3…) when the server stores
//! it. A push is a hint: a client that sees a gap in a conversation's sequence, or whose long
//! link went down, fetches the conversation's history after the last sequence it has and
//! drops what it already has, so it shows every message exactly once and in order. A send
//! carries a client message id; the server answers a retried send (same sender, same id) with
//! the first send's sequence and stores and pushes nothing.

use phobos_plugin_api::CmdId;
use serde::{Deserialize, Serialize};

/// Echo the body back.
pub const CMD_ECHO: CmdId = CmdId(1);
/// Send a message ([`SendRequest`] → [`SendAck`]).
pub const CMD_SEND: CmdId = CmdId(10);
/// Join a room ([`JoinRequest`] → [`Conversation`]).
pub const CMD_JOIN: CmdId = CmdId(11);
/// A page of the caller's conversation list ([`ListRequest`] → [`ConversationPage`]).
pub const CMD_CONVERSATIONS: CmdId = CmdId(12);
/// A page of one conversation's history ([`HistoryRequest`] → [`HistoryPage`]).
pub const CMD_HISTORY: CmdId = CmdId(13);
/// The command id of message pushes (body: [`Message`]).
pub const CMD_PUSH_MESSAGE: CmdId = CmdId(100);

/// Short-link path of the conversation list.
pub const PATH_CONVERSATIONS: &str = "/v1/conversations";
/// Short-link path of a history page.
pub const PATH_HISTORY: &str = "/v1/history";
/// Short-link echo path.
pub const PATH_ECHO: &str = "/v1/echo";

/// The most messages one history page holds.
pub const MAX_HISTORY_PAGE: u32 = 500;
/// The most conversations one conversation list page holds; a [`ListRequest`] asking for more
/// gets this many, and one without a `limit` gets this many too.
///
/// A listed conversation is its id, its member names and a number: usually well under 1 KiB,
/// so a full page stays far below a long-link frame even for a user in hundreds of rooms. A
/// page of large rooms is cut to fit the frame anyway, and a room too large for a frame by
/// itself has its member list cut ([`Conversation::members_cut`]).
pub const MAX_LIST_PAGE: u32 = 100;
/// The longest message text, in bytes.
pub const MAX_TEXT_LEN: usize = 4096;
/// The longest user, room or client message id, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// A room: every member gets it.
    Room(String),
    /// One user (a direct conversation of two).
    User(String),
}

/// [`CMD_SEND`]'s request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Chosen by the sender, unique among its sends; a retried send reuses it.
    pub client_msg_id: String,
    /// The room or user.
    pub to: Target,
    /// The text.
    pub text: String,
}

/// [`CMD_SEND`]'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendAck {
    /// The conversation the message went to.
    pub conversation: String,
    /// Its sequence number there.
    pub seq: u64,
    /// True when this was a retry of a send the server had already stored.
    pub duplicate: bool,
}

/// [`CMD_JOIN`]'s request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The room (created on first join).
    pub room: String,
}

/// A conversation as listed to one of its members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversation {
    /// `room:NAME` or `dm:A,B` (the two users sorted).
    pub id: String,
    /// Its members, sorted (the first of them only when `members_cut`).
    pub members: Vec<String>,
    /// The sequence number of its newest message (0 when empty).
    pub last_seq: u64,
    /// The member list was cut to fit a reply in one frame (a room of thousands): the
    /// conversation's other fields are whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub members_cut: bool,
    /// The server's history epoch (see [`Message::epoch`]); 0 when the server names none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
}

/// A stored message (also the body of a push).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// The conversation.
    pub conversation: String,
    /// Its sequence number in the conversation, from 1.
    pub seq: u64,
    /// The sender.
    pub from: String,
    /// The sender's id for it.
    pub client_msg_id: String,
    /// The text.
    pub text: String,
    /// The server's history epoch: a number the server picks when it starts with an empty
    /// history. Sequence numbers count within an epoch, so a client that sees another epoch
    /// than before (a server restarted without its history) starts its conversations over
    /// instead of taking the new messages for ones it has. 0 when the server names none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
}

/// [`CMD_HISTORY`]'s request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    /// The conversation.
    pub conversation: String,
    /// Only messages with a larger sequence number.
    pub after_seq: u64,
    /// At most this many (capped at [`MAX_HISTORY_PAGE`]).
    pub limit: u32,
    /// Read backwards: when set, the page holds the *newest* messages before this sequence
    /// number (and after `after_seq`), still in sequence order. `Some(u64::MAX)` asks for the
    /// conversation's latest messages; the next older page is `Some(first.seq)`. Left out,
    /// the page holds the oldest messages after `after_seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_seq: Option<u64>,
}

/// [`CMD_HISTORY`]'s answer: messages in sequence order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryPage {
    /// The messages.
    pub messages: Vec<Message>,
    /// Whether more messages follow the last one; when reading backwards
    /// ([`HistoryRequest::before_seq`]), whether more precede the first one.
    pub more: bool,
}

/// [`CMD_CONVERSATIONS`]'s request: where to continue the caller's conversation list, and how
/// many conversations to return.
///
/// Both fields may be left out (`{}`, or an empty body on the long link): the first page, of
/// [`MAX_LIST_PAGE`] conversations.
///
/// ```
/// use phobos_host_example::proto::{ListRequest, MAX_LIST_PAGE};
///
/// let req = ListRequest { after: Some("room:lobby".into()), limit: 20 };
/// let body = serde_json::to_string(&req).unwrap();
/// assert_eq!(body, r#"{"after":"room:lobby","limit":20}"#);
/// assert_eq!(serde_json::from_str::<ListRequest>(&body).unwrap(), req);
///
/// let first: ListRequest = serde_json::from_str("{}").unwrap();
/// assert_eq!(first, ListRequest { after: None, limit: MAX_LIST_PAGE });
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListRequest {
    /// Only conversations whose id sorts after this one (byte order): the previous page's
    /// [`ConversationPage::next`]; `None` for the first page.
    ///
    /// It is a place in the order, not a reference: it need not be one of the caller's
    /// conversations (the page starts at the first one after it; past the last one the page is
    /// empty with no `next`). It must look like a conversation id (`room:NAME` or `dm:A,B`,
    /// see [`check_conversation_id`]), or the request is a [`ErrorCode::BadRequest`].
    pub after: Option<String>,
    /// At most this many: 0 counts as 1, more than [`MAX_LIST_PAGE`] as [`MAX_LIST_PAGE`].
    pub limit: u32,
}

/// [`CMD_CONVERSATIONS`]'s answer: a page of the caller's conversations in id order.
///
/// ```
/// use phobos_host_example::proto::{Conversation, ConversationPage};
///
/// let page = ConversationPage {
///     conversations: vec![Conversation {
///         id: "room:lobby".into(),
///         members: vec!["alice".into(), "bob".into()],
///         last_seq: 3,
///         members_cut: false,
///         epoch: 0,
///     }],
///     next: None,
///     epoch: 0,
/// };
/// let body = serde_json::to_string(&page).unwrap();
/// assert_eq!(
///     body,
///     r#"{"conversations":[{"id":"room:lobby","members":["alice","bob"],"last_seq":3}],"next":null}"#
/// );
/// assert_eq!(serde_json::from_str::<ConversationPage>(&body).unwrap(), page);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationPage {
    /// The conversations, in the byte order of their ids.
    pub conversations: Vec<Conversation>,
    /// `Some` when more conversations follow: the [`ListRequest::after`] of the next page (the
    /// last id of this page). `None` when this page ends the list.
    pub next: Option<String>,
    /// The server's history epoch ([`Message::epoch`]), on every page, an empty one too: a
    /// server that restarted without its history has forgotten the user's rooms, so its
    /// list may name no conversation to carry the epoch. 0 when the server names none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
}

/// A short-link request: the token and the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authed<T> {
    /// The same token the long link identifies with.
    pub token: String,
    /// The request.
    pub request: T,
}

/// Every answer: the value, or an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply<T> {
    /// It worked.
    Ok(T),
    /// It did not.
    Error(ServerError),
}

/// Why the server refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{code:?}: {message}")]
pub struct ServerError {
    /// What kind of error.
    pub code: ErrorCode,
    /// Details for people.
    pub message: String,
}

/// [`ServerError`]'s kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The connection has not identified, or the token is invalid.
    Unauthenticated,
    /// The body is not the request this command takes.
    BadRequest,
    /// The caller is not a member of that conversation.
    Forbidden,
    /// No such conversation, or no such command.
    NotFound,
}

impl Default for ListRequest {
    /// The first page, of [`MAX_LIST_PAGE`] conversations.
    fn default() -> Self {
        ListRequest {
            after: None,
            limit: MAX_LIST_PAGE,
        }
    }
}

impl ServerError {
    /// An error of `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerError {
            code,
            message: message.into(),
        }
    }
}

impl<T: Serialize> Reply<T> {
    /// The JSON body of this reply.
    pub fn to_body(&self) -> Vec<u8> {
        // Serializing these plain structs into a Vec cannot fail (no maps with non-string
        // keys, no custom serializers).
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl<T> From<Result<T, ServerError>> for Reply<T> {
    fn from(r: Result<T, ServerError>) -> Self {
        match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Error(e),
        }
    }
}

/// Checks a user, room or client message id: 1 to [`MAX_NAME_LEN`] bytes of ASCII letters,
/// digits, `-`, `_` and `.`.
///
/// # Errors
///
/// A [`ErrorCode::BadRequest`] naming `what`.
pub fn check_name(what: &str, name: &str) -> Result<(), ServerError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ServerError::new(
            ErrorCode::BadRequest,
            format!(
                "{what} must be 1 to {MAX_NAME_LEN} ASCII letters, digits, '-', '_' or '.', \
                 got {name:?}"
            ),
        ))
    }
}

/// Checks that `id` has the shape of a conversation id: `room:NAME`, or `dm:A,B` with two user
/// names, each name as [`check_name`] wants it.
///
/// # Errors
///
/// A [`ErrorCode::BadRequest`] naming `what`.
pub fn check_conversation_id(what: &str, id: &str) -> Result<(), ServerError> {
    let ok = if let Some(room) = id.strip_prefix("room:") {
        check_name("room", room).is_ok()
    } else if let Some(users) = id.strip_prefix("dm:") {
        users
            .split_once(',')
            .is_some_and(|(a, b)| check_name("user", a).is_ok() && check_name("user", b).is_ok())
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(ServerError::new(
            ErrorCode::BadRequest,
            format!("{what} must be a conversation id (room:NAME or dm:A,B), got {id:?}"),
        ))
    }
}

/// The conversation id of a room.
pub fn room_conversation(room: &str) -> String {
    format!("room:{room}")
}

/// The conversation id of two users' direct conversation.
pub fn direct_conversation(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("dm:{x},{y}")
}

/// Serde's test for leaving a zero epoch out.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_through_json() {
        let ack: Reply<SendAck> = Reply::Ok(SendAck {
            conversation: room_conversation("lobby"),
            seq: 7,
            duplicate: false,
        });
        let body = ack.to_body();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"ok":{"conversation":"room:lobby","seq":7,"duplicate":false}}"#
        );
        assert_eq!(
            serde_json::from_slice::<Reply<SendAck>>(&body).unwrap(),
            ack
        );
        let err: Reply<SendAck> = Reply::Error(ServerError::new(ErrorCode::Forbidden, "no"));
        assert_eq!(
            serde_json::from_slice::<Reply<SendAck>>(&err.to_body()).unwrap(),
            err
        );
    }

    #[test]
    fn direct_conversation_ids_do_not_depend_on_who_sends() {
        assert_eq!(direct_conversation("bob", "alice"), "dm:alice,bob");
        assert_eq!(direct_conversation("alice", "bob"), "dm:alice,bob");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("user", "alice-1_x.y").is_ok());
        assert!(check_name("user", "").is_err());
        assert!(check_name("user", "a b").is_err());
        assert!(check_name("user", "a,b").is_err());
        assert!(check_name("user", &"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn conversation_ids_are_checked() {
        assert!(check_conversation_id("after", &room_conversation("lobby")).is_ok());
        assert!(check_conversation_id("after", &direct_conversation("bob", "alice")).is_ok());
        for bad in [
            "",
            "lobby",
            "room:",
            "room:a b",
            "dm:alice",
            "dm:alice,",
            "dm:a,b,c",
        ] {
            let err = check_conversation_id("after", bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{bad:?}");
            assert!(err.message.contains("after"), "{err}");
        }
    }

    #[test]
    fn a_list_request_without_fields_is_the_first_page_of_the_largest_size() {
        let req: ListRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(req, ListRequest::default());
        assert_eq!((req.after, req.limit), (None, MAX_LIST_PAGE));
        let req: ListRequest = serde_json::from_str(r#"{"limit":0}"#).unwrap();
        assert_eq!((req.after, req.limit), (None, 0));
        assert!(serde_json::from_str::<ListRequest>(r#"{"cursor":"room:a"}"#).is_err());
    }

    #[test]
    fn unknown_fields_in_requests_are_refused() {
        let r = serde_json::from_str::<SendRequest>(
            r#"{"client_msg_id":"1","to":{"room":"a"},"text":"t","extra":1}"#,
        );
        assert!(r.is_err());
    }
}
