//! The weak-network lab: network namespaces joined by veth pairs, `nft` and `tc` faults, the
//! connect-race measurement, the scenario matrix and the load run.
//!
//! - [`netns`]: [`Lab`](netns::Lab), two fresh namespaces joined by a veth pair with random
//!   loss, SYN drop, TCP reset and `tbf` rate limits between them; code runs inside one on a
//!   thread of its own.
//! - [`server`]: [`LabServer`](server::LabServer), an echo server (long link: Mars frames;
//!   short link: HTTP/1.1 `POST`) behind the fault proxy (latency, jitter, stream faults)
//!   inside the server namespace.
//! - [`contender`]: the clients compared, on either link: Phobos defaults, `mars-classic`,
//!   a naive client, and Phobos over TLS.
//! - [`tls`]: the lab's test CA and certificates for Phobos over TLS.
//! - [`recording`]: a connector that records every connect attempt.
//! - [`race`]: the connect race with dead addresses first.
//! - [`matrix`]: the scenario matrix (loss × latency and stream faults, both links, every
//!   contender, repeated runs pooled, the worst cells side by side); [`plot`] draws it as
//!   SVG.
//!
//! Everything here needs root and stays inside the namespaces it creates; tests skip (and
//! say why) without root unless `PHOBOS_LAB_REQUIRED` is set.
//!
//! # Running it
//!
//! ```text
//! cargo test -p phobos-lab                                   # lab, race and short-matrix tests
//! cargo run --release -p phobos-lab --bin lab-race           # docs/lab/race.md
//! cargo run --release -p phobos-lab --bin lab-matrix         # docs/lab/matrix.md + SVGs
//! cargo run --release -p phobos-lab --bin lab-matrix -- --cells "30 %" --runs 5 --out /tmp/m
//! cargo run --release -p phobos-lab --bin load               # 1,000 links × 100,000 tasks
//! ```
//!
//! # Design notes
//!
//! - **Fresh namespaces per lab, veth created inside them.** No interface, rule or qdisc ever
//!   exists in the caller's namespace, and deleting the two namespaces removes everything, so
//!   cleanup cannot miss anything. Every lab can reuse `10.77.0.0/24` because no two labs
//!   share a namespace. Names carry the pid (`phobos-lab-<pid>-<n>-<c|s>`), so a sweep can
//!   tell leftovers of killed runs from labs in use.
//! - **Loss on input, per direction.** Each namespace drops N % of what arrives on its veth
//!   end, so a request/response pair crosses two independent N % losses, as on a real path.
//! - **Latency from the fault proxy, not netem** (no `sch_netem` here). The proxy delays the
//!   byte stream, not packets, so ACK clocking and retransmission timers see the bare veth
//!   RTT; loss (nft) acts on packets, so TCP's own recovery is exercised for real.
//! - **Attempts are recorded by the connector**, independently of the client under test, and
//!   cross-checked against the client's own connect-cycle report.
//! - **Tests assert structure, never time**: which addresses were tried in which order, how
//!   each attempt ended, one end per task, that faults bite. Timings are printed and written by
//!   the bins.

pub mod contender;
pub mod matrix;
pub mod netns;
pub mod plot;
pub mod race;
pub mod recording;
pub mod server;
pub mod tls;

/// Whether lab tests can run here. Without root (or without `nft`, which it tries to
/// install), prints why and returns `false` — unless the environment variable
/// `PHOBOS_LAB_REQUIRED` is set (CI sets it), in which case it panics with the reason.
///
/// # Panics
///
/// When the lab is unavailable and `PHOBOS_LAB_REQUIRED` is set.
pub fn lab_available() -> bool {
    let reason = match netns::check_root().and_then(|()| netns::ensure_tools()) {
        Ok(()) => return true,
        Err(e) => e.to_string(),
    };
    if std::env::var_os("PHOBOS_LAB_REQUIRED").is_some() {
        panic!("PHOBOS_LAB_REQUIRED is set but the lab cannot run: {reason}");
    }
    eprintln!("skipping the namespace lab: {reason} (set PHOBOS_LAB_REQUIRED to make this fail)");
    false
}
