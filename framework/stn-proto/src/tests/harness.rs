//! A virtual-time harness: the engine, a fake server and a simulated network between them.
//!
//! Time only moves when the harness jumps to the next deadline (the engine's timer, a
//! delivery on the simulated network, or the server's next scheduled send), so a scenario of
//! minutes runs in microseconds. Every delivery is processed at its exact instant.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::codec::{EncodeError, FrameKind, HEARTBEAT_CMD, IDENTIFY_SEQ};
use phobos_plugin_api::{
    AddrSource, AuthError, CmdId, DecodeError, Decoded, FrameHead, IpPort, PacketCodec,
    ResolvedAddr, Seq, TaskId,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{
    Action, CloseCause, Config, ConfigBuilder, ConnId, DialError, Engine, Event, LinkConfig,
    LinkName, Recovery, TaskEnd, TaskSpec, TransportFacts,
};

/// How a server address answers a connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Accepts after one round trip.
    Accept,
    /// Refuses after one round trip.
    Refuse,
    /// Never answers (the core's connect timeout decides).
    Blackhole,
}

/// How the server answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Echoes the body after the processing delay.
    Echo,
    /// Echoes the body after this delay instead of the processing delay.
    Delay(Duration),
    /// Echoes the body followed by 0 to 3 more bytes (the body's second byte's low two
    /// bits), after the processing delay: response lengths that differ from the request's
    /// and from task to task.
    Longer,
    /// Never answers.
    Never,
    /// Sends the echo in `chunks` pieces, `every` apart, starting after the delay.
    Dribble { chunks: usize, every: Duration },
    /// Answers with bytes that are not a frame.
    Garbage,
    /// Closes the connection (FIN) instead of answering.
    Close,
}

/// The fake server's script.
#[derive(Clone, Debug)]
pub(crate) struct ServerScript {
    /// Per address; addresses not listed accept.
    pub(crate) reach: HashMap<IpPort, Reach>,
    /// Default answer.
    pub(crate) answer: Answer,
    /// Answers by command id, overriding the default.
    pub(crate) answer_by_cmd: HashMap<CmdId, Answer>,
    /// Time the server takes before answering.
    pub(crate) process_delay: Duration,
    /// Whether heartbeats are answered.
    pub(crate) heartbeat_replies: bool,
    /// Whether the identify frame is answered.
    pub(crate) identify_replies: bool,
    /// A middlebox that closes every connection once the server has received this many
    /// bytes on it (the rest of the chunk is lost).
    pub(crate) close_after: Option<usize>,
    /// A middlebox that forwards this many bytes per connection to the server and swallows
    /// every later one (the connection stays open).
    pub(crate) stall_after: Option<usize>,
    /// This many connect attempts (the first ones) are lost: no answer at all.
    pub(crate) lost_connects: usize,
    /// The path is dead: from now on nothing sent either way arrives (no RST, no FIN).
    pub(crate) path_dead: bool,
    /// Connections have a handshake (TLS): an accepted attempt reports
    /// [`Engine::handle_established`] after a round trip and connects one round trip later.
    pub(crate) handshake: bool,
    /// This many accepted attempts (the first ones, with `handshake`) never finish their
    /// handshake: their transport is up, then nothing.
    pub(crate) stalled_handshakes: usize,
}

impl Default for ServerScript {
    fn default() -> Self {
        ServerScript {
            reach: HashMap::new(),
            answer: Answer::Echo,
            answer_by_cmd: HashMap::new(),
            process_delay: Duration::from_millis(5),
            heartbeat_replies: true,
            identify_replies: true,
            close_after: None,
            stall_after: None,
            lost_connects: 0,
            path_dead: false,
            handshake: false,
            stalled_handshakes: 0,
        }
    }
}

/// How the simulated driver answers [`Action::InspectTransport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransportAnswer {
    /// Facts from the simulated network ([`Sim::transport_facts`]).
    Modelled,
    /// `None` at once: a transport that cannot tell.
    Unknown,
    /// These facts, whatever the network did.
    Fixed(TransportFacts),
    /// Never answers (a driver that ignores the action).
    Silent,
}

