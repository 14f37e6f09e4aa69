//! Names of the metrics the driver records through the `metrics` facade.
//!
//! Nothing is recorded unless the host installs a recorder; without one every call is a
//! no-op. Link metrics carry a `link` label.

/// Counter: tasks started.
pub const TASKS_STARTED: &str = "phobos_stn_tasks_started_total";
/// Counter: tasks ended (label `outcome`: `ok`, or the error kind such as `timeout_first_packet`).
pub const TASKS_ENDED: &str = "phobos_stn_tasks_ended_total";
/// Counter: attempts that failed and were retried.
pub const TASKS_RETRIED: &str = "phobos_stn_tasks_retried_total";
/// Histogram: seconds from start to end of a task (label `outcome`).
pub const TASK_SECONDS: &str = "phobos_stn_task_seconds";
/// Counter: long-link status changes (labels `link`, `status`).
pub const LINK_STATUS: &str = "phobos_stn_link_status_total";
/// Gauge: long links currently connected.
pub const LINKS_CONNECTED: &str = "phobos_stn_links_connected";
/// Counter: connect attempts started (label `link`).
pub const CONNECT_ATTEMPTS: &str = "phobos_stn_connect_attempts_total";
/// Counter: bytes handed to connections to write: long-link frames (counted as queued, so a
/// backlog dropped with its connection counts too) and short-link request bodies.
pub const BYTES_SENT: &str = "phobos_stn_bytes_sent_total";
/// Counter: bytes read on long links (short-link responses are not counted).
pub const BYTES_RECEIVED: &str = "phobos_stn_bytes_received_total";
/// Counter: pushes received (label `link`).
pub const PUSHES: &str = "phobos_stn_pushes_total";
/// Counter: heartbeats answered (label `link`).
pub const HEARTBEAT_ACKS: &str = "phobos_stn_heartbeat_acks_total";
/// Counter: watchdog reports (label `what`).
pub const STALL_COUNTER: &str = "phobos_stn_watchdog_stalls_total";

/// [`TASKS_STARTED`] as a static key.
pub(crate) static TASKS_STARTED_KEY: metrics::Key = metrics::Key::from_static_name(TASKS_STARTED);
/// [`BYTES_SENT`] as a static key.
pub(crate) static BYTES_SENT_KEY: metrics::Key = metrics::Key::from_static_name(BYTES_SENT);
/// [`BYTES_RECEIVED`] as a static key.
pub(crate) static BYTES_RECEIVED_KEY: metrics::Key = metrics::Key::from_static_name(BYTES_RECEIVED);

/// Metadata of the driver's metrics, as `metrics::counter!` would give them.
static META: metrics::Metadata<'static> = metrics::Metadata::new(
    "phobos_stn::driver",
    metrics::Level::INFO,
    Some("phobos_stn::driver"),
);

/// Adds `n` to the counter `key`.
///
/// Design: for the counters touched once or more per task; `counter!(NAME)` builds its key
/// on every call, recorder or not, which showed up in the per-task instruction count.
pub(crate) fn count(key: &'static metrics::Key, n: u64) {
    metrics::with_recorder(|r| r.register_counter(key, &META).increment(n));
}
