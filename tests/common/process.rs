//! The real binary as a child process: its environment, its output lines,
//! SIGTERM and kill -9. CI points ACTIOND_BIN at the release build;
//! otherwise the test profile's binary runs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::SECRET;
use super::database::TestDatabase;

pub const WAIT: Duration = Duration::from_secs(30);

pub fn binary() -> PathBuf {
    std::env::var_os("ACTIOND_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_actiond")))
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actiond-bin-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The binary with no ACTIOND_* from the test's environment.
pub fn actiond(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.args(args).current_dir(dir).env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

/// A running server whose output lines arrive on channels.
pub struct Server {
    pub child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Server {
    pub fn start(mut command: Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the binary starts");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Self { child, stdout, stderr, stderr_seen: Vec::new() }
    }

    pub fn stdout_line(&mut self, matching: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self.stdout.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no such stdout line; stderr: {:?}", self.stderr_seen));
            if matching(&line) {
                return line;
            }
        }
    }

    pub fn stderr_line(&mut self, matching: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self.stderr.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no such log line; seen: {:?}", self.stderr_seen));
            self.stderr_seen.push(line.clone());
            if matching(&line) {
                return line;
            }
        }
    }

    /// The address from the JSON "listening" log line.
    pub fn address(&mut self) -> String {
        let line = self.stderr_line(|l| l.contains("\"listening\""));
        let log: Value = serde_json::from_str(&line).unwrap();
        format!("http://{}", log["fields"]["address"].as_str().unwrap())
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.wait()
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the server did not exit");
    }

    /// As `wait`, without blocking the test's runtime: an async test's
    /// runtime may be serving what the exiting process still waits on (the
    /// sandbox answering its sends), which a blocking wait would starve.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server did not exit");
    }

    /// Every log line written so far, after the process ended.
    pub fn drain_stderr(&mut self) -> Vec<String> {
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            self.stderr_seen.push(line);
        }
        self.stderr_seen.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

pub fn production_env(command: &mut Command, database: &TestDatabase, graph_url: &str, encryption_key: &str) {
    command
        .env("ACTIOND_LISTEN", "127.0.0.1:0")
        .env("ACTIOND_DATABASE_URL", &database.url)
        .env("ACTIOND_JWT_SECRET", SECRET)
        .env("ACTIOND_ENCRYPTION_KEY", encryption_key)
        .env("ACTIOND_WHATSAPP_GRAPH_URL", graph_url)
        .env("ACTIOND_RATE_LIMIT_PER_SECOND", "0");
}

pub fn token(tenant: &str) -> String {
    actiond::auth::mint(SECRET, tenant, &[], Duration::from_secs(600), None, None)
}
