//! History pages that would not fit in one long-link frame are cut to fit, so a member can
//! always page through a conversation (the client's catch-up asks for 500 messages at once).

use std::sync::Arc;

use phobos_host_example::config::HostConfig;
use phobos_host_example::plugins::LoadedPlugins;
use phobos_host_example::proto::{
    self, HistoryPage, HistoryRequest, Reply, SendAck, SendRequest, Target,
};
use phobos_host_example::server::{Server, ServerConfig};
use phobos_host_example::tokens::TokenIssuer;
use phobos_plugin_api::codec::{IDENTIFY_SEQ, PUSH_SEQ};
use phobos_plugin_api::{CmdId, Decoded, FrameHead, PacketCodec, Seq};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn codec() -> Arc<dyn PacketCodec> {
    let config = HostConfig::load(None).expect("built-in config");
    LoadedPlugins::load(&config, &[]).expect("plugins").codec
}

struct Raw {
    stream: TcpStream,
    codec: Arc<dyn PacketCodec>,
    buf: Vec<u8>,
    next_seq: u32,
}

impl Raw {
    async fn write(&mut self, head: FrameHead, body: &[u8]) {
        let mut out = Vec::new();
        self.codec
            .encode(head, body, &[], &mut out)
            .expect("encode");
        self.stream.write_all(&out).await.expect("write");
    }

    async fn read(&mut self) -> Option<(FrameHead, Vec<u8>)> {
        loop {
            if let Decoded::Frame(f) = self.codec.decode(&self.buf).expect("valid frame") {
                let body = self.buf[f.body.clone()].to_vec();
                self.buf.drain(..f.len);
                return Some((f.head, body));
            }
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The reply to a request (pushes skipped), or `None` if the server closed the link.
    async fn call(&mut self, cmd: CmdId, body: &[u8]) -> Option<Vec<u8>> {
        let seq = Seq(self.next_seq);
        self.next_seq += 1;
        self.write(FrameHead::new(cmd, seq), body).await;
        loop {
            let (head, body) = self.read().await?;
            if head.seq != PUSH_SEQ {
                assert_eq!(head.seq, seq);
                return Some(body);
            }
        }
    }
}

#[tokio::test]
async fn a_history_page_too_large_for_one_frame_is_cut_and_the_rest_can_be_paged() {
    let tokens = TokenIssuer::new("test-secret");
    let server = Server::start(ServerConfig::new(codec(), tokens.clone()))
        .await
        .expect("start");
    let mut alice = Raw {
        stream: TcpStream::connect(server.long_link_addr()).await.unwrap(),
        codec: codec(),
        buf: Vec::new(),
        next_seq: 1,
    };
    let token = tokens.issue("alice").unwrap();
    let mut body = vec![0x01];
    body.extend_from_slice(&(token.len() as u16).to_be_bytes());
    body.extend_from_slice(token.as_bytes());
    alice
        .write(
            FrameHead::new(phobos_auth_basic::DEFAULT_IDENTIFY_CMD, IDENTIFY_SEQ),
            &body,
        )
        .await;
    assert_eq!(alice.read().await.expect("identify reply").1, vec![0x00]);

    // 60 messages of the longest text, each of whose bytes JSON writes as `\u0001`
    // (~24 KiB a message): ~1.4 MiB in all, more than the codec's 1 MiB frame.
    let text = "\u{1}".repeat(proto::MAX_TEXT_LEN);
    let total = 60u64;
    for i in 0..total {
        let req = SendRequest {
            client_msg_id: format!("m{i}"),
            to: Target::Room("big".into()),
            text: text.clone(),
        };
        let reply = alice
            .call(proto::CMD_SEND, &serde_json::to_vec(&req).unwrap())
            .await
            .expect("send reply");
        assert!(matches!(
            serde_json::from_slice::<Reply<SendAck>>(&reply),
            Ok(Reply::Ok(_))
        ));
    }

    let mut after_seq = 0;
    let mut pages = 0;
    loop {
        let req = HistoryRequest {
            conversation: proto::room_conversation("big"),
            after_seq,
            limit: proto::MAX_HISTORY_PAGE,
        };
        let reply = alice
            .call(proto::CMD_HISTORY, &serde_json::to_vec(&req).unwrap())
            .await
            .expect("a history reply, not a closed link");
        let page = match serde_json::from_slice::<Reply<HistoryPage>>(&reply).unwrap() {
            Reply::Ok(page) => page,
            Reply::Error(e) => panic!("history refused: {e}"),
        };
        pages += 1;
        for m in &page.messages {
            assert_eq!(m.seq, after_seq + 1, "pages are contiguous");
            assert_eq!(m.text, text);
            after_seq = m.seq;
        }
        if !page.more {
            break;
        }
        assert!(pages < 10, "paging makes progress");
    }
    assert_eq!(after_seq, total, "every message came back");
    assert!(pages >= 2, "the page was cut to fit a frame");
    assert_eq!(server.stats().long_link_open, 1, "the link stayed up");
    server.shutdown().await;
}