/// A client uplink slower than the simulated network: the socket takes the client's bytes
/// at `rate`, a piece at a time, and the simulated driver tells the
/// engine what it still holds ([`Engine::handle_unsent`]), as `phobos-stn`'s driver does.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Uplink {
    /// Bytes per second the socket takes.
    pub(crate) rate: u64,
    /// The pieces in which it takes them (the first piece of a write is taken at once).
    pub(crate) piece: usize,
    /// After this many bytes per connection the socket takes none (a path that stopped
    /// acknowledging, its send buffer full).
    pub(crate) stop_after: Option<u64>,
    /// After this many bytes per connection the socket takes none for this long, then goes
    /// on (acknowledgements held up for a while).
    pub(crate) pause: Option<(u64, Duration)>,
    /// Whether the driver reports what it holds (a driver that does not: every attempt's
    /// clocks run from its dispatch).
    pub(crate) report: bool,
}

/// A connection's side of a limited [`Uplink`].
#[derive(Debug, Default)]
struct Pipe {
    /// When the socket is done with the pieces planned so far.
    free_at: Option<Instant>,
    /// Bytes planned to be taken (every piece scheduled).
    planned: u64,
    /// Bytes the driver holds now.
    unsent: u64,
    /// `unsent` as last reported.
    reported: u64,
}

/// Something travelling on the simulated network.
#[derive(Debug)]
enum Delivery {
    /// The socket takes this many held bytes of a connection (a limited [`Uplink`]).
    Taken(ConnId, u64),
    Established(ConnId),
    Connected(ConnId),
    ConnectFailed(ConnId, DialError),
    ToServer(ConnId, Vec<u8>),
    ToClient(ConnId, Vec<u8>),
    ClosedByServer(ConnId),
    Resolved(LinkName, String, usize, Vec<ResolvedAddr>),
    Auth(String),
}

/// The simulated network and server joined to one engine.
pub(crate) struct Sim {
    pub(crate) engine: Engine,
    pub(crate) t0: Instant,
    pub(crate) now: Instant,
    pub(crate) codec: Arc<MarsCodec>,
    pub(crate) script: ServerScript,
    /// One-way latency.
    pub(crate) latency: Duration,
    /// Chance that a delivery is delayed by a retransmission ([`Sim::rto`], doubling).
    pub(crate) loss: f64,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    deliveries: HashMap<u64, Delivery>,
    next_delivery: u64,
    /// Server-side receive buffers of open connections.
    server_conns: HashMap<ConnId, Vec<u8>>,
    /// Bytes that reached the server per connection (for the middlebox faults).
    server_rx: HashMap<ConnId, usize>,
    /// Every event with its time.
    pub(crate) events: Vec<(Instant, Event)>,
    /// Every action with its time.
    pub(crate) actions: Vec<(Instant, Action)>,
    /// Ends by task; a second end for one task panics.
    pub(crate) ends: BTreeMap<TaskId, (Instant, TaskEnd)>,
    /// [`Event::TasksEnded`] events seen (each recorded as its ends).
    pub(crate) end_batches: u64,
    /// Bytes for the client due at the same instant on one connection arrive in one read
    /// (else one read per frame the server sent).
    pub(crate) coalesce_reads: bool,
    /// Frames the server received: (time, conn, head).
    pub(crate) server_log: Vec<(Instant, ConnId, FrameHead)>,
    /// Addresses the resolver returns.
    pub(crate) resolved: Vec<ResolvedAddr>,
    /// Auth answers by host: `None` never answers.
    pub(crate) auth_answer: Option<Result<(), AuthError>>,
    /// The resolver never answers.
    pub(crate) resolve_silent: bool,
    /// Answers by source index (`None`: that source never answers); source 0 defaults to
    /// `resolved`, the others to an empty answer.
    pub(crate) source_answers: HashMap<usize, Option<Vec<ResolvedAddr>>>,
    /// How transport inspections are answered.
    pub(crate) transport: TransportAnswer,
    /// Client-to-server segments not delivered yet, per connection: delivery key → send
    /// time (segments a dead path swallowed stay here for good).
    unacked: HashMap<ConnId, BTreeMap<u64, Instant>>,
    /// When the client last got an acknowledgement, per connection: one latency after the
    /// server's side received a segment.
    acked_at: HashMap<ConnId, Instant>,
    /// Client-to-server sends and their retransmissions so far, per connection.
    sent_history: HashMap<ConnId, (u32, u32)>,
    /// Retransmissions the last [`Sim::link_delay`] drew.
    last_losses: u32,
    /// The client's uplink, when limited.
    pub(crate) uplink: Option<Uplink>,
    /// Per connection, the limited uplink's state.
    pipes: HashMap<ConnId, Pipe>,
}

