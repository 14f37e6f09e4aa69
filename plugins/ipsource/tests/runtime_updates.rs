//! Mars's "dynamic IP delivery": the app or a server-push handler replaces a `DynamicList` at
//! runtime through a cloned handle while the framework resolves through `Arc<dyn IpSource>`;
//! the app-DNS callback and backup list seen the same way.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use phobos_ipsource::{AppDns, BackupList, DynamicList, HostTable};
use phobos_plugin_api::{AddrSource, IpSource, LinkPurpose};

fn table(json: &str) -> HostTable {
    serde_json::from_str(json).unwrap()
}

#[tokio::test]
async fn a_pushed_list_replaces_the_old_one_for_the_framework() {
    let list = DynamicList::new();
    let push_handler = list.clone();
    let framework: Arc<dyn IpSource> = Arc::new(list);
    let long = LinkPurpose::LongLink;
    assert!(framework
        .resolve("im.example", long)
        .await
        .unwrap()
        .is_empty());

    push_handler.replace(table(
        r#"{"im.example": ["10.1.0.1:8080", "10.1.0.2:8080"]}"#,
    ));
    let got = framework.resolve("im.example", long).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|a| a.source == AddrSource::Dynamic && a.port == Some(8080)));

    // A second push replaces, not merges.
    push_handler.replace(table(r#"{"other.example": ["10.2.0.1"]}"#));
    assert!(framework
        .resolve("im.example", long)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        framework
            .resolve("other.example", long)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_either_the_old_or_the_new_list_never_a_mix() {
    let list = DynamicList::with_config(
        serde_json::from_str(r#"{"hosts": {"h": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}}"#).unwrap(),
    );
    let writer = list.clone();
    let old: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        .map(|s| s.parse().unwrap())
        .into();
    let new: Vec<IpAddr> = ["10.9.0.1", "10.9.0.2", "10.9.0.3"]
        .map(|s| s.parse().unwrap())
        .into();
    let (o, n) = (old.clone(), new.clone());
    let pushes = std::thread::spawn(move || {
        for i in 0..2_000 {
            let ips = if i % 2 == 0 { &n } else { &o };
            writer.set("h", ips.iter().copied().map(Into::into));
        }
    });
    let source: Arc<dyn IpSource> = Arc::new(list);
    let reads = AtomicUsize::new(0);
    while !pushes.is_finished() || reads.load(Ordering::Relaxed) < 100 {
        let got: Vec<IpAddr> = source
            .resolve("h", LinkPurpose::ShortLink)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.ip)
            .collect();
        assert!(got == old || got == new, "torn read {got:?}");
        reads.fetch_add(1, Ordering::Relaxed);
    }
    pushes.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_app_resolver_sees_each_host_and_purpose() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = AppDns::new(move |host: &str, purpose: LinkPurpose| -> Vec<IpAddr> {
        counted.fetch_add(1, Ordering::Relaxed);
        match (host, purpose) {
            ("im.example", LinkPurpose::LongLink) => vec!["10.3.0.1".parse().unwrap()],
            ("im.example", LinkPurpose::ShortLink) => vec!["10.3.0.2".parse().unwrap()],
            _ => Vec::new(),
        }
    });
    let source: Arc<dyn IpSource> = Arc::new(app);
    let long = source
        .resolve("im.example", LinkPurpose::LongLink)
        .await
        .unwrap();
    let short = source
        .resolve("im.example", LinkPurpose::ShortLink)
        .await
        .unwrap();
    assert_eq!(long[0].ip.to_string(), "10.3.0.1");
    assert_eq!(short[0].ip.to_string(), "10.3.0.2");
    assert!(long
        .iter()
        .chain(&short)
        .all(|a| a.source == AddrSource::NewDns));
    assert!(source
        .resolve("x.example", LinkPurpose::LongLink)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(calls.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn backups_answer_per_host_with_a_wildcard() {
    let backup = BackupList::new(
        serde_json::from_str(r#"{"hosts": {"im.example": ["10.4.0.1:443"], "*": ["10.4.9.9"]}}"#)
            .unwrap(),
    );
    let got = backup
        .resolve("IM.example.", LinkPurpose::LongLink)
        .await
        .unwrap();
    assert_eq!(
        (got[0].ip.to_string(), got[0].port),
        ("10.4.0.1".to_owned(), Some(443))
    );
    let any = backup
        .resolve("else.example", LinkPurpose::LongLink)
        .await
        .unwrap();
    assert_eq!(any[0].ip.to_string(), "10.4.9.9");
    assert!(any.iter().all(|a| a.source == AddrSource::Backup));
}
