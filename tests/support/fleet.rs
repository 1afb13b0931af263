//! Fleet-mode gateways for the tests: each a `switchyard` process with its own folder
//! (`gateway.toml` naming the routes source, `state/routes` as its cache), and the fleet
//! commands (`routes publish`, `routes pull`, `fleet`, `check`) run from the built binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use super::proc::Proc;
use super::{bin, eventually, get};

/// How long the tests wait for a fleet to converge (it takes milliseconds on loopback; this
/// bounds a wait that would otherwise hang).
pub const CONVERGE: Duration = Duration::from_secs(20);

/// Wait until each gateway serves `version`.
pub async fn converged(gws: &[&FleetGw], version: u64) {
    for g in gws {
        eventually(&format!("gateway {} applies version {version}", g.addr), CONVERGE, || async {
            g.applied().await == Some(version)
        })
        .await;
    }
}

/// A command's standard error.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A publisher's folder for `source` (its gateway.toml) with set 1 written to `routes/` and
/// published from there.
pub fn published_fleet(source: &str) -> (tempfile::TempDir, PathBuf) {
    let cfg = config_dir(source);
    let routes = cfg.path().join("routes");
    write_set(&routes, 1);
    published(&publish(cfg.path(), &routes, None, &[]));
    (cfg, routes)
}

/// `n` gateways following `source`, each in a folder of its own (returned too, as the
/// gateways' state lives there).
pub async fn gateways(source: &str, n: usize) -> (Vec<tempfile::TempDir>, Vec<FleetGw>) {
    let dirs: Vec<_> = (0..n).map(|_| config_dir(source)).collect();
    let mut gws = Vec::new();
    for d in &dirs {
        gws.push(FleetGw::start(d.path(), &[]).await);
    }
    (dirs, gws)
}

/// Wait until the gateway whose folder is `dir` has `version` in its routes_cache.
pub async fn cached(dir: &Path, version: u64) {
    let file = dir.join("state/routes/version");
    eventually(&format!("version {version} is cached"), CONVERGE, || async {
        std::fs::read_to_string(&file).is_ok_and(|v| v.trim() == version.to_string())
    })
    .await;
}

/// A gateway process in fleet mode.
pub struct FleetGw {
    pub proc: Proc,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

/// A folder holding `gateway.toml` for `source` (the inline table of `routes_source`) with a
/// `routes_cache`, a listener and an admin API on port 0.
pub fn config_dir(source: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), source, true);
    dir
}

pub fn write_config(dir: &Path, source: &str, cache: bool) {
    let cache = if cache { "routes_cache = \"state/routes\"\n" } else { "" };
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            "[gateway]\nroutes_source = {source}\n{cache}drain_timeout = \"2s\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\n\
             [access_log]\nenabled = false\n"
        ),
    )
    .unwrap();
}

