//! A `switchyard` process of the tests: started from the built binary, its stderr lines
//! collected (JSON logs are searchable), killed by its PID if the test ends while it runs.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{bin, eventually};

/// A running `switchyard` whose stderr lines are collected; killed (by its PID) if the test
/// ends while it still runs.
pub struct Proc {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn start(args: &[&str], dir: &Path) -> Proc {
        Self::spawn(Command::new(bin()).args(args), dir)
    }

    /// The binary started through `sh -c "PREFIX; exec switchyard ARGS"` (to set a ulimit).
    pub fn start_after(prefix: &str, args: &[&str], dir: &Path) -> Proc {
        let script = format!("{prefix}; exec \"$0\" \"$@\"");
        Self::spawn(Command::new("sh").arg("-c").arg(script).arg(bin()).args(args), dir)
    }

    pub fn spawn(cmd: &mut Command, dir: &Path) -> Proc {
        let mut child = cmd
            .current_dir(dir)
            .env("SWITCHYARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (err, l) = (child.stderr.take().unwrap(), Arc::clone(&lines));
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Proc { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first JSON log line whose message is `message`, waiting for it.
    pub async fn log(&self, message: &str) -> Value {
        let mut found = None;
        eventually(&format!("log line {message:?}"), Duration::from_secs(10), || {
            let hit = self
                .lines()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|j| j["fields"]["message"] == message);
            let got = hit.is_some();
            found = hit;
            async move { got }
        })
        .await;
        found.unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    pub async fn exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(std::time::Instant::now() < deadline, "still running after {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
