//! The host example's binary, run as a user would.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_phobos-host-example"))
}

#[test]
fn demo_delivers_every_message_once_across_the_restart_and_exits_zero() {
    let logs = tempfile::tempdir().expect("tempdir");
    let out = bin()
        .args(["demo", "--clients", "3", "--messages", "20", "--log-dir"])
        .arg(logs.path())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| messages sent | 60 |"), "{stdout}");
    assert!(stdout.contains("| lost | 0 |"), "{stdout}");
    assert!(stdout.contains("| duplicates | 0 |"), "{stdout}");
    assert!(stdout.contains("| sends failed | 0 |"), "{stdout}");
    assert!(
        stdout.contains("| server restart | once, after"),
        "{stdout}"
    );
    assert!(stdout.contains("[server] restarting after"), "{stdout}");
    assert!(stdout.contains("[link] user01: link down"), "{stdout}");
    assert!(stdout.contains("codec      mars"), "{stdout}");
    assert!(stdout.contains("| codec | mars (built-in) |"), "{stdout}");
    assert!(
        stdout.contains("| log cipher | mars-tea (built-in) |"),
        "{stdout}"
    );
    assert!(stdout.contains("| TLS | on"), "{stdout}");
    assert!(
        stdout.contains("Every message was delivered exactly once."),
        "{stdout}"
    );
    // The log is encrypted with the demo key and the decoded tail shows the demo's last line.
    assert!(stdout.contains("encrypted: true"), "{stdout}");
    assert!(
        stdout.contains("[demo]") && stdout.contains("done: 60 sent"),
        "{stdout}"
    );
    let files: Vec<_> = std::fs::read_dir(logs.path()).expect("log dir").collect();
    assert!(!files.is_empty());
}

#[test]
fn demo_runs_over_plain_tcp_without_a_restart_when_asked() {
    let logs = tempfile::tempdir().expect("tempdir");
    let out = bin()
        .args([
            "demo",
            "--no-tls",
            "--no-restart",
            "--clients",
            "2",
            "--messages",
            "10",
            "--log-dir",
        ])
        .arg(logs.path())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}");
    assert!(
        stdout.contains("(plain TCP)") && stdout.contains("| TLS | off |"),
        "{stdout}"
    );
    assert!(stdout.contains("| server restart | none |"), "{stdout}");
    assert!(
        stdout.contains("| reconnects per client (min / max / total) | 0 / 0 / 0 |"),
        "{stdout}"
    );
}

#[test]
fn plugins_command_lists_plugins_and_round_trips_a_frame() {
    let out = bin().arg("plugins").output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("cipher     mars-tea"), "{stdout}");
    assert!(
        stdout.contains("Codec round trip: 33 bytes on the wire"),
        "{stdout}"
    );
}

#[test]
fn a_malformed_config_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[plugins]\ncodec = { name = \"mars\", config = { client_version = \"x\" } }\n",
    )
    .expect("write");
    let out = bin()
        .args(["plugins", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("plugins.codec"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_file_that_is_not_a_plugin_library_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("libnot-a-plugin.so");
    std::fs::write(&path, b"this is text, not a shared object").expect("write");
    let out = bin()
        .arg("plugins")
        .arg("--plugin")
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("libnot-a-plugin.so"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn every_command_names_a_bad_field_in_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nhistory_limit = \"lots\"\n").expect("write");
    for args in [
        vec!["demo"],
        vec!["server"],
        vec!["client", "--user", "alice"],
        vec!["token", "--user", "alice"],
    ] {
        let out = bin()
            .args(&args)
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains("server.history_limit") && stderr.contains("bad.toml"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn the_client_without_the_servers_ca_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("client.toml");
    std::fs::write(&path, "[client]\nca = \"missing-ca.pem\"\n").expect("write");
    let out = bin()
        .args(["client", "--user", "alice", "--log-dir"])
        .arg(dir.path().join("logs"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("missing-ca.pem"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn token_prints_a_token_the_server_accepts() {
    let out = bin()
        .args(["token", "--user", "alice"])
        .output()
        .expect("run");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let issuer = phobos_host_example::tokens::TokenIssuer::new("phobos-demo-secret");
    assert_eq!(issuer.verify(&token), Ok("alice"));
}
