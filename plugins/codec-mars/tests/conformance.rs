//! The testkit's codec conformance suite against `MarsCodec`, with the default configuration,
//! a client version, and a small frame limit.

use std::sync::Arc;

use phobos_codec_mars::{MarsCodec, MarsCodecConfig};

phobos_plugin_testkit::codec_conformance!(mars_default, || Arc::new(MarsCodec::default()));

phobos_plugin_testkit::codec_conformance!(mars_versioned, || Arc::new(
    MarsCodec::with_client_version(0x0607_0809)
));

phobos_plugin_testkit::codec_conformance!(mars_small_limit, || Arc::new(
    MarsCodec::new(MarsCodecConfig {
        client_version: 3,
        max_frame_len: 64,
    })
    .expect("64 bytes is a valid limit")
));

#[test]
#[should_panic(expected = "encoded bytes")]
fn codecs_with_different_versions_are_told_apart() {
    phobos_plugin_testkit::codec::assert_codecs_identical(
        &MarsCodec::with_client_version(1),
        &MarsCodec::with_client_version(2),
    );
}
