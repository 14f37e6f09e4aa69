//! What the app asks for ([`TaskSpec`]) and what it gets back ([`TaskEnd`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use phobos_plugin_api::{CmdId, IpPort, TaskId};

use crate::error::{CodecFailure, TaskError};
use crate::io::LinkName;

/// Which transports a task may use (Mars's `channel_select`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelSelect {
    /// The named long link only.
    #[default]
    Long,
    /// The short link only (needs a [`path`](TaskSpec::path) and
    /// [`short_hosts`](TaskSpec::short_hosts)).
    Short,
    /// The long link if it is connected at admission, else the short link (Mars §3.2 step
    /// 7; a task without a path always takes the long link). The choice is kept for the
    /// task's life.
    Either,
}

impl ChannelSelect {
    /// Whether the long link may carry the task.
    pub fn allows_long(self) -> bool {
        matches!(self, ChannelSelect::Long | ChannelSelect::Either)
    }

    /// Whether the short link may carry the task.
    pub fn allows_short(self) -> bool {
        matches!(self, ChannelSelect::Short | ChannelSelect::Either)
    }
}

/// One request the app wants delivered: everything the core needs to schedule, send, time
/// and retry it.
///
/// Built with [`TaskSpec::new`] and the `with_*` methods; unset fields take Mars's defaults.
///
/// ```
/// use std::time::Duration;
/// use phobos_plugin_api::CmdId;
/// use phobos_stn_proto::TaskSpec;
///
/// let spec = TaskSpec::new(CmdId(42), &b"hello"[..])
///     .with_priority(1)
///     .with_retry_count(0)
///     .with_total_timeout(Duration::from_secs(5));
/// assert_eq!(spec.link.as_str(), "default-longlink");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    /// The long-link command id. `CmdId(0)` removes the long link from [`channel`](Self::channel)
    /// (spec §3.2 step 2).
    pub cmd_id: CmdId,
    /// The request body, opaque to the core.
    pub body: Bytes,
    /// A second buffer handed to the codec beside the body (Mars's `extend`).
    pub extension: Bytes,
    /// Which transports the task may use.
    pub channel: ChannelSelect,
    /// The long link to use, by name (default `"default-longlink"`).
    pub link: LinkName,
    /// 0 (highest) to 5; default 3. Stable: FIFO within one priority.
    pub priority: u8,
    /// Extra attempts after the first (`None` → 1, at most 30).
    pub retry_count: Option<u32>,
    /// Caps the whole task (at most 600 s); also lets a failed task become a zombie that is
    /// retried later within this budget (spec §14).
    pub total_timeout: Option<Duration>,
    /// Expected server processing time; replaces the base first-packet timeout (at most
    /// 120 s).
    pub server_cost: Option<Duration>,
    /// Ends successfully (with an empty body) as soon as the request is handed to the link;
    /// no response is awaited.
    pub send_only: bool,
    /// Wait for [`AuthCheck::is_authed`](phobos_plugin_api::AuthCheck::is_authed) before
    /// sending; the core asks the driver to log in with
    /// [`Action::EnsureAuth`](crate::Action::EnsureAuth).
    pub needs_auth: bool,
    /// A long-polling task: the server holds the request up to this long (at most 600 s).
    pub long_polling: Option<Duration>,
    /// The host passed to the auth check; `None` uses the link's first configured host.
    pub auth_host: Option<String>,
    /// Subject to the flow limit on mobile networks (default true, spec §13.2).
    pub limit_flow: bool,
    /// Subject to the identical-body frequency limit (default true, spec §13.1).
    pub limit_frequency: bool,
    /// Fail at once without a network; never becomes a zombie.
    pub network_sensitive: bool,
    /// Short-link hosts, in order: names (`"s.example"`, `"s.example:8080"`) resolved
    /// through the IP source chain, or IP literals (`"10.0.0.1"`, `"10.0.0.1:8080"`) used as
    /// they are. The `Host` header names the host whose address won the connect race.
    pub short_hosts: Vec<String>,
    /// Short-link URL path (Mars's `cgi`). Empty removes the short link from
    /// [`channel`](Self::channel).
    pub path: String,
    /// Headers of the short-link request; a name the codec already writes is replaced
    /// (`Connection: Keep-Alive` asks for a reusable connection, spec §8.5).
    pub headers: Vec<(String, String)>,
    /// Builds the request just before each attempt, instead of [`body`](Self::body) and
    /// [`extension`](Self::extension) given up front (Mars's `Req2Buf`); see
    /// [`RequestEncoder`].
    pub encoder: Option<RequestEncoder>,
}