/// The address of the default test server.
pub(crate) fn server_addr(last: u8) -> IpPort {
    IpPort::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), 8080)
}

/// The Mars codec with two twists for tests: it reserves, besides Mars's own, the sequence
/// numbers `reserves` picks; and with `ext_in_body` a request's extension is sent after its
/// body (the simulated server, which speaks plain Mars, echoes both), so a task's extension
/// shows in its response. It can also impose a heartbeat interval and wrap short-link bodies
/// in an envelope.
#[derive(Debug)]
pub(crate) struct MarsTwisted {
    pub(crate) mars: MarsCodec,
    pub(crate) ext_in_body: bool,
    pub(crate) reserves: fn(u32) -> bool,
    /// The heartbeat interval it imposes, if not Mars's.
    pub(crate) heartbeat_interval: Option<Option<Duration>>,
    /// A short-link body prefixed with these bytes (an envelope), if not Mars's.
    pub(crate) envelope: Option<&'static [u8]>,
}

impl MarsTwisted {
    pub(crate) fn new(ext_in_body: bool, reserves: fn(u32) -> bool) -> Self {
        MarsTwisted {
            mars: MarsCodec::default(),
            ext_in_body,
            reserves,
            heartbeat_interval: None,
            envelope: None,
        }
    }

    /// Mars's codec but for the fields set after it.
    pub(crate) fn plain() -> Self {
        Self::new(false, |_| false)
    }
}

impl PacketCodec for MarsTwisted {
    fn name(&self) -> &str {
        "mars-twisted"
    }

    fn encode(
        &self,
        head: FrameHead,
        body: &[u8],
        extension: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if !self.ext_in_body || extension.is_empty() {
            return self.mars.encode(head, body, extension, out);
        }
        self.mars
            .encode(head, &[body, extension].concat(), &[], out)
    }

    fn decode(&self, buf: &[u8]) -> Result<Decoded, DecodeError> {
        self.mars.decode(buf)
    }

    fn classify(&self, head: &FrameHead) -> FrameKind {
        self.mars.classify(head)
    }

    fn max_frame_len(&self) -> usize {
        self.mars.max_frame_len()
    }

    fn is_reserved_seq(&self, seq: Seq) -> bool {
        self.mars.is_reserved_seq(seq) || (self.reserves)(seq.0)
    }

    fn heartbeat_interval(&self) -> Option<Duration> {
        self.heartbeat_interval
            .unwrap_or_else(|| self.mars.heartbeat_interval())
    }

    fn shortlink_body(&self, req: &phobos_plugin_api::ShortLinkRequest<'_>, out: &mut Vec<u8>) {
        match self.envelope {
            Some(prefix) => {
                out.extend_from_slice(prefix);
                out.extend_from_slice(req.body);
            }
            None => self.mars.shortlink_body(req, out),
        }
    }
}

/// A config builder with the Mars codec and one link with fixed addresses.
pub(crate) fn config_with(addrs: &[IpPort]) -> ConfigBuilder {
    config_of(Arc::new(MarsCodec::default()), addrs)
}

/// [`config_with`] with `codec` for Mars's.
pub(crate) fn config_of(codec: Arc<dyn PacketCodec>, addrs: &[IpPort]) -> ConfigBuilder {
    Config::builder(codec)
        .link(
            LinkConfig::new("default-longlink")
                .addrs(addrs.iter().copied())
                .main(),
        )
        .seed(42)
}

impl Sim {
    /// A sim with one link to one accepting server, 20 ms one-way latency.
    pub(crate) fn new() -> Self {
        Sim::with_config(config_with(&[server_addr(1)]).build().unwrap())
    }

    /// A sim like [`Sim::new`] with no dial hedging (`Racing::hedges` 0): a connect cycle
    /// tries exactly the attempts the test plans for.
    pub(crate) fn without_hedges() -> Self {
        Sim::with_config(
            config_with(&[server_addr(1)])
                .racing(crate::Racing {
                    hedges: 0,
                    ..crate::Racing::default()
                })
                .build()
                .unwrap(),
        )
    }

    /// A sim like [`Sim::new`] with the Phobos stall probe off, for tests of the per-task
    /// timeouts and heartbeat deadlines the probe would otherwise pre-empt.
    pub(crate) fn without_probe() -> Self {
        Sim::with_config(
            config_with(&[server_addr(1)])
                .recovery(Recovery {
                    stall_probe: false,
                    ..Recovery::default()
                })
                .build()
                .unwrap(),
        )
    }

