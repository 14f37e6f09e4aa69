//! The testkit's IP source conformance suite against every source.

use std::net::IpAddr;
use std::sync::Arc;

use phobos_ipsource::{AppDns, BackupList, DynamicList, StaticList, SystemDns, SystemDnsConfig};
use phobos_plugin_api::{AddrSource, LinkPurpose};

const HOSTS: [&str; 5] = ["localhost", "127.0.0.1", "::1", "a.example", "B.Example."];

fn table_json() -> &'static str {
    r#"{"hosts": {"a.example": ["10.0.0.1:443", "fd00::1"], "*": ["10.0.0.9:80"]}}"#
}

phobos_plugin_testkit::ipsource_conformance!(
    static_list,
    || Arc::new(StaticList::new(serde_json::from_str(table_json()).unwrap())),
    AddrSource::Debug,
    HOSTS,
);

phobos_plugin_testkit::ipsource_conformance!(
    dynamic_list,
    || {
        let list = DynamicList::with_config(serde_json::from_str(table_json()).unwrap());
        list.set("b.example", vec!["10.0.0.2".parse().unwrap()]);
        Arc::new(list)
    },
    AddrSource::Dynamic,
    HOSTS,
);

phobos_plugin_testkit::ipsource_conformance!(
    backup_list,
    || Arc::new(BackupList::new(serde_json::from_str(table_json()).unwrap())),
    AddrSource::Backup,
    HOSTS,
);

fn app_resolver(host: &str, _purpose: LinkPurpose) -> Vec<IpAddr> {
    if host.ends_with("example") {
        vec!["10.0.0.5".parse().unwrap()]
    } else {
        Vec::new()
    }
}

phobos_plugin_testkit::ipsource_conformance!(
    app_dns_blocking,
    || Arc::new(AppDns::new(app_resolver)),
    AddrSource::NewDns,
    HOSTS,
);

phobos_plugin_testkit::ipsource_conformance!(
    app_dns_inline,
    || Arc::new(AppDns::new_inline(app_resolver)),
    AddrSource::NewDns,
    HOSTS,
);

phobos_plugin_testkit::ipsource_conformance!(
    system_dns_strict,
    || Arc::new(SystemDns::new(SystemDnsConfig::default())),
    AddrSource::SystemDns,
    ["localhost", "127.0.0.1", "::1", "192.0.2.1"],
);

phobos_plugin_testkit::ipsource_conformance!(
    system_dns_loopback,
    || Arc::new(SystemDns::new(SystemDnsConfig {
        allow_loopback: true,
        ..SystemDnsConfig::default()
    })),
    AddrSource::SystemDns,
    ["localhost", "127.0.0.1", "::1"],
);

#[test]
fn sources_built_from_the_same_config_answer_identically() {
    use phobos_plugin_testkit::ipsource::assert_sources_identical;

    let make = || StaticList::new(serde_json::from_str(table_json()).unwrap());
    assert_sources_identical(&make(), &make(), &HOSTS);
    let strict = || SystemDns::new(SystemDnsConfig::default());
    assert_sources_identical(&strict(), &strict(), &["localhost", "192.0.2.1"]);
}