/// Builds a task's request just before each attempt (Mars's `Req2Buf`): for a request that
/// carries something only known when it leaves (a session key, a fresh token or nonce, the
/// link it goes over).
///
/// Called by the core, inline, once per attempt: on the long link when the attempt is
/// framed, on the short link when the attempt begins (before its connect race). Its body and
/// extension take the place of the spec's for that attempt; the first attempt's body is the
/// one the frequency and flow limits check (spec §13). A refusal (`Err(code)`) ends the task
/// at once with [`CodecFailure::Encode`](crate::CodecFailure::Encode)`(`[`EncodeError::Other`](phobos_plugin_api::EncodeError::Other)`(code))`,
/// without a retry.
///
/// Design: Mars may call `Req2Buf` several times for one attempt (a buffer built while the
/// link was down is thrown away, §7.4) and so asks for an idempotent callback; here it is
/// called exactly once per attempt, when the attempt really goes out. It runs on the
/// driver's thread, like a codec, so it should be quick and must not block. The closure is
/// held through a thin pointer: as a field of every [`TaskSpec`] it costs eight bytes, not
/// sixteen (with sixteen, moving the larger spec cost pho-batch 44 instructions per task,
/// with eight none).
///
/// ```
/// use bytes::Bytes;
/// use phobos_plugin_api::CmdId;
/// use phobos_stn_proto::{EncodedRequest, RequestEncoder, TaskSpec};
///
/// let spec = TaskSpec::new(CmdId(7), Bytes::new()).with_encoder(RequestEncoder::new(|cx| {
///     Ok(EncodedRequest::body(format!("attempt {}", cx.attempt)))
/// }));
/// assert!(spec.encoder.is_some());
/// ```
#[derive(Clone)]
pub struct RequestEncoder(Arc<Box<EncodeFn>>);

/// What a [`RequestEncoder`] calls.
type EncodeFn = dyn Fn(&EncodeContext<'_>) -> Result<EncodedRequest, u32> + Send + Sync;

impl RequestEncoder {
    /// An encoder calling `encode`.
    pub fn new(
        encode: impl Fn(&EncodeContext<'_>) -> Result<EncodedRequest, u32> + Send + Sync + 'static,
    ) -> Self {
        RequestEncoder(Arc::new(Box::new(encode)))
    }

    /// Builds the request for the attempt `cx` describes.
    ///
    /// # Errors
    ///
    /// The encoder's own code when it refuses.
    pub fn encode(&self, cx: &EncodeContext<'_>) -> Result<EncodedRequest, u32> {
        (self.0)(cx)
    }
}

impl std::fmt::Debug for RequestEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestEncoder(..)")
    }
}

impl PartialEq for RequestEncoder {
    /// The same encoder (one `RequestEncoder` and its clones).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RequestEncoder {}

/// What a [`RequestEncoder`] is told about the attempt it builds a request for.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct EncodeContext<'a> {
    /// The task.
    pub task: TaskId,
    /// The attempt, from 1.
    pub attempt: u32,
    /// Where the attempt goes.
    pub via: EncodeVia<'a>,
}

