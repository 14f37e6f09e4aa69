//! Short-link requests: Phobos short-link tasks (one HTTP/1.1 `POST` each, Mars's request
//! shape, retried by the engine like any task).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use phobos_plugin_api::CmdId;
use phobos_stn::{ChannelSelect, Client, TaskSpec};

use crate::chat::ChatError;

/// Posts `body` to `path` on `addr` as a short-link task and returns the response body.
pub(crate) async fn post(
    stn: &Client,
    addr: SocketAddr,
    path: &str,
    body: Bytes,
    retry_count: u32,
    timeout: Duration,
) -> Result<Bytes, ChatError> {
    // Command id 0: the task has no long-link form.
    let mut spec = TaskSpec::new(CmdId(0), body)
        .with_channel(ChannelSelect::Short)
        .with_short_link(path, [addr.to_string()]);
    spec.retry_count = Some(retry_count);
    spec.total_timeout = Some(timeout);
    // Queries are interactive: one that failed its attempts ends with the error, rather
    // than wait as a zombie (spec §14) for the rest of the send timeout, which may be
    // minutes. Network-status sensitive tasks are never zombies (they also fail at once
    // with no network, which suits a query too).
    spec.network_sensitive = true;
    // Repeated identical requests (the same history page) are legitimate.
    spec.limit_frequency = false;
    let resp = stn.start_task(spec).await?;
    Ok(resp.body)
}
