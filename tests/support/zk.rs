//! A real ZooKeeper server for the tests: Debian's `zookeeper` package, started as
//! `java -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar
//! org.apache.zookeeper.server.ZooKeeperServerMain zoo.cfg` on a loopback port with a temp
//! `dataDir`, ready when the `conf` four-letter word answers with that `dataDir` (so a server
//! of someone else's on the port is never taken for ours), killed by PID.
//!
//! The port: a server process cannot be handed a bound socket, only a number, so the number
//! is picked, the server started, and if it cannot bind (the JVM exits) another number is
//! tried, a bounded number of times. The numbers come from below the kernel's ephemeral range,
//! which the kernel never hands out for a port-0 bind or as a client's source port, so the
//! other sockets of the tests (all on port 0) never collide with them; and the test holds the
//! port with a bound, never-listening socket ([`PortHold`]) from before the first start until
//! the server is dropped, so the kernel never gives it to anyone else while the server is
//! down either (ZooKeeper binds with `SO_REUSEADDR`, beside the hold). What the hold cannot
//! stop is a ZooKeeper of another test run that picks the same number: then one of the two
//! cannot bind, its JVM exits, and that is noticed and retried (a new number on a first
//! start; the same number a few times on a restart, which must keep its port).
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

use super::PortHold;

const JAR: &str = "/usr/share/java/zookeeper.jar";
const CONF: &str = "/etc/zookeeper/conf";

/// A running (or stopped) ZooKeeper server.
#[derive(Debug)]
pub struct ZkServer {
    pub port: u16,
    /// Holds `port` for the server's whole life, across kills and restarts.
    hold: PortHold,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Tries at starting a server on a new port before giving up.
const START_ATTEMPTS: usize = 8;

/// A port for a new server: below the ephemeral range (`ip_local_port_range`), held.
fn pick_port() -> PortHold {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut ends = range.split_whitespace().filter_map(|p| p.parse::<u16>().ok());
    let (low, high) = (ends.next().unwrap_or(32768), ends.next().unwrap_or(60999));
    let (from, to) = if low > 12_000 {
        (10_000, low)
    } else if high < 64_000 {
        (high + 1, 65_535)
    } else {
        (10_000, 32_768) // no room outside the range: the retries below still hold
    };
    for _ in 0..100 {
        let port = fastrand::u16(from..to);
        if let Ok(hold) = PortHold::on(SocketAddr::from(([127, 0, 0, 1], port))) {
            return hold;
        }
    }
    panic!("no free port in {from}..{to} for ZooKeeper after 100 tries");
}

/// Why a launch did not give a server of ours.
#[derive(Debug)]
enum Launch {
    /// The JVM exited before serving: ZooKeeper exits when it cannot bind its port.
    Exited,
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
        for attempt in 1..=START_ATTEMPTS {
            let hold = pick_port();
            let mut s = ZkServer { port: hold.port(), hold, dir: tempfile::tempdir().unwrap(), child: None };
            match s.launch() {
                Ok(()) => return s,
                // Dropping `s` kills what is left of it and releases the port.
                Err(Launch::Exited) => eprintln!(
                    "zk: ZooKeeper could not serve on port {} (attempt {attempt} of {START_ATTEMPTS}); \
                     trying another port",
                    s.port
                ),
            }
        }
        panic!("ZooKeeper could not start on any of {START_ATTEMPTS} ports");
    }

    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start the JVM on `self.port` and wait until it serves; `Err` when it exits first.
    fn launch(&mut self) -> Result<(), Launch> {
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
            if self.serving() {
                return Ok(());
            }
            if !self.java_alive() {
                return Err(Launch::Exited);
            }
            if start.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                panic!("ZooKeeper did not become ready on port {} in 60 s:\n{log}", self.port);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the server answering on the port is this one (its `dataDir`) and serving.
    fn serving(&self) -> bool {
        let data = format!("dataDir={}", self.dir.path().join("data").display());
        four_letter(self.port, "conf").is_some_and(|c| c.contains(&data))
    }

    /// Whether the JVM still runs (not gone, not a zombie waiting for the guard shell).
    fn java_alive(&self) -> bool {
        let Some(pid) = self.java_pid() else { return false };
        std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
            .ok()
            .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with(['Z', 'X'])))
            .unwrap_or(false)
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
        while self.serving() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start it again on the same port (the gateway's config names it) with the same data.
    /// The port was held while the server was down; if the server still cannot bind it (a
    /// server of another test that picked the same number), it is tried a few more times
    /// and then the test fails, saying so.
    pub fn restart(&mut self) {
        self.kill();
        for attempt in 1..=3 {
            match self.launch() {
                Ok(()) => return,
                Err(Launch::Exited) => {
                    eprintln!(
                        "zk: ZooKeeper could not serve on port {} again (attempt {attempt} of 3)",
                        self.port
                    );
                    self.kill();
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        panic!("ZooKeeper could not serve on port {} again: the port is taken", self.port);
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