    pub(crate) fn with_config(config: Config) -> Self {
        Sim::with_config_at(config, crate::tests::epoch::epoch())
    }

    /// [`with_config`](Self::with_config) with virtual time starting at `t0` (two sims
    /// compared instant for instant start at the same one).
    pub(crate) fn with_config_at(config: Config, t0: Instant) -> Self {
        let engine = Engine::new(config, t0).unwrap();
        Sim {
            engine,
            t0,
            now: t0,
            codec: Arc::new(MarsCodec::default()),
            script: ServerScript::default(),
            latency: Duration::from_millis(20),
            loss: 0.0,
            rng: ChaCha8Rng::seed_from_u64(7),
            queue: BinaryHeap::new(),
            deliveries: HashMap::new(),
            next_delivery: 0,
            server_conns: HashMap::new(),
            server_rx: HashMap::new(),
            events: Vec::new(),
            actions: Vec::new(),
            ends: BTreeMap::new(),
            end_batches: 0,
            coalesce_reads: false,
            server_log: Vec::new(),
            resolved: vec![ResolvedAddr {
                ip: server_addr(1).ip,
                port: None,
                source: AddrSource::SystemDns,
            }],
            auth_answer: Some(Ok(())),
            resolve_silent: false,
            source_answers: HashMap::new(),
            transport: TransportAnswer::Modelled,
            unacked: HashMap::new(),
            acked_at: HashMap::new(),
            sent_history: HashMap::new(),
            last_losses: 0,
            uplink: None,
            pipes: HashMap::new(),
        }
    }

    /// Draws the network's random delays from `seed` instead of the default.
    pub(crate) fn reseed(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// Seconds since the start, as f64 (for readable assertions).
    pub(crate) fn secs(&self, t: Instant) -> f64 {
        t.duration_since(self.t0).as_secs_f64()
    }

    /// Virtual time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.now.duration_since(self.t0)
    }

    pub(crate) fn start(&mut self, spec: TaskSpec) -> TaskId {
        let id = self.engine.start_task(self.now, spec);
        self.drain();
        id
    }

    /// Admits `specs` as one batch ([`Engine::queue_task`], then one dispatch pass).
    pub(crate) fn start_batch(&mut self, specs: impl IntoIterator<Item = TaskSpec>) -> Vec<TaskId> {
        let now = self.now;
        let ids = specs
            .into_iter()
            .map(|spec| self.engine.queue_task(now, spec))
            .collect();
        self.engine.send_queued(now);
        self.drain();
        ids
    }

    /// Admits one task per `(command, body)` with `params`' parameters, as one batch
    /// ([`Engine::queue_tasks_like`], then one dispatch pass).
    pub(crate) fn start_batch_like(
        &mut self,
        params: &TaskSpec,
        requests: impl IntoIterator<Item = (CmdId, Vec<u8>)>,
    ) -> Vec<TaskId> {
        let now = self.now;
        let mut tasks: Vec<crate::LikeTask> = requests
            .into_iter()
            .map(|(cmd, body)| crate::LikeTask::new(cmd, body, 0))
            .collect();
        let params = std::sync::Arc::new(params.clone());
        self.engine.queue_tasks_like(now, &params, &mut tasks);
        self.engine.send_queued(now);
        self.drain();
        tasks.iter().map(|t| t.id).collect()
    }

    pub(crate) fn foreground(&mut self, fg: bool) {
        self.engine.set_foreground(self.now, fg);
        self.drain();
    }

