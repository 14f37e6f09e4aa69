//! The namespace lab itself: creation and cleanup, the stale sweep, and that the nft and tc
//! faults do what they say (checked with plain TCP between the two namespaces).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use phobos_lab::netns::{sweep_stale, Lab, NetFaults, Side};

fn exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Listens on every address of the server namespace; returns the port and the listener
/// thread (which accepts and echoes until the lab is dropped).
fn listen(lab: &Lab) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    // The thread ends when the namespace disappears and accept fails, or at process exit.
    let _detached = lab
        .spawn_in(Side::Server, move || {
            let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            while let Ok((mut s, _)) = l.accept() {
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        })
        .unwrap();
    rx.recv().unwrap()
}

/// Connects from the client namespace with a 1 s timeout: Ok, or the error kind.
fn connect(lab: &Lab, addr: SocketAddr) -> Result<(), std::io::ErrorKind> {
    lab.run_in(Side::Client, move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .map(drop)
            .map_err(|e| e.kind())
    })
    .unwrap()
}

#[test]
fn a_lab_creates_two_namespaces_and_removes_them_on_drop() {
    if !phobos_lab::lab_available() {
        return;
    }
    let lab = Lab::create(2).unwrap();
    let (c, s) = (
        lab.namespace(Side::Client).to_owned(),
        lab.namespace(Side::Server).to_owned(),
    );
    assert!(exists(&c) && exists(&s));
    assert!(c.starts_with("phobos-lab-") && s.starts_with("phobos-lab-"));
    assert_eq!(lab.server_addrs().len(), 2);
    let port = listen(&lab);
    for ip in lab.server_addrs() {
        assert_eq!(
            connect(&lab, SocketAddr::new(IpAddr::V4(*ip), port)),
            Ok(())
        );
    }
    drop(lab);
    assert!(!exists(&c) && !exists(&s));
}

#[test]
fn the_sweep_removes_namespaces_of_dead_processes_only() {
    if !phobos_lab::lab_available() {
        return;
    }
    let live = Lab::create(1).unwrap();
    // pid 0 is never a process: this name looks like a lab left by a killed run.
    let stale = format!("phobos-lab-0-{}-c", std::process::id());
    let st = std::process::Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(exists(&stale));
    // (A lab created meanwhile by a parallel test sweeps too, so only the result counts.)
    sweep_stale();
    assert!(!exists(&stale));
    assert!(
        exists(live.namespace(Side::Client)),
        "a live lab survives the sweep"
    );
}

#[test]
fn nft_faults_refuse_drop_and_lose_and_are_replaced_by_the_next_apply() {
    if !phobos_lab::lab_available() {
        return;
    }
    let lab = Lab::create(3).unwrap();
    let port = listen(&lab);
    let a: Vec<SocketAddr> = lab
        .server_addrs()
        .iter()
        .map(|ip| SocketAddr::new(IpAddr::V4(*ip), port))
        .collect();
    lab.apply(&NetFaults {
        syn_drop: vec![a[0]],
        reset: vec![a[1]],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(connect(&lab, a[0]), Err(std::io::ErrorKind::TimedOut));
    assert_eq!(
        connect(&lab, a[1]),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    assert_eq!(connect(&lab, a[2]), Ok(()));

    // Total loss: nothing gets through, whichever address.
    lab.apply(&NetFaults {
        loss_percent: 100,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(connect(&lab, a[2]), Err(std::io::ErrorKind::TimedOut));

    // A clean apply removes every rule; a rate cap is a tbf qdisc on both ends.
    lab.apply(&NetFaults {
        rate_bits: Some(1_000_000),
        ..Default::default()
    })
    .unwrap();
    for addr in &a {
        assert_eq!(connect(&lab, *addr), Ok(()));
    }
    let qdisc = std::process::Command::new("tc")
        .args([
            "-n",
            lab.namespace(Side::Client),
            "qdisc",
            "show",
            "dev",
            "veth0",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&qdisc.stdout).contains("tbf"));
    lab.apply(&NetFaults::default()).unwrap();
    let qdisc = std::process::Command::new("tc")
        .args([
            "-n",
            lab.namespace(Side::Client),
            "qdisc",
            "show",
            "dev",
            "veth0",
        ])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&qdisc.stdout).contains("tbf"));

    let wire = lab.wire_bytes().unwrap();
    assert!(
        wire.client_to_server > 0 && wire.server_to_client > 0,
        "{wire:?}"
    );
    assert!(lab
        .apply(&NetFaults {
            loss_percent: 101,
            ..Default::default()
        })
        .is_err());
}
