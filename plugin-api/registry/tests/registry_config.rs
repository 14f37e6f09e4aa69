//! Building plugin sets from the built-ins, the builder and the `[plugins]` TOML table.

use std::sync::Arc;
use std::time::Instant;

use phobos_plugin_api::codec::{Decoded, FrameHead, PacketCodec};
use phobos_plugin_api::{CmdId, HeartbeatContext, IdentifyRequest, LinkPurpose, ResolvedAddr, Seq};
use phobos_plugin_registry::{
    Origin, PluginKind, PluginSpec, Plugins, PluginsConfig, Registry, RegistryError,
};

#[test]
fn default_plugins_work_out_of_the_box() {
    let p = Plugins::default();
    assert_eq!(
        (p.codec.name(), p.codec.origin()),
        ("mars", &Origin::BuiltIn)
    );
    assert_eq!(p.auth.name(), "none");
    assert!(p.auth.is_authed("any.example"));
    assert_eq!(p.heartbeat.name(), "fixed");
    let names: Vec<&str> = p.ip_sources.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["system-dns"]);
    assert!(p.log_cipher.is_none());

    let mut wire = Vec::new();
    p.codec
        .encode(FrameHead::new(CmdId(1), Seq(2)), b"x", &[], &mut wire)
        .unwrap();
    assert_eq!(wire.len(), 21, "Mars's 20-byte header");
    let mut policy = p
        .heartbeat
        .build(Instant::now(), &HeartbeatContext::default());
    assert_eq!(
        policy.next_interval(Instant::now(), &HeartbeatContext::default()),
        Some(std::time::Duration::from_secs(210))
    );
}

#[test]
fn the_builder_replaces_only_what_it_is_given() {
    let codec: Arc<dyn PacketCodec> =
        Arc::new(phobos_codec_mars::MarsCodec::with_client_version(7));
    let p = Plugins::builder()
        .codec(Arc::clone(&codec))
        .ip_source(Arc::new(phobos_ipsource::BackupList::default()))
        .build();
    assert!(Arc::ptr_eq(p.codec.get(), &codec));
    assert_eq!(p.codec.origin(), &Origin::App);
    assert_eq!(p.ip_sources.len(), 1);
    assert_eq!(p.ip_sources[0].name(), "backup");
    assert_eq!(p.auth.name(), "none");
}

#[test]
fn toml_selects_built_ins_by_name_with_config() {
    let registry = Registry::with_builtins();
    let p = registry
        .build_from_toml(
            r#"
            [plugins]
            codec = { name = "mars", config = { client_version = 513, max_frame_len = 4096 } }
            auth = { name = "token", config = { token = "abc", identify_cmd_id = 300 } }
            heartbeat = { name = "fixed", config = { interval_ms = 60000 } }
            ip_sources = [
                { name = "static", config = { hosts = { "s.example" = ["10.0.0.1:8080"] } } },
                "backup",
            ]
            "#,
        )
        .unwrap();
    assert_eq!(p.codec.max_frame_len(), 4096);
    let mut wire = Vec::new();
    p.codec
        .encode(FrameHead::new(CmdId(1), Seq(2)), b"", &[], &mut wire)
        .unwrap();
    assert_eq!(&wire[4..8], &513u32.to_be_bytes());
    assert!(matches!(p.codec.decode(&wire), Ok(Decoded::Frame(_))));

    assert_eq!(p.auth.name(), "token");
    match p.auth.identify_request("main") {
        IdentifyRequest::Now { cmd_id, .. } => assert_eq!(cmd_id, CmdId(300)),
        other => panic!("unexpected {other:?}"),
    }
    let ctx = HeartbeatContext::default();
    let now = Instant::now();
    assert_eq!(
        p.heartbeat.build(now, &ctx).next_interval(now, &ctx),
        Some(std::time::Duration::from_secs(60))
    );
    let names: Vec<&str> = p.ip_sources.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["static", "backup"]);
    let addrs: Vec<ResolvedAddr> =
        pollster::block_on(p.ip_sources[0].resolve("s.example", LinkPurpose::LongLink)).unwrap();
    assert_eq!(addrs[0].ip.to_string(), "10.0.0.1");
    assert_eq!(addrs[0].port, Some(8080));
}

#[test]
fn toml_selects_a_log_cipher_with_its_key() {
    let keys = phobos_cipher_mars::MarsCipher::generate_key_pair();
    let text = format!(
        "[plugins.cipher]\nname = \"mars-tea\"\nconfig = {{ public_key = \"{}\" }}\n",
        keys.public_key
    );
    let p = Registry::with_builtins().build_from_toml(&text).unwrap();
    let cipher = p.log_cipher.expect("a cipher was configured");
    assert_eq!(
        (cipher.name(), cipher.origin()),
        ("mars-tea", &Origin::BuiltIn)
    );
    assert!(cipher.new_encryptor().is_ok());
    assert!(
        cipher.new_decryptor(&[0; 64]).is_err(),
        "no private key configured"
    );
}

