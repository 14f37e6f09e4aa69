//! An event from a thread-local destructor (a pool or connection kept in a thread-local that
//! logs when the thread ends) is logged; it used to find the logger's own thread-locals gone
//! and panic inside a destructor, which aborts the process.

use phobos_xlog::{Xlog, XlogLayer};
use tracing_subscriber::prelude::*;

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
    let guard = Xlog::builder()
        .log_dir(dir.path())
        .name_prefix("x")
        .banners(false)
        .build()
        .unwrap();
    // The global dispatcher: a scoped one is itself a thread-local, gone by then. This file
    // holds one test, so it is the only one to set it.
    let sub = tracing_subscriber::registry().with(XlogLayer::new(guard.xlog()));
    tracing::subscriber::set_global_default(sub).unwrap();
    std::thread::spawn(|| {
        // Registered before the logger's thread-locals, so destroyed after them.
        LOGS_ON_DROP.with(|_| ());
        tracing::info!("worker started");
    })
    .join()
    .unwrap();
    drop(guard);

    let mut text = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "xlog") {
            text.extend(phobos_xlog_decode::Decoder::new().decode(&std::fs::read(path).unwrap()));
        }
    }
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("][worker started\n"), "{text}");
    assert!(
        text.contains("][closing from a thread-local destructor thread=worker\n"),
        "{text}"
    );
}
