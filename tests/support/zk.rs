//! Real ZooKeeper servers for the tests: Debian's `zookeeper` package, each server a JVM
//! (`java -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar:… MAIN zoo.cfg`) on loopback
//! ports with a temp dir of its own ([`Node`]). [`ZkServer`] is one standalone server
//! (`ZooKeeperServerMain`), ready when the `conf` four-letter word answers with its `dataDir`
//! (so a server of someone else's on the port is never taken for ours); [`ZkEnsemble`] is three
//! `QuorumPeerMain` servers forming a quorum. Every server is killed by PID.
//!
//! The ports: a server process cannot be handed a bound socket, only a number, so the number
//! is picked, the server started, and if it cannot bind (the JVM exits) other numbers are
//! tried, a bounded number of times. The numbers come from below the kernel's ephemeral range,
//! which the kernel never hands out for a port-0 bind or as a client's source port, so the
//! other sockets of the tests (all on port 0) never collide with them; a test process never
//! picks the same number twice; and the test holds each port with a bound, never-listening
//! socket ([`PortHold`]) from before the first start until the server is dropped, so the kernel
//! never gives it to anyone else while the server is down either. ZooKeeper binds all its
//! listening sockets with `SO_REUSEADDR`, beside the hold: the client port
//! (`NIOServerCnxnFactory`), the election port (`QuorumCnxManager.Listener`) and the leader's
//! quorum port (`Leader.createServerSocket`), in 3.8 as in current sources. What the holds
//! cannot stop is a ZooKeeper of another test run that picks the same number: then one of the
//! two cannot bind, and a JVM that cannot bind its client port, or its election port three
//! times a second apart (`zookeeper.electionPortBindRetry`), exits; that is noticed and retried
//! (new numbers on a first start; the same numbers a few times on a restart, which must keep
//! its ports). A leader that cannot bind its quorum port does not exit but goes back to
//! electing, and then the bounded wait for a quorum fails the test, with the servers' logs.
//!
//! Each JVM runs under a small `sh` guard that kills it when the test process goes away (its
//! stdin pipe closes), so a panicking test never leaves a server behind. Its log (slf4j's
//! simple binding on stderr: without a binding on the class path ZooKeeper 3.8 logs nothing)
//! is `server.log` in its dir, and is shown when a server does not become ready in time.
//! When the package is missing the test fails, saying how to install it.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::PortHold;

const JAR: &str = "/usr/share/java/zookeeper.jar";
const CONF: &str = "/etc/zookeeper/conf";
/// From libslf4j-java, which the zookeeper package depends on.
const SLF4J_SIMPLE: &str = "/usr/share/java/slf4j-simple.jar";
const STANDALONE: &str = "org.apache.zookeeper.server.ZooKeeperServerMain";
const QUORUM_PEER: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";

/// Tries at starting on new ports before giving up.
const START_ATTEMPTS: usize = 8;
/// Tries at starting again on the same ports before giving up.
const RESTART_ATTEMPTS: usize = 3;

/// A port for a new server: below the ephemeral range (`ip_local_port_range`), never picked
/// before by this process, held.
fn pick_port() -> PortHold {
    static PICKED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
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
        // Two holds can share a number (both have SO_REUSEADDR): never hand one out twice.
        if !PICKED.lock().unwrap().get_or_insert_with(HashSet::new).insert(port) {
            continue;
        }
        if let Ok(hold) = PortHold::on(SocketAddr::from(([127, 0, 0, 1], port))) {
            return hold;
        }
    }
    panic!("no free port in {from}..{to} for ZooKeeper after 100 tries");
}

