//! An event from a thread-local destructor (a pool or connection kept in a thread-local that
//! logs when the thread ends) is logged; it used to find the logger's own thread-locals gone
//! and panic inside a destructor, which aborts the process.

mod common;
use common::{decoded, global_logger};

struct LogsOnDrop;

impl Drop for LogsOnDrop {
    fn drop(&mut self) {
        tracing::info!(thread = "worker", "closing from a thread-local destructor");
    }
}

thread_local! {
    static LOGS_ON_DROP: LogsOnDrop = const { LogsOnDrop };
}

#[test]
fn an_event_from_a_thread_local_destructor_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    // The global dispatcher: a scoped one is itself a thread-local, gone by then. This file
    // holds one test, so it is the only one to set it.
    let guard = global_logger(dir.path());
    std::thread::spawn(|| {
        // Registered before the logger's thread-locals, so destroyed after them.
        LOGS_ON_DROP.with(|_| ());
        tracing::info!("worker started");
    })
    .join()
    .unwrap();
    drop(guard);

    let text = decoded(dir.path());
    assert!(text.contains("][worker started\n"), "{text}");
    assert!(
        text.contains("][closing from a thread-local destructor thread=worker\n"),
        "{text}"
    );
}
