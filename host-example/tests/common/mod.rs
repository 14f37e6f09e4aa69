//! The `client` command as a child process: lines in through its stdin, lines out of its
//! stdout, shared by the tests that drive the terminal client.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A guard against hangs, not a timing assertion.
pub const GUARD: Duration = Duration::from_secs(60);

/// A running `phobos-host-example client`.
pub struct TerminalClient {
    /// `None` once waited for.
    child: Option<Child>,
    /// `None` once closed.
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl TerminalClient {
    /// Starts `phobos-host-example client` with the arguments `args` adds, piped stdin and
    /// stdout.
    pub fn start(args: impl FnOnce(&mut Command) -> &mut Command) -> TerminalClient {
        let mut command = Command::new(env!("CARGO_BIN_EXE_phobos-host-example"));
        let mut child = args(command.arg("client"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the client");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        TerminalClient {
            child: Some(child),
            stdin: Some(stdin),
            lines,
        }
    }

    /// Types `line` (and Enter).
    ///
    /// # Panics
    ///
    /// After [`TerminalClient::close_input`].
    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("input not closed yet");
        writeln!(stdin, "{line}").expect("write to the client's stdin");
    }

    /// Ends the client's input (Ctrl-D at a terminal).
    /// Sends the client SIGINT, as Ctrl-C in its terminal would.
    pub fn interrupt(&self) {
        let sent = Command::new("kill")
            .arg("-INT")
            .arg(self.child.as_ref().expect("running").id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -INT failed: {sent}");
    }

    pub fn close_input(&mut self) {
        self.stdin = None;
    }

    /// The lines printed up to and including the first one containing `what`. Blocks; in an
    /// async test, call it inside `tokio::task::block_in_place`.
    ///
    /// # Panics
    ///
    /// When no such line comes within [`GUARD`] from now, or the client's output ends first.
    pub fn wait_for(&self, what: &str) -> Vec<String> {
        // One deadline for the whole wait: a client reporting its link going down and up again
        // prints a line every few seconds, but not the one wanted.
        let deadline = Instant::now() + GUARD;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(what);
                    seen.push(line);
                    if hit {
                        return seen;
                    }
                }
                Err(e) => panic!("no line with {what:?} ({e}); saw {seen:#?}"),
            }
        }
    }

    /// Waits for the client to exit and returns its status and the lines it printed that no
    /// `wait_for` took. Blocks, like [`TerminalClient::wait_for`].
    ///
    /// # Panics
    ///
    /// When the client is still running [`GUARD`] from now: it is killed first.
    pub fn wait_exit(mut self) -> (ExitStatus, Vec<String>) {
        let child = self.child.take().expect("running");
        let Some(status) = wait_or_kill(child, GUARD) else {
            let printed: Vec<String> = self.lines.try_iter().collect();
            panic!("the client was still running {GUARD:?} later; it printed {printed:#?}");
        };
        // The reader thread ends at the end of the output, which the exit has closed.
        let rest = self.lines.iter().collect();
        (status, rest)
    }
}

/// Waits for `child` to exit, at most `limit` (a guard against hangs, not a timing
/// assertion): its status, or `None` when it was still running and has been killed.
pub fn wait_or_kill(mut child: Child, limit: Duration) -> Option<ExitStatus> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(limit) {
        Ok(status) => Some(status.expect("wait for the child")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = rx.recv();
            None
        }
    }
}

impl Drop for TerminalClient {
    fn drop(&mut self) {
        // A failed test leaves no client behind.
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
