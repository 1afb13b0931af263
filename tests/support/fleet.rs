//! Fleet-mode gateways for the tests: each a `switchyard` process with its own folder
//! (`gateway.toml` naming the routes source, `state/routes` as its cache), and the fleet
//! commands (`routes publish`, `routes pull`, `fleet`, `check`) run from the built binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use super::proc::Proc;
use super::{bin, get};

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