impl FleetGw {
    /// Start a gateway in `dir` (holding gateway.toml) with extra environment variables; waits
    /// until it listens.
    pub async fn start(dir: &Path, env: &[(&str, &str)]) -> FleetGw {
        let mut cmd = Command::new(bin());
        cmd.args(["--log-format", "json", "--config", "gateway.toml"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(&mut cmd, dir);
        let addr = proc.log("listening").await["fields"]["addr"].as_str().unwrap().parse().unwrap();
        let admin =
            proc.log("admin API listening").await["fields"]["addr"].as_str().unwrap().parse().unwrap();
        FleetGw { proc, dir: dir.to_path_buf(), addr, admin }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn config(&self) -> Value {
        get(&format!("http://{}/config", self.admin)).await.json()
    }

    pub async fn fleet(&self) -> Value {
        get(&format!("http://{}/fleet", self.admin)).await.json()
    }

    /// The published version this gateway serves.
    pub async fn applied(&self) -> Option<u64> {
        self.config().await["source"]["applied_version"].as_u64()
    }

    /// Its member id.
    pub async fn member_id(&self) -> String {
        self.config().await["source"]["member_id"].as_str().unwrap().to_owned()
    }

    /// The body of `GET path`.
    pub async fn body(&self, path: &str) -> String {
        tokio::time::timeout(Duration::from_secs(5), get(&self.url(path)))
            .await
            .map(|g| g.text())
            .unwrap_or_default()
    }
}

/// Run `switchyard ARGS --config DIR/gateway.toml` with `env`.
pub fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let cfg = dir.join("gateway.toml");
    let mut cmd = Command::new(bin());
    cmd.args(args).arg("--config").arg(&cfg);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `routes publish [--if-version N] ROUTES` with the config in `dir`.
pub fn publish(dir: &Path, routes: &Path, if_version: Option<u64>, env: &[(&str, &str)]) -> Output {
    let mut args = vec!["routes".to_owned(), "publish".to_owned()];
    if let Some(v) = if_version {
        args.push("--if-version".into());
        args.push(v.to_string());
    }
    args.push(routes.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    command(dir, &args, env)
}

/// The version a successful publish printed.
pub fn published(out: &Output) -> u64 {
    assert!(out.status.success(), "publish failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A set of route files tagged `tag`: `set-TAG-a.toml` and `set-TAG-b.toml`, with routes
/// `/a` and `/b` answering `TAG` (file and route names carry the tag too, so a gateway that
/// served half of one set and half of another would show it in `GET /config` `files`).
pub fn write_set(dir: &Path, tag: u64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for part in ["a", "b"] {
        std::fs::write(
            dir.join(format!("set-{tag}-{part}.toml")),
            format!(
                "[[route]]\nname = \"r{tag}-{part}\"\npath = \"/{part}\"\n\
                 respond = {{ status = 200, body = \"{tag}\" }}\n"
            ),
        )
        .unwrap();
    }
}

/// The tags of the files a gateway serves (from `GET /config` `files`).
pub fn served_tags(config: &Value) -> Vec<u64> {
    config["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| {
            let name = f.as_str()?.rsplit('/').next()?;
            name.strip_prefix("set-")?.split('-').next()?.parse().ok()
        })
        .collect()
}

/// Load on a set of gateways while sets are published: every response of `GET /a` is counted,
/// a failure (an error status or a failed exchange) is counted apart, and for each tag the
/// first moment each gateway answered it is noted.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub state: std::sync::Arc<std::sync::Mutex<LoadState>>,
}

#[derive(Default, Debug)]
pub struct LoadState {
    pub ok: u64,
    pub failed: u64,
    pub failures: Vec<String>,
    /// (gateway index, tag) → first time it was served.
    pub first_seen: std::collections::HashMap<(usize, u64), std::time::Instant>,
}

impl Load {
    /// `per_gateway` clients per gateway, each on its own keep-alive connection, sending
    /// back to back.
    pub fn start(addrs: &[SocketAddr], per_gateway: usize) -> Load {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let state = std::sync::Arc::new(std::sync::Mutex::new(LoadState::default()));
        let mut tasks = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            for _ in 0..per_gateway {
                let (stop, state, url) = (stop.clone(), state.clone(), format!("http://{addr}/a"));
                tasks.push(tokio::spawn(async move {
                    let client = super::client();
                    while !stop.load(Ordering::Relaxed) {
                        let req = http::Request::get(&url).body(super::full("")).unwrap();
                        let got = tokio::time::timeout(Duration::from_secs(5), async {
                            let r = client.request(req).await.map_err(|e| e.to_string())?;
                            let status = r.status();
                            let body = http_body_util::BodyExt::collect(r.into_body())
                                .await
                                .map_err(|e| e.to_string())?
                                .to_bytes();
                            Ok::<_, String>((status, body))
                        })
                        .await
                        .unwrap_or_else(|_| Err("no answer in 5 s".into()));
                        let now = std::time::Instant::now();
                        let mut s = state.lock().unwrap();
                        match got {
                            Ok((status, body)) if status == 200 => {
                                s.ok += 1;
                                if let Ok(tag) = String::from_utf8_lossy(&body).parse::<u64>() {
                                    s.first_seen.entry((i, tag)).or_insert(now);
                                }
                            }
                            Ok((status, body)) => {
                                s.failed += 1;
                                s.failures
                                    .push(format!("{url}: {status} {}", String::from_utf8_lossy(&body)));
                            }
                            Err(e) => {
                                s.failed += 1;
                                s.failures.push(format!("{url}: {e}"));
                            }
                        }
                    }
                }));
            }
        }
        Load { stop, tasks, state }
    }

    /// Stop the clients and wait for them.
    pub async fn stop(self) -> std::sync::Arc<std::sync::Mutex<LoadState>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.state
    }
}

/// Median and maximum of `xs` (sorted here).
pub fn median_max(xs: &mut [Duration]) -> (Duration, Duration) {
    xs.sort();
    (xs[xs.len() / 2], xs[xs.len() - 1])
}

/// Publish `count` sets to three gateways under load; returns, per publish, the time from
/// starting `switchyard routes publish` to the moment the last gateway answered with the new
/// set, and the load's outcome.
pub async fn publish_under_load(source: &str, count: u64) -> (Vec<Duration>, LoadState) {
    let (cfg, routes) = published_fleet(source);
    let (_dirs, gws) = gateways(source, 3).await;
    let all: Vec<&FleetGw> = gws.iter().collect();
    for g in &all {
        eventually("the gateway applies version 1", Duration::from_secs(20), || async {
            g.applied().await == Some(1)
        })
        .await;
    }
    let load = Load::start(&gws.iter().map(|g| g.addr).collect::<Vec<_>>(), 2);
    let mut latencies = Vec::new();
    for tag in 2..=count + 1 {
        write_set(&routes, tag);
        let t0 = std::time::Instant::now();
        let v = published(&publish(cfg.path(), &routes, None, &[]));
        assert_eq!(v, tag);
        let state = &load.state;
        eventually(&format!("every gateway serves set {tag}"), CONVERGE, || async {
            let s = state.lock().unwrap();
            (0..3).all(|i| s.first_seen.contains_key(&(i, tag)))
        })
        .await;
        let s = state.lock().unwrap();
        let last = (0..3).map(|i| s.first_seen[&(i, tag)]).max().unwrap();
        latencies.push(last.duration_since(t0));
    }
    let state = load.stop().await;
    let state = std::mem::take(&mut *state.lock().unwrap());
    (latencies, state)
}

/// Copy a folder tree (a gateway's state, to start another gateway from it).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Print a measurement: median and max of publish → every gateway serving, and the load.
pub fn report(label: &str, latencies: &mut [Duration], load: &LoadState) {
    let (median, max) = median_max(latencies);
    println!(
        "{label}: {} publishes to 3 gateways: publish -> all serving median {:.1} ms, max {:.1} ms; \
         requests under load {} ok, {} failed",
        latencies.len(),
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        load.ok,
        load.failed
    );
}