/// Where an attempt goes ([`EncodeContext::via`]; Mars's `channel` and `host`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeVia<'a> {
    /// The named long link.
    LongLink(&'a LinkName),
    /// The short link, to the task's first short-link host (the race may end on another).
    ShortLink {
        /// The host.
        host: &'a str,
    },
}

/// A request built by a [`RequestEncoder`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedRequest {
    /// The body, as [`TaskSpec::body`].
    pub body: Bytes,
    /// The extension, as [`TaskSpec::extension`].
    pub extension: Bytes,
}

impl EncodedRequest {
    /// A request of `body` and no extension.
    pub fn body(body: impl Into<Bytes>) -> Self {
        EncodedRequest {
            body: body.into(),
            extension: Bytes::new(),
        }
    }
}

impl TaskSpec {
    /// A copy of everything but the body and extension (left empty): the parameters a
    /// batch lane group shares, or that [`Engine::queue_tasks_like`](crate::Engine::queue_tasks_like)
    /// takes.
    ///
    /// Design: written out field by field (the destructuring names every field, so a new
    /// field does not compile until it is copied here), so that the body and extension are
    /// not cloned only to be dropped.
    pub fn clone_params(&self) -> TaskSpec {
        let TaskSpec {
            cmd_id,
            body: _,
            extension: _,
            channel,
            link,
            priority,
            retry_count,
            total_timeout,
            server_cost,
            send_only,
            needs_auth,
            long_polling,
            auth_host,
            limit_flow,
            limit_frequency,
            network_sensitive,
            short_hosts,
            path,
            headers,
            encoder,
        } = self;
        TaskSpec {
            cmd_id: *cmd_id,
            body: Bytes::new(),
            extension: Bytes::new(),
            channel: *channel,
            link: link.clone(),
            priority: *priority,
            retry_count: *retry_count,
            total_timeout: *total_timeout,
            server_cost: *server_cost,
            send_only: *send_only,
            needs_auth: *needs_auth,
            long_polling: *long_polling,
            auth_host: auth_host.clone(),
            limit_flow: *limit_flow,
            limit_frequency: *limit_frequency,
            network_sensitive: *network_sensitive,
            short_hosts: short_hosts.clone(),
            path: path.clone(),
            headers: headers.clone(),
            encoder: encoder.clone(),
        }
    }

    /// Whether `other` has the same parameters: everything but the command id, body and
    /// extension is equal.
    ///
    /// Design: written out field by field (the destructuring names every field), so a new
    /// field of the spec does not compile until it is compared here.
    pub fn same_params(&self, other: &TaskSpec) -> bool {
        let TaskSpec {
            cmd_id: _,
            body: _,
            extension: _,
            channel,
            link,
            priority,
            retry_count,
            total_timeout,
            server_cost,
            send_only,
            needs_auth,
            long_polling,
            auth_host,
            limit_flow,
            limit_frequency,
            network_sensitive,
            short_hosts,
            path,
            headers,
            encoder,
        } = self;
        // The flags and numbers first, then what needs a pointer or a length compared.
        let scalars = *channel == other.channel
            && *priority == other.priority
            && *send_only == other.send_only
            && *needs_auth == other.needs_auth
            && *limit_flow == other.limit_flow
            && *limit_frequency == other.limit_frequency
            && *network_sensitive == other.network_sensitive
            && *retry_count == other.retry_count
            && *total_timeout == other.total_timeout
            && *server_cost == other.server_cost
            && *long_polling == other.long_polling;
        // Empty on both sides (the usual task's path, hosts and headers) is told without a
        // call to the slice comparison.
        fn same<T: PartialEq>(a: &[T], b: &[T]) -> bool {
            a.len() == b.len() && (a.is_empty() || a == b)
        }
        scalars
            && (link.is_same(&other.link) || *link == other.link)
            && *encoder == other.encoder
            && auth_host.as_deref() == other.auth_host.as_deref()
            && same(path.as_bytes(), other.path.as_bytes())
            && same(short_hosts, &other.short_hosts)
            && same(headers, &other.headers)
    }

