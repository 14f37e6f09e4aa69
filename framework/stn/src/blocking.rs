//! [`BlockingClient`]: the same driver, for hosts without an async runtime (FFI).

use std::io;
use std::thread::JoinHandle;

use phobos_plugin_api::NetKind;
use phobos_stn_proto::{ConfigError, LinkName, LinkStatus, Response, TaskError, TaskSpec};
use tokio::sync::oneshot;

use crate::batch::TaskBatch;
use crate::client::{
    Client, DriverStats, LinkEvents, PushStream, StreamError, TaskHandle, TaskKey,
};
use crate::config::ClientConfig;
use crate::driver::Command;
use crate::handler::{EndHandler, HandlerError};

/// A client whose driver runs on its own thread (a current-thread tokio runtime named
/// `phobos-stn`). Every method may be called from any thread outside async code; nothing
/// here needs a runtime. Dropping it (or [`shutdown`](Self::shutdown)) stops the driver and
/// joins the thread; unfinished tasks end with
/// [`LocalError::Reset`](phobos_stn_proto::LocalError::Reset). It does not wait for a call
/// into a blocking (loaded) plugin that is still running: that call ends on its own thread.
///
/// ```no_run
/// # use std::sync::Arc;
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use phobos_plugin_api::CmdId;
/// use phobos_stn::{BlockingClient, ClientConfig, TaskSpec};
///
/// let codec = Arc::new(phobos_codec_mars::MarsCodec::default());
/// let config = ClientConfig::builder(codec)
///     .link_addrs("default-longlink", ["127.0.0.1:8080".parse::<std::net::SocketAddr>()?.into()])
///     .build()?;
/// let client = BlockingClient::start(config)?;
/// let response = client.run_task(TaskSpec::new(CmdId(7), &b"hello"[..]))?;
/// # drop(response); Ok(()) }
/// ```
#[derive(Debug)]
pub struct BlockingClient {
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BlockingClient {
    /// Starts the driver thread.
    ///
    /// # Errors
    ///
    /// When the engine refuses the config, or the runtime or the thread cannot be created.
    pub fn start(config: ClientConfig) -> Result<Self, StartError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (client_tx, client_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("phobos-stn".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let client = match Client::start(config) {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = client_tx.send(Err(e));
                            return;
                        }
                    };
                    if client_tx.send(Ok(client.clone())).is_err() {
                        return;
                    }
                    // Runs until asked to stop (or the BlockingClient is gone).
                    let _ = stop_rx.await;
                    client.shutdown().await;
                });
                // Design: not a plain drop, which would wait for every call still running on
                // the blocking pool: a loaded plugin blocked in a call the driver gave up
                // would hold the join. It finishes on its own thread; its answer is dropped.
                runtime.shutdown_background();
            })?;
        let client = client_rx
            .recv()
            .map_err(|_| io::Error::other("the driver thread stopped during start"))??;
        Ok(BlockingClient {
            client,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Starts a task; [`TaskHandle::wait`] blocks for its end.
    pub fn start_task(&self, spec: TaskSpec) -> TaskHandle {
        self.client.start_task(spec)
    }

    /// Runs a task to its end, blocking the thread.
    ///
    /// # Errors
    ///
    /// The [`TaskError`] that ended the task.
    pub fn run_task(&self, spec: TaskSpec) -> Result<Response, TaskError> {
        self.client.start_task(spec).wait()
    }

    /// Starts many tasks with one command (see [`Client::start_tasks`]);
    /// [`TaskBatch::blocking_recv_many`] blocks for their ends.
    pub fn start_tasks(&self, specs: impl IntoIterator<Item = TaskSpec>) -> TaskBatch {
        self.client.start_tasks(specs)
    }

    /// Runs `handler` on the driver (see [`Client::run_on_driver`]) and blocks the thread
    /// until it finished.
    ///
    /// # Errors
    ///
    /// Why the handler did not finish: it panicked, or the client shut down first.
    pub fn run_on_driver<H: EndHandler>(&self, handler: H) -> Result<H, HandlerError<H>> {
        self.client.run_on_driver(handler).wait()
    }

    /// Cancels a task (see [`Client::cancel`]).
    pub fn cancel(&self, key: TaskKey) {
        self.client.cancel(key);
    }

    /// See [`Client::subscribe_pushes`]; use [`PushStream::blocking_recv`].
    pub fn subscribe_pushes(&self) -> PushStream {
        self.client.subscribe_pushes()
    }

    /// See [`Client::link_events`].
    pub fn link_events(&self) -> LinkEvents {
        self.client.link_events()
    }

    /// See [`Client::link_status`].
    pub fn link_status(&self, link: &str) -> Option<LinkStatus> {
        self.client.link_status(link)
    }

    /// See [`Client::set_foreground`].
    pub fn set_foreground(&self, foreground: bool) {
        self.client.set_foreground(foreground);
    }

    /// See [`Client::set_network`].
    pub fn set_network(&self, kind: NetKind, label: impl Into<String>) {
        self.client.set_network(kind, label);
    }

    /// See [`Client::make_sure_connected`].
    pub fn make_sure_connected(&self, link: impl Into<LinkName>) {
        self.client.make_sure_connected(link);
    }

    /// See [`Client::set_account`].
    pub fn set_account(&self, has_account: bool) {
        self.client.set_account(has_account);
    }

    /// See [`Client::redo_tasks`].
    pub fn redo_tasks(&self) {
        self.client.redo_tasks();
    }

    /// See [`Client::keep_signalling`].
    pub fn keep_signalling(&self) {
        self.client.keep_signalling();
    }

    /// See [`Client::stop_signalling`].
    pub fn stop_signalling(&self) {
        self.client.stop_signalling();
    }

    /// The driver's counters, blocking.
    ///
    /// # Errors
    ///
    /// [`StreamError::Closed`] when the driver has stopped.
    pub fn stats(&self) -> Result<DriverStats, StreamError> {
        let (tx, rx) = oneshot::channel();
        if !self.client.send(Command::Stats(tx)) {
            return Err(StreamError::Closed);
        }
        rx.blocking_recv().map_err(|_| StreamError::Closed)
    }

    /// The async handle to the same driver (for hosts mixing both styles).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stops the driver and joins its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why a [`BlockingClient`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The engine refused the config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The runtime or the thread could not be created.
    #[error("cannot start the driver thread: {0}")]
    Io(#[from] io::Error),
}

impl Drop for BlockingClient {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
