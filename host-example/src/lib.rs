//! `phobos-host-example`: a small IM app built on Phobos, as a library (the server, the chat
//! client, the demo) behind the `phobos-host-example` binary.
//!
//! - [`server`]: a tokio IM server speaking the configured codec on the long link (TLS by
//!   default) and HTTP on the short link; login by token, rooms and direct messages, fan-out as
//!   pushes, conversation list and history, dedupe of retried sends. In-memory state.
//! - [`proto`]: the chat protocol on top of Phobos's frames.
//! - [`tokens`]: login tokens.
//! - [`tls`]: the demo's throw-away CA and server certificate, or PEM files.
//!
//! What it deliberately does not do: persist anything, or scale past one process (see
//! [`server`]'s "What a production server would replace").

pub mod chat;
pub mod config;
pub mod demo;
pub mod logging;
pub mod plugins;
pub mod proto;
pub mod server;
mod shortlink;
pub mod tls;
pub mod tokens;
