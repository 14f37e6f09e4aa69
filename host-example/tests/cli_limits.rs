//! The binary refuses what it cannot do at once and says why, once.

use std::process::{Command, Stdio};

mod common;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_phobos-host-example"))
}

#[test]
fn a_demo_with_a_million_clients_is_refused_up_front() {
    let logs = tempfile::tempdir().expect("tempdir");
    let mut child = bin()
        .args(["demo", "--no-tls", "--clients", "1000000", "--log-dir"])
        .arg(logs.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the demo");
    // Before: it started creating a million clients (~600 MB more every 5 s).
    let stderr_pipe = child.stderr.take().unwrap();
    let Some(status) = common::wait_or_kill(child, common::GUARD) else {
        panic!(
            "the demo was still running {:?} after being asked for a million clients",
            common::GUARD
        );
    };
    let stderr = std::io::read_to_string(stderr_pipe).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("--clients must be 2 to 1000, got 1000000"),
        "{stderr}"
    );

    let config =
        phobos_host_example::config::HostConfig::from_toml_str("[demo]\nclients = 1000000\n", None);
    let err = config
        .expect_err("a million demo clients in the config")
        .to_string();
    assert!(err.contains("demo.clients must be 2 to 1000"), "{err}");
}

#[test]
fn a_missing_config_file_names_the_os_error_once() {
    let out = bin()
        .args([
            "token",
            "--user",
            "alice",
            "--config",
            "/nonexistent/phobos.toml",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("reading config file /nonexistent/phobos.toml"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn decoding_a_file_that_is_not_an_xlog_says_so() {
    // Before: nothing on stdout or stderr, as if the log were empty.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-log.xlog");
    let noise: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&file, noise).expect("write");
    let out = bin().arg("decode-log").arg(&file).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr.trim(),
        format!("{}: no xlog blocks found", file.display())
    );
}
