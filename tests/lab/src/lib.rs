//! The weak-network lab: network namespaces joined by veth pairs, `nft` and `tc` faults, the
//! connect-race measurement, the scenario matrix and the load run.
//!
//! - [`netns`]: [`Lab`](netns::Lab), two fresh namespaces joined by a veth pair with random
//!   loss, SYN drop, TCP reset and `tbf` rate limits between them; code runs inside one on a
//!   thread of its own.
//! - [`server`]: [`LabServer`](server::LabServer), an echo long-link server behind the
//!   fault proxy (latency, jitter, stream faults) inside the server namespace.
//! - [`contender`]: the clients compared: Phobos defaults, `mars-classic`, and a naive
//!   client.
//! - [`recording`]: a connector that records every connect attempt.
//! - [`race`]: the connect race with dead addresses first.
//! - [`matrix`]: the scenario matrix (loss × latency and stream faults, every contender);
//!   [`plot`] draws it as SVG.
//!
//! Everything here needs root and stays inside the namespaces it creates; tests skip (and
//! say why) without root unless `PHOBOS_LAB_REQUIRED` is set.

pub mod contender;
pub mod matrix;
pub mod netns;
pub mod plot;
pub mod race;
pub mod recording;
pub mod server;

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