    /// Runs until virtual time `d` from now has passed.
    pub(crate) fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until_instant(until);
    }

    /// Runs until `done` holds (checked after every step) or `limit` virtual time passed.
    /// Returns whether `done` held.
    pub(crate) fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> bool {
        let until = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            let Some(next) = self.next_instant() else {
                return false;
            };
            if next > until {
                self.now = until;
                return done(self);
            }
            self.step(next);
        }
    }

    /// Runs until `id` has ended; returns its end time and end.
    pub(crate) fn run_until_end(&mut self, id: TaskId, limit: Duration) -> (Duration, TaskEnd) {
        assert!(
            self.run_until(limit, |s| s.ends.contains_key(&id)),
            "{id} did not end within {limit:?}"
        );
        let (at, end) = self.ends[&id].clone();
        (at.duration_since(self.t0), end)
    }

    fn run_until_instant(&mut self, until: Instant) {
        while let Some(next) = self.next_instant() {
            if next > until {
                break;
            }
            self.step(next);
        }
        self.now = self.now.max(until);
    }

    fn next_instant(&self) -> Option<Instant> {
        let net = self.queue.peek().map(|Reverse((t, _))| *t);
        match (net, self.engine.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Jumps to `at`, delivers everything due, fires due timers, carries out the results.
    fn step(&mut self, at: Instant) {
        self.now = self.now.max(at);
        while let Some(&Reverse((t, key))) = self.queue.peek() {
            if t > self.now {
                break;
            }
            self.queue.pop();
            let mut delivery = self.deliveries.remove(&key).expect("queued delivery");
            if self.coalesce_reads {
                self.coalesce(&mut delivery);
            }
            if let Delivery::ToServer(conn, _) = &delivery {
                if let Some(pending) = self.unacked.get_mut(conn) {
                    pending.remove(&key);
                }
                let ack = self.now + self.latency;
                self.acked_at.insert(*conn, ack);
            }
            self.deliver(delivery);
            self.drain();
        }
        if self.engine.poll_timeout().is_some_and(|t| t <= self.now) {
            self.engine.handle_timeout(self.now);
            self.drain();
        }
    }

    /// Appends to `delivery`, bytes for the client, the bytes for the same connection
    /// due now right after it: one read, as a socket would give them.
    fn coalesce(&mut self, delivery: &mut Delivery) {
        let Delivery::ToClient(conn, bytes) = delivery else {
            return;
        };
        while let Some(&Reverse((t, key))) = self.queue.peek() {
            match self.deliveries.get(&key) {
                Some(Delivery::ToClient(c, _)) if t <= self.now && c == conn => {}
                _ => return,
            }
            self.queue.pop();
            if let Some(Delivery::ToClient(_, more)) = self.deliveries.remove(&key) {
                bytes.extend_from_slice(&more);
            }
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        match d {
            Delivery::Established(c) => self.engine.handle_established(now, c),
            Delivery::Connected(c) => self.engine.handle_connected(now, c),
            Delivery::ConnectFailed(c, e) => self.engine.handle_connect_failed(now, c, e),
            Delivery::ToClient(c, bytes) => self.engine.handle_bytes(now, c, &bytes),
            Delivery::ClosedByServer(c) => {
                self.engine.handle_closed(now, c, CloseCause::RemoteClosed)
            }
            Delivery::Resolved(link, host, source, addrs) => {
                self.engine
                    .handle_resolved(now, &link, &host, source, Ok(addrs))
            }
            Delivery::Auth(host) => {
                if let Some(answer) = self.auth_answer.clone() {
                    self.engine.handle_auth(now, &host, answer);
                }
            }
            Delivery::ToServer(c, bytes) => self.server_receive(c, &bytes),
            Delivery::Taken(c, n) => {
                if let Some(pipe) = self.pipes.get_mut(&c) {
                    pipe.unsent -= n;
                }
                self.report_unsent(c);
            }
        }
    }

    /// Hands `bytes` to a limited uplink's socket on `conn`: the pieces leave one after
    /// another at the uplink's rate and reach the server a latency after each has left.
    fn send_limited(&mut self, up: Uplink, conn: ConnId, bytes: &[u8]) {
        let now = self.now;
        let latency = self.latency;
        let mut plan = Vec::new();
        {
            let pipe = self.pipes.entry(conn).or_default();
            pipe.unsent += bytes.len() as u64;
            for piece in bytes.chunks(up.piece.max(1)) {
                if up.stop_after.is_some_and(|stop| pipe.planned >= stop) {
                    break;
                }
                let mut start = pipe.free_at.map_or(now, |f| f.max(now));
                if let Some((after, pause)) = up.pause {
                    if pipe.planned < after && pipe.planned + piece.len() as u64 >= after {
                        start += pause;
                    }
                }
                let took = Duration::from_nanos(piece.len() as u64 * 1_000_000_000 / up.rate);
                pipe.free_at = Some(start + took);
                pipe.planned += piece.len() as u64;
                if start == now {
                    pipe.unsent -= piece.len() as u64;
                }
                plan.push((start, start + took, piece.to_vec()));
            }
        }
        for (start, end, piece) in plan {
            if start > now {
                self.schedule(start - now, Delivery::Taken(conn, piece.len() as u64));
            }
            self.schedule(end - now + latency, Delivery::ToServer(conn, piece));
        }
        self.report_unsent(conn);
    }

    /// What a driver does after its writes: tells the engine what it holds on `conn`, if
    /// that changed.
    fn report_unsent(&mut self, conn: ConnId) {
        if !self.uplink.is_some_and(|u| u.report) {
            return;
        }
        let Some(pipe) = self.pipes.get_mut(&conn) else {
            return;
        };
        if pipe.unsent != pipe.reported {
            pipe.reported = pipe.unsent;
            let unsent = pipe.unsent;
            self.engine.handle_unsent(self.now, conn, unsent);
        }
    }

    /// Carries out every action and records every event.
    pub(crate) fn drain(&mut self) {
        while let Some(a) = self.engine.poll_action() {
            self.actions.push((self.now, a.clone()));
            self.act(a);
        }
        while let Some(e) = self.engine.poll_event() {
            // An end batch is recorded as the ends it stands for, so every test sees (and
            // the lane's differential test compares) one `TaskEnded` per task.
            if let Event::TasksEnded(batch) = e {
                assert!(batch.ends.len() >= 2, "an end batch of one end");
                self.end_batches += 1;
                let profiles: Vec<_> = batch.ends.iter().map(|e| batch.profile_of(e)).collect();
                for (end, profile) in batch.into_ends().zip(profiles) {
                    assert_eq!(*end.profile, profile, "{}: profile_of", end.id);
                    self.record_event(Event::TaskEnded(end));
                }
                continue;
            }
            self.record_event(e);
        }
    }

    /// Records event `e` (checking a task's end).
    fn record_event(&mut self, e: Event) {
        if let Event::TaskEnded(end) = &e {
            let prev = self.ends.insert(end.id, (self.now, end.clone()));
            assert!(prev.is_none(), "{} ended twice", end.id);
            assert_eq!(
                end.elapsed,
                end.profile.elapsed(),
                "{}: the end's elapsed time is not its profile's",
                end.id
            );
        }
        self.events.push((self.now, e));
    }

    fn act(&mut self, a: Action) {
        let rtt = self.latency * 2;
        match a {
            Action::Connect { .. } if self.script.lost_connects > 0 => {
                self.script.lost_connects -= 1;
            }
            Action::Connect { attempt, addr, .. } => {
                match self
                    .script
                    .reach
                    .get(&addr)
                    .copied()
                    .unwrap_or(Reach::Accept)
                {
                    Reach::Accept if self.script.handshake => {
                        self.schedule(rtt, Delivery::Established(attempt));
                        if self.script.stalled_handshakes > 0 {
                            self.script.stalled_handshakes -= 1;
                        } else {
                            self.server_conns.insert(attempt, Vec::new());
                            self.acked_at.insert(attempt, self.now + rtt * 2);
                            self.schedule(rtt * 2, Delivery::Connected(attempt));
                        }
                    }
                    Reach::Accept => {
                        self.server_conns.insert(attempt, Vec::new());
                        self.acked_at.insert(attempt, self.now + rtt);
                        self.schedule(rtt, Delivery::Connected(attempt));
                    }
                    Reach::Refuse => {
                        self.schedule(rtt, Delivery::ConnectFailed(attempt, DialError::Refused))
                    }
                    Reach::Blackhole => {}
                }
            }
            Action::Abort { attempt } => {
                self.server_conns.remove(&attempt);
            }
            Action::Send { conn, bytes, .. } if self.uplink.is_some() && !self.script.path_dead => {
                let up = self.uplink.expect("checked");
                self.send_limited(up, conn, &bytes);
            }
            Action::Send { conn, bytes, .. } => {
                let key = self.next_delivery;
                self.unacked.entry(conn).or_default().insert(key, self.now);
                if self.script.path_dead {
                    // Swallowed: it stays unacknowledged for good.
                    self.next_delivery += 1;
                } else {
                    let d = self.link_delay();
                    let history = self.sent_history.entry(conn).or_default();
                    history.0 += 1;
                    history.1 += self.last_losses;
                    self.schedule(d, Delivery::ToServer(conn, bytes.to_vec()));
                }
            }
            Action::Close { conn, .. } => {
                self.server_conns.remove(&conn);
            }
            Action::Resolve { .. } if self.resolve_silent => {}
            Action::Resolve {
                link, host, source, ..
            } => {
                let answer = match self.source_answers.get(&source) {
                    Some(answer) => answer.clone(),
                    None if source == 0 => Some(self.resolved.clone()),
                    None => Some(Vec::new()),
                };
                if let Some(addrs) = answer {
                    self.schedule(
                        Duration::from_millis(10),
                        Delivery::Resolved(link, host, source, addrs),
                    );
                }
            }
            Action::EnsureAuth { host } => {
                self.schedule(Duration::from_millis(50), Delivery::Auth(host));
            }
            // The short link has its own scenario tests (`tests/short.rs`).
            Action::ShortConnect { .. } | Action::HttpExchange { .. } => {}
            // Calls are answered by the schedule; a late answer is the core's to ignore.
            Action::CancelResolve { .. } => {}
            Action::InspectTransport { conn, .. } => {
                let facts = match self.transport {
                    TransportAnswer::Modelled => Some(self.transport_facts(conn)),
                    TransportAnswer::Unknown => None,
                    TransportAnswer::Fixed(f) => Some(f),
                    TransportAnswer::Silent => return,
                };
                self.engine.handle_transport(self.now, conn, facts);
            }
        }
    }

    /// What a TCP stack would report for `conn` on the simulated network: the oldest
    /// unacknowledged segment's retransmission timeouts so far ([`Sim::rto`], doubling, as
    /// in [`Sim::link_delay`]), the segments not delivered yet, when an acknowledgement
    /// last arrived, and the sends and retransmissions so far.
    pub(crate) fn transport_facts(&self, conn: ConnId) -> TransportFacts {
        let base = self.rto();
        let oldest = self
            .unacked
            .get(&conn)
            .and_then(|p| p.values().min().copied());
        let unacked = self.unacked.get(&conn).map_or(0, |p| p.len()) as u32;
        let mut backoff = 0u8;
        if let Some(sent) = oldest {
            // Timeouts that expired: at sent + 1, 3, 7, ... base timeouts.
            let mut expiry = sent + base;
            while expiry <= self.now && backoff < 16 {
                backoff += 1;
                expiry += base * (1u32 << backoff);
            }
        }
        let since_last_ack = self.acked_at.get(&conn).map_or(self.now - self.t0, |&t| {
            self.now.saturating_duration_since(t)
        });
        let (sent, retransmitted) = self.sent_history.get(&conn).copied().unwrap_or_default();
        TransportFacts::new(base * (1u32 << backoff), backoff, unacked, since_last_ack)
            .with_history(sent, retransmitted)
    }

    /// The simulated TCP's base retransmission timeout: the round trip plus Linux's 200 ms
    /// floor for the variance term.
    pub(crate) fn rto(&self) -> Duration {
        self.latency * 2 + Duration::from_millis(200)
    }

    fn link_delay(&mut self) -> Duration {
        let mut d = self.latency;
        let mut rto = self.rto();
        self.last_losses = 0;
        while self.loss > 0.0 && self.rng.gen_bool(self.loss) {
            d += rto;
            rto *= 2;
            self.last_losses += 1;
        }
        d
    }

    fn schedule(&mut self, after: Duration, d: Delivery) {
        let key = self.next_delivery;
        self.next_delivery += 1;
        self.deliveries.insert(key, d);
        self.queue.push(Reverse((self.now + after, key)));
    }

    /// Sends raw bytes from the server to the client on `conn` (after the latency).
    pub(crate) fn server_send(&mut self, conn: ConnId, bytes: Vec<u8>) {
        if self.script.path_dead {
            return;
        }
        let d = self.link_delay();
        self.schedule(d, Delivery::ToClient(conn, bytes));
    }

    /// The server closes `conn` now (the client learns after the latency).
    pub(crate) fn server_close(&mut self, conn: ConnId) {
        if self.server_conns.remove(&conn).is_some() {
            let d = self.latency;
            self.schedule(d, Delivery::ClosedByServer(conn));
        }
    }

    /// Every connection the engine closed: (time since the start, why).
    pub(crate) fn closes(&self) -> Vec<(Duration, crate::LinkError)> {
        self.actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Close { reason, .. } => Some((t.duration_since(self.t0), reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// Open server-side connections.
    pub(crate) fn open_conns(&self) -> Vec<ConnId> {
        let mut v: Vec<ConnId> = self.server_conns.keys().copied().collect();
        v.sort();
        v
    }

    fn server_receive(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(buf) = self.server_conns.get_mut(&conn) else {
            return;
        };
        let seen = self.server_rx.entry(conn).or_default();
        let limit = self.script.close_after.or(self.script.stall_after);
        let room = limit.map_or(usize::MAX, |l| l.saturating_sub(*seen));
        let bytes = &bytes[..bytes.len().min(room)];
        *seen += bytes.len();
        let cut = room <= bytes.len();
        buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        loop {
            match self.codec.decode(buf) {
                Ok(Decoded::Frame(f)) => {
                    frames.push((f.head, buf[f.body.clone()].to_vec()));
                    buf.drain(..f.len);
                }
                Ok(Decoded::Incomplete { .. }) => break,
                Err(_) => {
                    buf.clear();
                    break;
                }
            }
        }
        if cut && self.script.close_after.is_some() {
            // The middlebox kills the connection before the server answers anything more.
            self.server_close(conn);
            return;
        }
        for (head, body) in frames {
            self.server_log.push((self.now, conn, head));
            self.server_answer(conn, head, body);
        }
    }

    fn server_answer(&mut self, conn: ConnId, head: FrameHead, body: Vec<u8>) {
        let delay = self.script.process_delay;
        if head.cmd_id == HEARTBEAT_CMD {
            if self.script.heartbeat_replies {
                let frame = self.frame(HEARTBEAT_CMD, head.seq, &[]);
                self.later_send(conn, delay, frame);
            }
            return;
        }
        if head.seq == IDENTIFY_SEQ {
            if self.script.identify_replies {
                let frame = self.frame(head.cmd_id, IDENTIFY_SEQ, b"identified");
                self.later_send(conn, delay, frame);
            }
            return;
        }
        if head.seq == phobos_plugin_api::codec::SIGNAL_KEEP_SEQ {
            return;
        }
        let answer = self
            .script
            .answer_by_cmd
            .get(&head.cmd_id)
            .copied()
            .unwrap_or(self.script.answer);
        match answer {
            Answer::Echo => {
                let frame = self.frame(head.cmd_id, head.seq, &body);
                self.later_send(conn, delay, frame);
            }
            Answer::Delay(d) => {
                let frame = self.frame(head.cmd_id, head.seq, &body);
                self.later_send(conn, d, frame);
            }
            Answer::Longer => {
                let extra = body.get(1).map_or(0, |b| usize::from(b & 3));
                let mut longer = body;
                longer.resize(longer.len() + extra, 0x5A);
                let frame = self.frame(head.cmd_id, head.seq, &longer);
                self.later_send(conn, delay, frame);
            }
            Answer::Never => {}
            Answer::Dribble { chunks, every } => {
                let frame = self.frame(head.cmd_id, head.seq, &body);
                let size = frame.len().div_ceil(chunks.max(1));
                for (i, piece) in frame.chunks(size.max(1)).enumerate() {
                    self.later_send(conn, delay + every * i as u32, piece.to_vec());
                }
            }
            Answer::Garbage => self.later_send(conn, delay, vec![0xFF; 24]),
            Answer::Close => self.server_close(conn),
        }
    }

    fn later_send(&mut self, conn: ConnId, delay: Duration, bytes: Vec<u8>) {
        if self.script.path_dead {
            return;
        }
        let d = delay + self.link_delay();
        self.schedule(d, Delivery::ToClient(conn, bytes));
    }

    /// A frame in the Mars format.
    pub(crate) fn frame(&self, cmd: CmdId, seq: Seq, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.codec
            .encode(FrameHead::new(cmd, seq), body, &[], &mut out)
            .unwrap();
        out
    }

    /// Times (since start) of events matching `f`.
    pub(crate) fn event_times(&self, f: impl Fn(&Event) -> bool) -> Vec<Duration> {
        self.events
            .iter()
            .filter(|(_, e)| f(e))
            .map(|(t, _)| t.duration_since(self.t0))
            .collect()
    }

    /// Times (since start) of actions matching `f`.
    pub(crate) fn action_times(&self, f: impl Fn(&Action) -> bool) -> Vec<Duration> {
        self.actions
            .iter()
            .filter(|(_, a)| f(a))
            .map(|(t, _)| t.duration_since(self.t0))
            .collect()
    }

    /// Times (since start) at which the server received frames with this command id.
    pub(crate) fn server_frames(&self, cmd: CmdId) -> Vec<Duration> {
        self.server_log
            .iter()
            .filter(|(_, _, h)| h.cmd_id == cmd)
            .map(|(t, _, _)| t.duration_since(self.t0))
            .collect()
    }
}

/// Milliseconds as a duration.
pub(crate) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Seconds as a duration.
pub(crate) fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}
