//! An event emitted while the layer is formatting another one on the same thread (from a
//! field's `Debug`, or from a panic hook when that `Debug` panics) is logged, not dropped.

use std::fmt;

mod common;
use common::{decoded, global_logger};

/// Logs an event of its own while being formatted.
struct LogsWhileFormatted;

impl fmt::Debug for LogsWhileFormatted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        tracing::warn!("from inside a field");
        f.write_str("outer-value")
    }
}

/// Panics while being formatted.
struct PanicsWhileFormatted;

impl fmt::Debug for PanicsWhileFormatted {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("formatting failed")
    }
}

#[test]
fn events_emitted_while_an_event_is_formatted_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    // The global dispatcher (a scoped one drops nested events before any layer sees them);
    // this file holds one test, so it is the only one to set it.
    let guard = global_logger(dir.path());
    tracing::info!(v = ?LogsWhileFormatted, "outer");
    // A panic hook that logs the panic, as apps do: the panic happens inside the layer.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| tracing::error!("panicked: {info}")));
    let caught = std::panic::catch_unwind(|| {
        tracing::info!(v = ?PanicsWhileFormatted, "doomed");
    });
    std::panic::set_hook(previous);
    assert!(caught.is_err());
    tracing::info!("afterwards");
    drop(guard);

    let text = decoded(dir.path());
    assert!(text.contains("][from inside a field\n"), "{text}");
    assert!(text.contains("][outer v=outer-value\n"), "{text}");
    assert!(text.contains("panicked: panicked at"), "{text}");
    assert!(text.contains("formatting failed"), "{text}");
    assert!(text.contains("][afterwards\n"), "{text}");
}
