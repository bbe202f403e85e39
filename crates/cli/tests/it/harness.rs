//! Runs `souverix` processes and waits on conditions with deadlines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_souverix");
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A `souverix serve` process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    /// Starts `souverix serve <args> --listen 127.0.0.1:0` in `cwd` and waits for the line that
    /// says where it serves.
    pub fn start(cwd: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .current_dir(cwd)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn souverix serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx.recv_timeout(START_DEADLINE).expect("souverix serve printed where it serves");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in `{line}`"))
            .to_owned();
        Server { child, url }
    }

    /// Runs a CLI command against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&["--server", &self.url], args)
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cli(global: &[&str], args: &[&str]) -> Output {
    Command::new(BIN)
        .args(global)
        .args(args)
        .env("SOUVERIX_AUTHOR", "tester")
        .env_remove("SOUVERIX_SERVER")
        .output()
        .expect("run souverix")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the command succeeded and returns its standard output.
pub fn ok(output: Output) -> String {
    assert!(output.status.success(), "command failed: {}\n{}", stderr(&output), stdout(&output));
    stdout(&output)
}

/// Waits until `condition` holds, or fails after `deadline`.
pub fn wait_until(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The seed-derived fixtures of the config crate.
pub fn config_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tests/fixtures").join(name)
}