    /// A long-link task with Mars's defaults: priority 3, one retry, formula timeouts, flow
    /// and frequency limits on.
    pub fn new(cmd_id: CmdId, body: impl Into<Bytes>) -> Self {
        TaskSpec {
            cmd_id,
            body: body.into(),
            extension: Bytes::new(),
            channel: ChannelSelect::Long,
            link: LinkName::default(),
            priority: DEFAULT_PRIORITY,
            retry_count: None,
            total_timeout: None,
            server_cost: None,
            send_only: false,
            needs_auth: false,
            long_polling: None,
            auth_host: None,
            limit_flow: true,
            limit_frequency: true,
            network_sensitive: false,
            short_hosts: Vec::new(),
            path: String::new(),
            headers: Vec::new(),
            encoder: None,
        }
    }

    /// Sets [`priority`](Self::priority).
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets [`retry_count`](Self::retry_count).
    pub fn with_retry_count(mut self, retries: u32) -> Self {
        self.retry_count = Some(retries);
        self
    }

    /// Sets [`total_timeout`](Self::total_timeout).
    pub fn with_total_timeout(mut self, timeout: Duration) -> Self {
        self.total_timeout = Some(timeout);
        self
    }

    /// Sets [`server_cost`](Self::server_cost).
    pub fn with_server_cost(mut self, cost: Duration) -> Self {
        self.server_cost = Some(cost);
        self
    }

    /// Sets [`link`](Self::link).
    pub fn with_link(mut self, link: impl Into<LinkName>) -> Self {
        self.link = link.into();
        self
    }

    /// Sets [`channel`](Self::channel).
    pub fn with_channel(mut self, channel: ChannelSelect) -> Self {
        self.channel = channel;
        self
    }

    /// Lets the task use the short link: POST to `path` on `hosts` (see
    /// [`short_hosts`](Self::short_hosts)). The channel stays as set; combine with
    /// [`with_channel`](Self::with_channel)`(ChannelSelect::Short)` for a short-only task.
    pub fn with_short_link<S: Into<String>>(
        mut self,
        path: impl Into<String>,
        hosts: impl IntoIterator<Item = S>,
    ) -> Self {
        self.path = path.into();
        self.short_hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a short-link request header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Makes the task send-only.
    pub fn send_only(mut self) -> Self {
        self.send_only = true;
        self
    }

    /// Gates the task on authentication.
    pub fn needs_auth(mut self) -> Self {
        self.needs_auth = true;
        self
    }

    /// Makes the task a long poll held by the server up to `timeout`.
    pub fn with_long_polling(mut self, timeout: Duration) -> Self {
        self.long_polling = Some(timeout);
        self
    }

    /// Builds the request of attempt `attempt` of task `task` with the
    /// [`encoder`](Self::encoder), if the spec has one: its body and extension replace the
    /// spec's. A refusal is the task's end (an encode error).
    #[inline]
    pub(crate) fn build_request(
        &mut self,
        task: TaskId,
        attempt: u32,
        via: EncodeVia<'_>,
    ) -> Result<(), TaskError> {
        let Some(encoder) = &self.encoder else {
            return Ok(());
        };
        let cx = EncodeContext { task, attempt, via };
        let request = encoder.encode(&cx).map_err(|code| {
            TaskError::Codec(CodecFailure::Encode(phobos_plugin_api::EncodeError::Other(
                code,
            )))
        })?;
        self.body = request.body;
        self.extension = request.extension;
        Ok(())
    }

    /// Sets [`encoder`](Self::encoder): the request is built just before each attempt.
    pub fn with_encoder(mut self, encoder: RequestEncoder) -> Self {
        self.encoder = Some(encoder);
        self
    }

    /// Turns the flow and frequency limits on or off for this task.
    pub fn with_limits(mut self, flow: bool, frequency: bool) -> Self {
        self.limit_flow = flow;
        self.limit_frequency = frequency;
        self
    }

    /// Marks the task network-status sensitive.
    pub fn network_sensitive(mut self) -> Self {
        self.network_sensitive = true;
        self
    }
}

/// A successful task's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The response frame's command id (not compared with the request's, as in Mars).
    pub cmd_id: CmdId,
    /// The response body; empty for send-only tasks.
    pub body: Bytes,
    /// The response extension, for codecs that carry one.
    pub extension: Option<Bytes>,
}

