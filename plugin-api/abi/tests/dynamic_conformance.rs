//! Plugins loaded from real libraries behave exactly like the same plugins in-process.
//!
//! The Mars codec runs `phobos-plugin-testkit`'s codec suite twice, in-process and loaded from
//! `plugins/codec-mars` built as a cdylib, and the two are compared byte for byte. Every other
//! kind is loaded from one fixture library and checked through its adapter.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fixtures;
use phobos_codec_mars::{MarsCodec, MarsCodecConfig};
use phobos_plugin_abi::{PluginKind, PluginLibrary};
use phobos_plugin_api::codec::{Decoded, FrameHead, PacketCodec};
use phobos_plugin_api::{
    AddrSource, AuthError, CipherKind, CmdId, HeartbeatContext, IdentifyRequest, LinkPurpose, Seq,
};

fn loaded_mars(config: Option<&str>) -> Arc<dyn PacketCodec> {
    PluginLibrary::load(&fixtures().mars)
        .unwrap()
        .codec("mars", config)
        .unwrap()
}

phobos_plugin_testkit::codec_conformance!(mars_in_process, || {
    Arc::new(MarsCodec::new(MarsCodecConfig::default()).unwrap()) as Arc<dyn PacketCodec>
});

phobos_plugin_testkit::codec_conformance!(mars_loaded_from_its_library, || loaded_mars(None));

#[test]
fn loaded_mars_codec_gives_identical_bytes_to_the_in_process_one() {
    let in_process = MarsCodec::new(MarsCodecConfig::default()).unwrap();
    phobos_plugin_testkit::codec::assert_codecs_identical(&in_process, &*loaded_mars(None));

    let config = MarsCodecConfig {
        client_version: 0x0102,
        max_frame_len: 4096,
    };
    let in_process = MarsCodec::new(config).unwrap();
    let loaded = loaded_mars(Some(r#"{ "client_version": 258, "max_frame_len": 4096 }"#));
    phobos_plugin_testkit::codec::assert_codecs_identical(&in_process, &*loaded);
    assert_eq!(loaded.max_frame_len(), 4096);
}

#[test]
fn loaded_mars_codec_refuses_a_bad_config_with_its_own_message() {
    let lib = PluginLibrary::load(&fixtures().mars).unwrap();
    assert!(lib.has_plugin(PluginKind::Codec, "mars"));
    let err = lib
        .codec("mars", Some(r#"{ "max_frame_len": 99999999 }"#))
        .unwrap_err();
    let direct = MarsCodec::new(MarsCodecConfig {
        max_frame_len: 99_999_999,
        ..MarsCodecConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, phobos_plugin_abi::LoadError::ConfigRejected { message, .. }
            if *message == direct.to_string()),
        "{err:?}"
    );
}

#[test]
fn every_plugin_kind_works_when_loaded_from_one_library() {
    let lib = PluginLibrary::load(&fixtures().multi).unwrap();

    let codec = lib.codec("len", Some(r#"{ "level": 2 }"#)).unwrap();
    assert_eq!(codec.name(), "len");
    let mut wire = Vec::new();
    codec
        .encode(FrameHead::new(CmdId(3), Seq(9)), b"abc", b"", &mut wire)
        .unwrap();
    assert_eq!(wire[0], 2);
    let Ok(Decoded::Frame(frame)) = codec.decode(&wire) else {
        panic!("whole frame not decoded");
    };
    assert_eq!(&wire[frame.body], b"abc");

    let auth = lib.auth("once", None).unwrap();
    assert!(!auth.is_authed("a.example"));
    assert_eq!(
        pollster::block_on(auth.ensure_authed("denied.example")),
        Err(AuthError::Rejected("denied.example refuses us".into()))
    );
    assert_eq!(pollster::block_on(auth.ensure_authed("a.example")), Ok(()));
    assert!(auth.is_authed("a.example"));
    assert_eq!(
        auth.identify_request("main"),
        IdentifyRequest::Now {
            cmd_id: CmdId(205),
            body: b"main".to_vec(),
            hash: vec![7]
        }
    );

    let source = lib
        .ip_source("list", Some(r#"{ "addrs": ["10.0.0.7", "::1"] }"#))
        .unwrap();
    let addrs = pollster::block_on(source.resolve("x.example", LinkPurpose::LongLink)).unwrap();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0].ip.to_string(), "10.0.0.7");
    assert_eq!(addrs[1].port, Some(8080));
    assert!(addrs.iter().all(|a| a.source == AddrSource::Debug));
    assert!(pollster::block_on(source.resolve("", LinkPurpose::ShortLink)).is_err());

    let cipher = lib.log_cipher("xor", None).unwrap();
    assert_eq!(cipher.kind(), CipherKind::Authenticated);
    let mut enc = cipher.new_encryptor().unwrap();
    let mut sealed = Vec::new();
    let n = enc.encrypt(b"hello", &mut sealed).unwrap();
    assert_eq!(n, 4);
    enc.finish_block(&b"hello"[n..], &mut sealed).unwrap();
    let mut plain = Vec::new();
    cipher
        .new_decryptor(&enc.header_key())
        .unwrap()
        .decrypt_block(&sealed, &mut plain)
        .unwrap();
    assert_eq!(plain, b"hello");

    let heartbeat = lib.heartbeat("step", Some("45")).unwrap();
    let t0 = Instant::now();
    let ctx = HeartbeatContext::default();
    let mut policy = heartbeat.build(t0, &ctx);
    assert_eq!(
        policy.next_interval(t0 + Duration::from_secs(10), &ctx),
        Some(Duration::from_secs(55))
    );
    policy.on_ack(t0, Duration::from_millis(30));
    assert_eq!(
        policy.next_interval(t0, &ctx),
        Some(Duration::from_secs(46))
    );
    assert_eq!(heartbeat.export_state().as_deref(), Some("45"));
    assert!(heartbeat.import_state("70"));
    assert!(!heartbeat.import_state("seventy"));
    assert_eq!(heartbeat.export_state().as_deref(), Some("70"));
}
