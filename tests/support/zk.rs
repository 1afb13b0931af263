//! A real ZooKeeper server for the tests: Debian's `zookeeper` package, started as
//! `java -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar
//! org.apache.zookeeper.server.ZooKeeperServerMain zoo.cfg` on a free loopback port with a
//! temp `dataDir`, ready when the `srvr` four-letter word answers, killed by PID.
//!
//! The JVM runs under a small `sh` guard that kills it when the test process goes away (its
//! stdin pipe closes), so a panicking test never leaves a server behind.
//! When the package is missing the test fails, saying how to install it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zookeeper_client as zk;

const JAR: &str = "/usr/share/java/zookeeper.jar";
const CONF: &str = "/etc/zookeeper/conf";

/// A running (or stopped) ZooKeeper server.
#[derive(Debug)]
pub struct ZkServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Send a four-letter word and read the answer.
pub fn four_letter(port: u16, word: &str) -> Option<String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(word.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

impl ZkServer {
    /// Start a server; panics (failing the test) with install instructions when ZooKeeper is
    /// not installed.
    pub fn start() -> ZkServer {
        assert!(
            Path::new(JAR).exists(),
            "ZooKeeper is not installed ({JAR} is missing): run `apt-get install -y zookeeper` \
             (scripts/test.sh does this), then run the tests again"
        );
        let mut s = ZkServer { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None };
        s.launch();
        s
    }

    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let cfg = self.dir.path().join("zoo.cfg");
        // tickTime 200 ms lets the tests use session timeouts down to 400 ms (2 ticks).
        std::fs::write(
            &cfg,
            format!(
                "tickTime=200\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
                 clientPortAddress=127.0.0.1\nmaxClientCnxns=0\n4lw.commands.whitelist=*\n\
                 admin.enableServer=false\nminSessionTimeout=400\nmaxSessionTimeout=60000\n",
                data.display(),
                self.port
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        // `exec java` would lose the guard; instead the shell waits on stdin and kills the JVM
        // (by its PID) when the pipe closes, i.e. when this test process exits.
        let script = format!(
            "java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dzookeeper.log.dir={dir} \
             -cp {CONF}:{JAR} org.apache.zookeeper.server.ZooKeeperServerMain {cfg} & pid=$!; \
             echo $pid; read _; kill $pid; wait $pid",
            dir = self.dir.path().display(),
            cfg = cfg.display()
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("cannot run sh");
        let mut pid = String::new();
        let mut out = child.stdout.take().unwrap();
        let mut b = [0u8; 1];
        while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
            pid.push(b[0] as char);
        }
        std::fs::write(self.dir.path().join("java.pid"), pid.trim()).unwrap();
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if four_letter(self.port, "srvr").is_some_and(|s| s.contains("Mode: standalone")) {
                return;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                panic!("ZooKeeper did not become ready on port {} in 60 s:\n{log}", self.port);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn java_pid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("java.pid")).ok().filter(|p| !p.trim().is_empty())
    }

    /// Kill the server process (SIGKILL, by PID) and wait until its port is closed.
    pub fn kill(&mut self) {
        if let Some(pid) = self.java_pid() {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.dir.path().join("java.pid"));
        let start = Instant::now();
        while four_letter(self.port, "srvr").is_some() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client session of the test's own (ephemeral nodes live as long as it).
pub async fn client(server: &str) -> zk::Client {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(5))
        .connect(server)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to ZooKeeper {server}: {e}"))
}

/// Create `path` and its parents as persistent nodes (if missing).
pub async fn mkdirs(c: &zk::Client, path: &str) {
    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    match c.mkdir(path, &opts).await {
        Ok(()) | Err(zk::Error::NodeExists) => {}
        Err(e) => panic!("mkdir {path}: {e}"),
    }
}

/// Create an ephemeral member `path/name` holding `data`.
pub async fn ephemeral(c: &zk::Client, path: &str, name: &str, data: &[u8]) {
    let opts = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    c.create(&format!("{path}/{name}"), data, &opts)
        .await
        .unwrap_or_else(|e| panic!("create {path}/{name}: {e}"));
}

pub async fn set_data(c: &zk::Client, path: &str, data: &[u8]) {
    c.set_data(path, data, None).await.unwrap_or_else(|e| panic!("set {path}: {e}"));
}

pub async fn delete(c: &zk::Client, path: &str) {
    c.delete(path, None).await.unwrap_or_else(|e| panic!("delete {path}: {e}"));
}