/// What a task ended with.
pub type TaskOutcome = Result<Response, TaskError>;

/// The end of one task: emitted exactly once per [`Engine::start_task`](crate::Engine::start_task).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskEnd {
    /// The task.
    pub id: TaskId,
    /// The tag the task was started with ([`Engine::start_task_tagged`]); 0 otherwise.
    ///
    /// Design: a driver keeps what it must do with each end (whom to answer) in a table of
    /// its own; the tag is its index there, so an end finds its caller without a lookup by
    /// task id.
    ///
    /// [`Engine::start_task_tagged`]: crate::Engine::start_task_tagged
    pub tag: u64,
    /// The response or the error.
    pub outcome: TaskOutcome,
    /// When things happened.
    ///
    /// Design: boxed, so the end (which travels through several queues and a channel on
    /// its way to the caller) stays a few words long.
    pub profile: Box<TaskProfile>,
    /// Time from admission to end: [`TaskProfile::elapsed`], worked out by the core on its
    /// own clock scale, where it costs a subtraction.
    pub elapsed: Duration,
}

/// The ends of several tasks that ended together, successfully, in one input: one
/// [`Event::TasksEnded`](crate::Event::TasksEnded) in place of a
/// [`TaskEnded`](crate::Event::TaskEnded) each, for drivers that asked for it
/// ([`Engine::set_end_batches`](crate::Engine::set_end_batches)).
///
/// The tasks were admitted together, sent in one dispatch pass over one connection and
/// answered in the same input, so their profiles differ only in the sent and received
/// byte counts and the first-packet timeout: `profile` holds what they share and each
/// [`BatchedEnd`] the rest. [`into_ends`](Self::into_ends) gives back exactly the
/// [`TaskEnd`]s the engine would have emitted one by one, in the same order.
///
/// Design: ending the usual task of a batch then costs a response and four numbers
/// pushed onto a list, not a profile stamped and moved through the event queue per task
/// (`docs/lab/throughput.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndBatch {
    /// What the tasks' profiles share: each end's [`profile_of`](Self::profile_of) is this
    /// with the end's own `sent_bytes`, `received_bytes` and `first_packet_timeout`.
    pub profile: Box<TaskProfile>,
    /// Time from admission to end, the same for every task ([`TaskEnd::elapsed`]).
    pub elapsed: Duration,
    /// The tasks, in the order they ended.
    pub ends: Vec<BatchedEnd>,
}

/// One task of an [`EndBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchedEnd {
    /// The task.
    pub id: TaskId,
    /// Its tag ([`TaskEnd::tag`]).
    pub tag: u64,
    /// Its response.
    pub response: Response,
    /// [`TaskProfile::sent_bytes`].
    pub sent_bytes: usize,
    /// [`TaskProfile::received_bytes`].
    pub received_bytes: usize,
    /// [`TaskProfile::first_packet_timeout`].
    pub first_packet_timeout: Duration,
}