/// Why a launch did not give a server of ours.
#[derive(Debug)]
enum Launch {
    /// A JVM exited before serving: ZooKeeper exits when it cannot bind its ports.
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

/// Start what `make` builds until `launch` serves; each failed try is dropped (killed, its
/// ports released) and the next one made on new ports. Panics with install instructions when
/// ZooKeeper is not installed.
fn start_on_new_ports<T>(
    what: &str,
    mut make: impl FnMut() -> T,
    launch: impl Fn(&mut T) -> Result<(), Launch>,
) -> T {
    assert!(
        Path::new(JAR).exists(),
        "ZooKeeper is not installed ({JAR} is missing): run `apt-get install -y zookeeper` \
         (scripts/test.sh does this), then run the tests again"
    );
    for attempt in 1..=START_ATTEMPTS {
        let mut s = make();
        match launch(&mut s) {
            Ok(()) => return s,
            Err(Launch::Exited) => eprintln!(
                "zk: {what} could not serve (a JVM exited: a port taken?), attempt {attempt} of \
                 {START_ATTEMPTS}; trying other ports"
            ),
        }
    }
    panic!("{what} could not start on any of {START_ATTEMPTS} sets of ports");
}

/// Start `s` again on the same ports (the gateway's config names them) with the same data.
/// The ports were held while it was down; if a JVM still cannot bind one (a server of another
/// test run that picked the same number), it is tried a few more times and then the test
/// fails, saying so.
fn restart_on_same_ports<T>(
    s: &mut T,
    what: &str,
    launch: impl Fn(&mut T) -> Result<(), Launch>,
    kill: impl Fn(&mut T),
) {
    for attempt in 1..=RESTART_ATTEMPTS {
        match launch(s) {
            Ok(()) => return,
            Err(Launch::Exited) => {
                eprintln!("zk: {what} could not serve again (attempt {attempt} of {RESTART_ATTEMPTS})");
                kill(s);
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    panic!("{what} could not serve again on its ports: one is taken");
}

/// One ZooKeeper JVM of the tests, and its dir: `zoo.cfg`, `data/` (the `dataDir`),
/// `server.log`, `java.pid` while it runs.
#[derive(Debug)]
struct Node {
    /// The client port first; they are held for the node's whole life, across kills and
    /// restarts.
    holds: Vec<PortHold>,
    dir: tempfile::TempDir,
    /// The guard shell, while the server runs.
    child: Option<Child>,
}

impl Node {
    /// A node on `holds` (client port first) with config `extra` besides the lines every
    /// server of the tests has, and `myid` in its data dir if given.
    fn new(holds: Vec<PortHold>, myid: Option<usize>, extra: &str) -> Node {
        let node = Node { holds, dir: tempfile::tempdir().unwrap(), child: None };
        let data = node.data_dir();
        std::fs::create_dir_all(&data).unwrap();
        if let Some(id) = myid {
            std::fs::write(data.join("myid"), format!("{id}\n")).unwrap();
        }
        // tickTime 200 ms lets the tests use session timeouts down to 400 ms (2 ticks).
        // initLimit and syncLimit are generous (5 s, 3 s) so that a loaded machine does not
        // make a leader give up its followers: a peer that dies is noticed at once anyway, by
        // its connections closing.
        std::fs::write(
            node.dir.path().join("zoo.cfg"),
            format!(
                "tickTime=200\ninitLimit=25\nsyncLimit=15\ndataDir={}\nclientPort={}\n\
                 clientPortAddress=127.0.0.1\nmaxClientCnxns=0\n4lw.commands.whitelist=*\n\
                 admin.enableServer=false\nminSessionTimeout=400\nmaxSessionTimeout=60000\n{extra}",
                data.display(),
                node.port()
            ),
        )
        .unwrap();
        node
    }

    /// The client port.
    fn port(&self) -> u16 {
        self.holds[0].port()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Start the JVM running `main` (not waiting for anything).
    fn spawn(&mut self, main: &str) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        // `exec java` would lose the guard; instead the shell waits on stdin and kills the JVM
        // (by its PID) when the pipe closes, i.e. when this test process exits.
        let script = format!(
            "java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dzookeeper.log.dir=. \
             -Dorg.slf4j.simpleLogger.showDateTime=true \
             -Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS \
             -cp {CONF}:{JAR}:{SLF4J_SIMPLE} {main} ./zoo.cfg & pid=$!; \
             echo $pid; read _; kill $pid; wait $pid"
        );
        // The JVM's working directory is the node's dir: `envi` shows it as `user.dir`, which
        // tells our server from another even before it serves.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
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
    }

    /// Whether the server answering on the client port is this one (its `dataDir`) and serving.
    fn serving(&self) -> bool {
        let data = format!("dataDir={}", self.data_dir().display());
        four_letter(self.port(), "conf").is_some_and(|c| c.contains(&data))
    }

    /// Whether this server (its working dir) answers on the client port, serving or not (a
    /// quorum peer answers before it has found a quorum, saying it is not serving).
    fn answering(&self) -> bool {
        let Ok(dir) = self.dir.path().canonicalize() else { return false };
        let me = format!("user.dir={}\n", dir.display());
        four_letter(self.port(), "envi").is_some_and(|e| e.contains(&me))
    }

    /// `Mode: …` of `srvr` (`standalone`, `leader`, `follower`), if this server serves.
    fn mode(&self) -> Option<String> {
        if !self.serving() {
            return None;
        }
        let srvr = four_letter(self.port(), "srvr")?;
        srvr.lines().find_map(|l| l.strip_prefix("Mode: ")).map(|m| m.trim().to_owned())
    }

    /// Whether the JVM was started and not killed since.
    fn running(&self) -> bool {
        self.child.is_some()
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

    /// Kill the server process (SIGKILL, by PID) and wait until its port no longer answers.
    fn kill(&mut self) {
        if let Some(pid) = self.java_pid() {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
        }
        // Waiting closes the guard's stdin; it then reaps the JVM and exits.
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.dir.path().join("java.pid"));
        let start = Instant::now();
        while self.answering() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the server's log.
    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll `ready` every 100 ms until it holds; `Err` as soon as the JVM of a running node of
/// `nodes` exits; after `within`, panic saying `what` with the nodes' logs.
fn wait_until(
    nodes: &[&Node],
    within: Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), Launch> {
    let start = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if nodes.iter().any(|n| n.running() && !n.java_alive()) {
            return Err(Launch::Exited);
        }
        if start.elapsed() > within {
            panic!("ZooKeeper: not within {within:?}: {what}\n{}", logs(nodes));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each node's state and the end of its log.
fn logs(nodes: &[&Node]) -> String {
    let each = nodes.iter().enumerate().map(|(i, n)| {
        let state = if n.running() { "running" } else { "killed" };
        format!("--- server {i} (client port {}, {state}):\n{}", n.port(), n.log_tail(60))
    });
    each.collect::<Vec<_>>().join("\n")
}

/// A running (or stopped) standalone ZooKeeper server.
#[derive(Debug)]
pub struct ZkServer {
    pub port: u16,
    node: Node,
}

impl ZkServer {
    /// Start a server; panics (failing the test) with install instructions when ZooKeeper is
    /// not installed.
    pub fn start() -> ZkServer {
        start_on_new_ports(
            "ZooKeeper",
            || {
                let node = Node::new(vec![pick_port()], None, "");
                ZkServer { port: node.port(), node }
            },
            ZkServer::launch,
        )
    }

    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start the JVM on `self.port` and wait until it serves; `Err` when it exits first.
    fn launch(&mut self) -> Result<(), Launch> {
        self.node.spawn(STANDALONE);
        let node = &self.node;
        wait_until(&[node], Duration::from_secs(60), "the server serves", || node.serving())
    }

    /// Kill the server process (SIGKILL, by PID) and wait until its port is closed.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Start it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.kill();
        let what = format!("ZooKeeper on port {}", self.port);
        restart_on_same_ports(self, &what, ZkServer::launch, ZkServer::kill);
    }
}

/// Servers in a [`ZkEnsemble`].
const ENSEMBLE: usize = 3;
/// How long an ensemble may take to form, or to form again.
const QUORUM_WAIT: Duration = Duration::from_secs(90);

/// Three ZooKeeper servers (`QuorumPeerMain`) forming one ensemble on loopback, server `i`
/// having `myid` `i + 1`. Each has its client, quorum and election ports held (nine in all),
/// its own data dir, and one config shape: the lines of every test server (tickTime 200 ms
/// and so on, see [`Node`]), the three `server.N=127.0.0.1:QUORUM:ELECTION` lines, and two
/// knobs for forming fast on loopback: `cnxTimeout=1000` (connecting to a peer's election
/// port; on loopback a dead peer's port refuses at once, so this only bounds the odd hang)
/// and `fastleader.maxNotificationInterval=1000` (a peer alone asks again at most every second
/// instead of backing off to a minute). Dropping it kills every server.
#[derive(Debug)]
pub struct ZkEnsemble {
    nodes: Vec<Node>,
}

impl ZkEnsemble {
    /// Start three servers and wait until one leads and two follow (at most 90 s, then the
    /// test fails with the servers' logs).
    pub fn start() -> ZkEnsemble {
        start_on_new_ports("A ZooKeeper ensemble", ZkEnsemble::new, ZkEnsemble::launch_all)
    }

    fn new() -> ZkEnsemble {
        let holds: Vec<[PortHold; 3]> =
            (0..ENSEMBLE).map(|_| [pick_port(), pick_port(), pick_port()]).collect();
        let mut extra = String::from("cnxTimeout=1000\nfastleader.maxNotificationInterval=1000\n");
        for (i, [_, quorum, election]) in holds.iter().enumerate() {
            extra += &format!("server.{}=127.0.0.1:{}:{}\n", i + 1, quorum.port(), election.port());
        }
        let nodes = holds
            .into_iter()
            .enumerate()
            .map(|(i, h)| Node::new(Vec::from(h), Some(i + 1), &extra))
            .collect();
        ZkEnsemble { nodes }
    }

    fn launch_all(&mut self) -> Result<(), Launch> {
        for n in &mut self.nodes {
            n.spawn(QUORUM_PEER);
        }
        self.settle()
    }

    /// `127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3` (the client ports).
    pub fn connect_string(&self) -> String {
        (0..ENSEMBLE).map(|i| self.address(i)).collect::<Vec<_>>().join(",")
    }

    /// `127.0.0.1:Pi`: server `i` alone.
    pub fn address(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].port())
    }

    /// Server `i`'s `Mode:` (`leader`, `follower`), or `None` while it does not serve (down,
    /// or looking for a quorum).
    pub fn mode(&self, i: usize) -> Option<String> {
        self.nodes[i].mode()
    }

    /// The server that reports `Mode: leader`.
    pub fn leader(&self) -> Option<usize> {
        (0..ENSEMBLE).find(|&i| self.mode(i).as_deref() == Some("leader"))
    }

    /// Kill server `i` (SIGKILL, by PID) and wait until its client port no longer answers.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Start server `i` again, on the same ports with the same data. When that makes a
    /// majority of servers run, wait until it has joined the quorum (and there is a leader);
    /// otherwise only until it answers, looking for peers.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        restart_on_same_ports(
            self,
            &format!("ZooKeeper server {i} of the ensemble"),
            |e| {
                e.nodes[i].spawn(QUORUM_PEER);
                e.settle()
            },
            |e| e.kill(i),
        );
    }

    pub fn kill_all(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }

    /// Kill every server, start them all again (same ports, same data) and wait until one
    /// leads and two follow.
    pub fn restart_all(&mut self) {
        self.kill_all();
        restart_on_same_ports(self, "The ZooKeeper ensemble", ZkEnsemble::launch_all, ZkEnsemble::kill_all);
    }

    /// Wait until the running servers (a majority) form a quorum: one leads, the others follow.
    pub fn wait_quorum(&self) {
        let running = self.nodes.iter().filter(|n| n.running()).count();
        assert!(running * 2 > ENSEMBLE, "only {running} of {ENSEMBLE} ZooKeeper servers run: no quorum");
        if let Err(Launch::Exited) = self.settle() {
            let nodes: Vec<&Node> = self.nodes.iter().collect();
            panic!("a ZooKeeper server exited while waiting for a quorum\n{}", logs(&nodes));
        }
    }

    /// With a majority running: wait until one of the running servers leads and the others
    /// follow. With fewer: until the running ones answer (there is no quorum to join).
    fn settle(&self) -> Result<(), Launch> {
        let nodes: Vec<&Node> = self.nodes.iter().collect();
        let running: Vec<&Node> = self.nodes.iter().filter(|n| n.running()).collect();
        if running.len() * 2 <= ENSEMBLE {
            return wait_until(&nodes, QUORUM_WAIT, "the running servers answer", || {
                running.iter().all(|n| n.answering())
            });
        }
        wait_until(&nodes, QUORUM_WAIT, "one running server leads and the others follow", || {
            let modes: Vec<Option<String>> = running.iter().map(|n| n.mode()).collect();
            modes.iter().filter(|m| m.as_deref() == Some("leader")).count() == 1
                && modes.iter().all(|m| matches!(m.as_deref(), Some("leader" | "follower")))
        })
    }
}

/// A client session of the test's own (ephemeral nodes live as long as it), with a 5 s
/// session timeout.
pub async fn client(server: &str) -> zk::Client {
    client_with_timeout(server, Duration::from_secs(5)).await
}

pub async fn client_with_timeout(server: &str, session_timeout: Duration) -> zk::Client {
    zk::Client::connector()
        .with_session_timeout(session_timeout)
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