#[test]
fn an_unknown_built_in_name_lists_the_available_ones() {
    let err = Registry::with_builtins()
        .build_from_toml("[plugins]\nheartbeat = \"clever\"")
        .unwrap_err();
    let RegistryError::UnknownPlugin {
        field,
        kind,
        name,
        available,
    } = &err
    else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(
        (field.as_str(), *kind, name.as_str()),
        ("plugins.heartbeat", PluginKind::Heartbeat, "clever")
    );
    assert_eq!(available, &["fixed (built-in)", "smart (built-in)"]);
    assert_eq!(
        err.to_string(),
        "plugins.heartbeat: no heartbeat plugin named \"clever\"; available: fixed (built-in), \
         smart (built-in)"
    );
}

#[test]
fn a_rejected_built_in_config_names_the_field_and_the_reason() {
    let registry = Registry::with_builtins();
    let err = registry
        .build_from_toml("[plugins.codec]\nname = \"mars\"\nconfig = { version = 1 }")
        .unwrap_err();
    let RegistryError::ConfigRejected {
        field,
        name,
        message,
        ..
    } = &err
    else {
        panic!("unexpected {err:?}");
    };
    assert_eq!((field.as_str(), name.as_str()), ("plugins.codec", "mars"));
    assert!(message.contains("unknown field `version`"), "{message}");

    // A value the constructor refuses (not just a shape error).
    let err = registry
        .build_from_toml("[plugins.codec]\nname = \"mars\"\nconfig = { max_frame_len = 5 }")
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::ConfigRejected { message, .. } if message.contains("5")),
        "{err:?}"
    );
    let err = registry
        .build_from_toml(
            "[plugins.heartbeat]\nname = \"fixed\"\nconfig = { interval_ms = \"soon\" }",
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("plugins.heartbeat: heartbeat plugin \"fixed\" rejected its config"),
        "{err}"
    );
}

#[test]
fn an_ip_source_error_names_its_position() {
    let err = Registry::with_builtins()
        .build_from_toml("[plugins]\nip_sources = [\"static\", \"carrier-pigeon\"]")
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::UnknownPlugin { field, .. } if field == "plugins.ip_sources[1]"),
        "{err:?}"
    );
}

#[test]
fn an_app_can_register_its_own_built_ins() {
    #[derive(serde::Deserialize)]
    struct Cfg {
        version: u32,
    }
    let mut registry = Registry::empty();
    registry.register_codec("mine", |c: Cfg| {
        if c.version == 0 {
            return Err("version must not be 0");
        }
        Ok(phobos_codec_mars::MarsCodec::with_client_version(c.version))
    });
    let spec = PluginSpec {
        name: "mine".into(),
        library: None,
        config: Some(toml::toml! { version = 9 }.into()),
    };
    let codec = registry.codec(&spec, "codec").unwrap();
    assert_eq!(codec.name(), "mine");
    let bad = PluginSpec {
        config: Some(toml::toml! { version = 0 }.into()),
        ..spec
    };
    assert_eq!(
        registry.codec(&bad, "codec").unwrap_err(),
        RegistryError::ConfigRejected {
            field: "codec".into(),
            kind: PluginKind::Codec,
            name: "mine".into(),
            message: "version must not be 0".into(),
        }
    );
    // An empty registry has nothing else, and says so.
    let err = registry
        .build(&PluginsConfig {
            auth: Some(PluginSpec::named("none")),
            ..PluginsConfig::default()
        })
        .unwrap_err();
    assert!(err.to_string().ends_with("available: none"), "{err}");
}

/// A built-in whose constructor panics is an error of the build, naming the plugin and the
/// panic, as a library's panicking constructor is; the host goes on.
#[test]
fn a_built_in_whose_constructor_panics_is_an_error_not_a_panic() {
    let mut registry = Registry::empty();
    registry.register_codec(
        "fragile",
        |_: toml::Table| -> Result<phobos_codec_mars::MarsCodec, String> {
            panic!("no codec today")
        },
    );
    let err = registry
        .build_from_toml("[plugins]\ncodec = \"fragile\"")
        .unwrap_err();
    let RegistryError::ConstructorPanicked {
        field,
        name,
        message,
        ..
    } = &err
    else {
        panic!("expected ConstructorPanicked, got {err:?}");
    };
    assert_eq!(
        (field.as_str(), name.as_str()),
        ("plugins.codec", "fragile")
    );
    assert!(message.contains("no codec today"), "{message}");
    assert!(
        err.to_string().contains("panicked while being made"),
        "{err}"
    );
}

/// A built-in taking no config (`()`, as `export_plugin!` documents for a library's) builds
/// when none is given; before, the empty table it was handed was refused, and TOML cannot
/// write a unit value.
#[test]
fn a_built_in_whose_config_is_unit_builds_without_one() {
    let mut registry = Registry::empty();
    registry.register_codec("plain", |_: ()| {
        Ok::<_, String>(phobos_codec_mars::MarsCodec::default())
    });
    let codec = registry
        .codec(&PluginSpec::named("plain"), "codec")
        .unwrap();
    assert_eq!(codec.name(), "plain");
    // A config given is the config: not retried as none.
    let given = PluginSpec {
        config: Some(toml::toml! { x = 1 }.into()),
        ..PluginSpec::named("plain")
    };
    assert!(matches!(
        registry.codec(&given, "codec").unwrap_err(),
        RegistryError::ConfigRejected { .. }
    ));
}