impl EndBatch {
    /// `end`, a success, as a batch of one end with room for `capacity` ends (its profile
    /// becomes the batch's, its own numbers the end's; a missing first-packet timeout
    /// becomes zero). A failure is given back.
    ///
    /// Design: not inlined; it runs once per read at most, and the read path it is called
    /// from inlines its per-response steps.
    #[inline(never)]
    pub fn of_one(end: TaskEnd, capacity: usize) -> Result<EndBatch, TaskEnd> {
        let TaskEnd {
            id,
            tag,
            outcome,
            profile,
            elapsed,
        } = end;
        let response = match outcome {
            Ok(response) => response,
            Err(error) => {
                return Err(TaskEnd {
                    id,
                    tag,
                    outcome: Err(error),
                    profile,
                    elapsed,
                })
            }
        };
        let mut ends = Vec::with_capacity(capacity.max(1));
        ends.push(BatchedEnd {
            id,
            tag,
            response,
            sent_bytes: profile.sent_bytes,
            received_bytes: profile.received_bytes,
            first_packet_timeout: profile.first_packet_timeout.unwrap_or_default(),
        });
        Ok(EndBatch {
            profile,
            elapsed,
            ends,
        })
    }

    /// The profile of `end` (one of [`ends`](Self::ends)).
    pub fn profile_of(&self, end: &BatchedEnd) -> TaskProfile {
        self.profile
            .with_own(end.sent_bytes, end.received_bytes, end.first_packet_timeout)
    }

    /// The [`TaskEnd`]s this stands for, in order.
    pub fn into_ends(self) -> impl Iterator<Item = TaskEnd> {
        let EndBatch {
            profile,
            elapsed,
            ends,
        } = self;
        ends.into_iter().map(move |end| TaskEnd {
            id: end.id,
            tag: end.tag,
            profile: Box::new(profile.with_own(
                end.sent_bytes,
                end.received_bytes,
                end.first_packet_timeout,
            )),
            outcome: Ok(end.response),
            elapsed,
        })
    }
}

/// Timestamps and counts of one task, for reporting (Mars's task profile).
///
/// Attempt-level fields describe the last attempt that reached a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskProfile {
    /// When the task was admitted.
    pub queued_at: Instant,
    /// When the task ended.
    pub ended_at: Instant,
    /// Attempts that were sent or failed (0 when the task never reached a link).
    pub attempts: u32,
    /// The link that carried the last attempt.
    pub link: Option<LinkName>,
    /// The server address of the last attempt.
    pub addr: Option<IpPort>,
    /// When the connection used by the last attempt started connecting.
    pub connect_start: Option<Instant>,
    /// When that connection was established.
    pub connect_end: Option<Instant>,
    /// When the last attempt's frame was handed to the driver.
    pub send_start: Option<Instant>,
    /// When the last attempt's frame started to leave the driver for the socket, and its
    /// clocks started: `send_start`, unless the driver still held earlier bytes then; then
    /// when it reported them gone ([`Engine::handle_unsent`](crate::Engine::handle_unsent)).
    /// The difference is the time the frame waited behind them.
    pub send_end: Option<Instant>,
    /// When the first response byte for the last attempt arrived (header complete).
    pub first_byte: Option<Instant>,
    /// When the last response byte arrived.
    pub last_byte: Option<Instant>,
    /// When the response frame was decoded and matched.
    pub decoded_at: Option<Instant>,
    /// Request bytes on the wire (frame size) of the last attempt.
    pub sent_bytes: usize,
    /// Response bytes on the wire (frame size).
    pub received_bytes: usize,
    /// The first-packet timeout used for the last attempt.
    pub first_packet_timeout: Option<Duration>,
    /// Times the task was saved as a zombie.
    pub zombie_rounds: u32,
    /// Whether the weak-network detector (§15.2) considered the network weak when the task
    /// ended.
    pub weak_network: bool,
}

impl TaskProfile {
    /// The profile of a task admitted at `now`, before anything else happened to it.
    pub fn new(now: Instant) -> Self {
        TaskProfile {
            queued_at: now,
            ended_at: now,
            attempts: 0,
            link: None,
            addr: None,
            connect_start: None,
            connect_end: None,
            send_start: None,
            send_end: None,
            first_byte: None,
            last_byte: None,
            decoded_at: None,
            sent_bytes: 0,
            received_bytes: 0,
            first_packet_timeout: None,
            zombie_rounds: 0,
            weak_network: false,
        }
    }

    /// Time from admission to end.
    pub fn elapsed(&self) -> Duration {
        self.ended_at.saturating_duration_since(self.queued_at)
    }

    /// This profile with another task's byte counts and first-packet timeout: the profile
    /// of a task of an [`EndBatch`] whose shared profile this is
    /// ([`EndBatch::profile_of`]).
    pub fn with_own(
        &self,
        sent_bytes: usize,
        received_bytes: usize,
        first_packet_timeout: Duration,
    ) -> TaskProfile {
        TaskProfile {
            link: self.link.clone(),
            sent_bytes,
            received_bytes,
            first_packet_timeout: Some(first_packet_timeout),
            ..*self
        }
    }
}

/// Mars's default task priority.
pub const DEFAULT_PRIORITY: u8 = 3;
/// The lowest priority value accepted.
pub const MAX_PRIORITY: u8 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    /// A success becomes a batch of one that gives it back whole; a failure is given back.
    #[test]
    fn of_one_makes_a_success_a_batch_of_one_and_gives_a_failure_back() {
        let now = crate::tests::epoch::epoch();
        let mut profile = TaskProfile::new(now);
        profile.sent_bytes = 31;
        profile.received_bytes = 47;
        profile.first_packet_timeout = Some(Duration::from_millis(5300));
        let end = TaskEnd {
            id: TaskId(9),
            tag: 77,
            outcome: Ok(Response {
                cmd_id: CmdId(3),
                body: Bytes::from_static(b"ok"),
                extension: None,
            }),
            profile: Box::new(profile),
            elapsed: Duration::from_millis(12),
        };
        let batch = EndBatch::of_one(end.clone(), 8).expect("a success");
        assert_eq!(batch.ends.len(), 1);
        assert!(batch.ends.capacity() >= 8);
        assert_eq!(batch.ends[0].received_bytes, 47);
        assert_eq!(
            batch.into_ends().collect::<Vec<_>>(),
            std::slice::from_ref(&end)
        );
        let failed = TaskEnd {
            outcome: Err(TaskError::Canceled),
            ..end
        };
        assert_eq!(EndBatch::of_one(failed.clone(), 1), Err(failed));
    }

    /// Specs that differ in command, body or extension only have the same parameters; one
    /// that differs in the short link's path, hosts or headers (empty or not on either side)
    /// or in the link does not, and copied parameters are the same as the original's.
    #[test]
    fn same_params_tells_every_parameter_apart() {
        let base = || TaskSpec::new(CmdId(1), vec![1; 4]);
        let a = base();
        assert!(a.same_params(&TaskSpec::new(CmdId(2), vec![9; 7])));
        let mut ext = base();
        ext.extension = Bytes::from_static(b"x");
        assert!(a.same_params(&ext));
        assert!(a.same_params(&a.clone_params()));
        let short = base().with_short_link("/cgi", ["h1", "h2"]);
        let headed = short.clone().with_header("a", "1");
        let others = [
            short.clone(),
            base().with_short_link("", ["h1"]),
            base().with_short_link("/cgi", Vec::<String>::new()),
            base().with_header("a", "1"),
            base().with_link("extra"),
            base().with_priority(1),
            base().send_only(),
            headed.clone(),
        ];
        for other in &others {
            assert!(!a.same_params(other), "{other:?}");
            assert!(!other.same_params(&a), "{other:?}");
            assert!(other.same_params(&other.clone_params()), "{other:?}");
        }
        assert!(!short.same_params(&base().with_short_link("/cgi", ["h1", "h3"])));
        assert!(!headed.same_params(&short.clone().with_header("a", "2")));
        assert!(headed.same_params(&short.with_header("a", "1")));
    }
}
