//! The built binary: `check`, start-up failures, `echo`, signals (SIGTERM drain,
//! SIGHUP reload), JSON logs, and the access log file.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::proc::Proc;
use support::*;

/// A config dir: gateway.toml with `listen` (and an admin API on port 0), plus route files.
fn config_dir(listen: &str, extra: &str, routes: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    for (name, text) in routes {
        std::fs::write(dir.path().join("routes").join(name), text).unwrap();
    }
    let access = if extra.contains("[access_log]") { "" } else { "[access_log]\nenabled = false\n" };
    std::fs::write(
        dir.path().join("gateway.toml"),
        format!(
            "[gateway]\nroutes_dir = \"routes\"\ndrain_timeout = \"10s\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[listener]]\nname = \"http\"\nlisten = \"{listen}\"\n\n{extra}\n{access}"
        ),
    )
    .unwrap();
    dir
}

fn run_check(dir: &Path) -> std::process::Output {
    let cfg = dir.join("gateway.toml");
    Command::new(bin()).args(["check", "--config", cfg.to_str().unwrap()]).output().unwrap()
}

/// Start the gateway with JSON logs; returns it with its listener and admin addresses.
async fn start(dir: &Path) -> (Proc, SocketAddr, SocketAddr) {
    let p = Proc::start(&["--log-format", "json", "--config", "gateway.toml"], dir);
    let addr = p.log("listening").await["fields"]["addr"].as_str().unwrap().parse().unwrap();
    let admin = p.log("admin API listening").await["fields"]["addr"].as_str().unwrap().parse().unwrap();
    (p, addr, admin)
}

#[test]
fn check_reports_a_typo_with_line_and_column() {
    let dir = config_dir(
        "127.0.0.1:0",
        "",
        &[("a.toml", "[[route]]\nname = \"a\"\n\nrespnd = { status = 200 }\n")],
    );
    let out = run_check(dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = dir.path().join("routes").join("a.toml");
    let first = stderr.lines().next().unwrap_or_default();
    let prefix = format!("{}:4:1: ", file.display());
    assert!(first.starts_with(&prefix), "want {prefix}…, got:\n{stderr}");
    assert!(first.contains("respnd"), "{first}");
    for l in stderr.lines() {
        assert!(l.starts_with(&format!("{}:", file.display())), "every line is path:line:column: {l}");
    }
}

#[test]
fn an_upstream_tls_ca_resolves_against_the_folder_of_gateway_toml() {
    let routes = "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\n[upstream.tls]\nca = \"internal-ca.pem\"\n\
                  [[route]]\nname = \"r\"\nupstream = \"u\"\n";
    let dir = config_dir("127.0.0.1:0", "", &[("u.toml", routes)]);
    let ca = rcgen::generate_simple_self_signed(vec!["internal.test".to_owned()]).unwrap();
    // Next to gateway.toml, as every relative path resolves; not in routes/.
    std::fs::write(dir.path().join("internal-ca.pem"), ca.cert.pem()).unwrap();
    let out = run_check(dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_accepts_a_valid_config_silently() {
    let dir =
        config_dir("127.0.0.1:0", "", &[("a.toml", "[[route]]\nname = \"a\"\nrespond = { status = 200 }\n")]);
    let out = run_check(dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn check_takes_https_consul_addresses_and_refuses_ftp_with_line_and_column() {
    let routes = |address: &str, extra: &str| {
        format!(
            "[[upstream]]\nname = \"svc\"\n\
             discovery = {{ type = \"consul\", address = \"{address}\", service = \"svc\"{extra} }}\n\n\
             [[route]]\nname = \"svc\"\nupstream = \"svc\"\n"
        )
    };
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let dir = config_dir("127.0.0.1:0", "", &[("a.toml", &routes("https://consul.internal:8501", ""))]);
    let out = run_check(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let dir = config_dir("127.0.0.1:0", "", &[("a.toml", &routes("ftp://consul.internal:8500", ""))]);
    let out = run_check(dir.path());
    assert_eq!(out.status.code(), Some(1));
    let want = format!(
        "{}:3:42: consul `address` \"ftp://consul.internal:8500\" must be an http:// or https:// URL",
        dir.path().join("routes").join("a.toml").display()
    );
    assert!(stderr(&out).starts_with(&want), "want {want}…, got:\n{}", stderr(&out));

    // tls_ca is read by check, as the gateway reads it before it starts the watch. A relative
    // path resolves as [upstream.tls] ca does: against the folder of gateway.toml.
    let dir = config_dir(
        "127.0.0.1:0",
        "",
        &[("a.toml", &routes("https://127.0.0.1:8501", ", tls_ca = \"consul-ca.pem\""))],
    );
    let ca = dir.path().join("consul-ca.pem");
    let out = run_check(dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with(&format!("{}:1:1: ", ca.display())), "{}", stderr(&out));
    std::fs::write(&ca, support::certs::TestCa::new("consul ca").pem).unwrap();
    let out = run_check(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// `check` with `[admin]` as given (and one valid route), run with `env` set (`None` = removed).
fn check_admin(admin: &str, env: &[(&str, Option<&str>)]) -> (std::path::PathBuf, i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("routes/a.toml"), "[[route]]\nname = \"a\"\nrespond = { status = 200 }\n")
        .unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!("[admin]\n{admin}\n\n[[listener]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["check", "--config", cfg.to_str().unwrap()]);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    (cfg, out.status.code().unwrap_or(-1), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn check_refuses_an_open_admin_api_and_a_missing_admin_token() {
    // Off loopback without a token.
    let (cfg, code, stderr) = check_admin("listen = \"0.0.0.0:9901\"", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{}:2:10: admin `listen` 0.0.0.0:9901 is not a loopback address: the admin API would be \
             open to the network: set [admin] token_env or listen on 127.0.0.1\n",
            cfg.display()
        )
    );

    // A token variable that is unset, or empty, at start.
    let admin = "listen = \"0.0.0.0:9901\"\ntoken_env = \"SWITCHYARD_CLI_ADMIN_TOKEN\"";
    for (value, problem) in [(None, "is not set"), (Some(""), "is empty")] {
        let (cfg, code, stderr) = check_admin(admin, &[("SWITCHYARD_CLI_ADMIN_TOKEN", value)]);
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(
            stderr,
            format!(
                "{}:3:13: the environment variable \"SWITCHYARD_CLI_ADMIN_TOKEN\" named by `token_env` \
                 {problem}; set it to the admin API token before starting\n",
                cfg.display()
            )
        );
    }

    // With the token set, the same config is valid.
    let (_, code, stderr) = check_admin(admin, &[("SWITCHYARD_CLI_ADMIN_TOKEN", Some("t0ken"))]);
    assert_eq!((code, stderr.as_str()), (0, ""));
}

#[test]
fn a_port_in_use_is_one_clear_line_and_a_failed_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = config_dir(&addr, "", &[("a.toml", "[[route]]\nname = \"a\"\nrespond = { status = 200 }\n")]);
    let out =
        Command::new(bin()).args(["--config", "gateway.toml"]).current_dir(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line:\n{stderr}");
    assert!(lines[0].contains(&addr), "names the address: {}", lines[0]);
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

#[tokio::test]
async fn echo_answers_json_and_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let p =
        Proc::start(&["--log-format", "json", "echo", "--listen", "127.0.0.1:0", "--name", "n"], dir.path());
    let addr: SocketAddr =
        p.log("echo upstream listening").await["fields"]["addr"].as_str().unwrap().parse().unwrap();

    let r = send(
        http::Request::post(format!("http://{addr}/some/path?b=2&a=1"))
            .header("X-Multi", "one")
            .header("x-multi", "two")
            .body(full("12345"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 6, "{j}");
    assert_eq!(j["name"], "n");
    assert_eq!(j["method"], "POST");
    assert_eq!(j["path"], "/some/path");
    assert_eq!(j["query"], "b=2&a=1");
    assert_eq!(j["headers"]["x-multi"], "one, two");
    assert_eq!(j["body_bytes"], 5);
    let r = get(&format!("http://{addr}/plain")).await;
    assert_eq!(r.json()["query"], "", "no query is an empty string");
    assert_eq!(get(&format!("http://{addr}/healthz")).await.status, 200);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = gated(Arc::clone(&gate)).await;
    let dir = config_dir("127.0.0.1:0", "", &[("a.toml", &one_upstream("slow", slow.addr))]);
    let (mut p, addr, _) = start(dir.path()).await;

    let pending = tokio::spawn(async move { get(&format!("http://{addr}/")).await });
    eventually("the request is in flight", Duration::from_secs(10), || async { slow.hits() == 1 }).await;
    p.signal("TERM");
    p.log("draining").await;
    eventually("new connections are refused while draining", Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(p.child.try_wait().unwrap().is_none(), "still running while a request is in flight");

    gate.add_permits(1);
    let r = pending.await.unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "released"));
    let st = p.exit(Duration::from_secs(10)).await;
    assert_eq!(st.code(), Some(0));
    // --log-format json: every stderr line is a JSON log record.
    for l in p.lines() {
        let j: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(j["level"].is_string() && j["fields"].is_object(), "{l}");
    }
}

#[tokio::test]
async fn sighup_reloads() {
    let dir =
        config_dir("127.0.0.1:0", "", &[("a.toml", "[[route]]\nname = \"a\"\nrespond = { status = 200 }\n")]);
    let (p, _, admin) = start(dir.path()).await;
    let series = "switchyard_config_reloads_total{result=\"success\"}";
    let before = admin_metric(admin, series).await;
    p.signal("HUP");
    eventually("SIGHUP counts a reload", Duration::from_secs(10), || async {
        admin_metric(admin, series).await == before + 1.0
    })
    .await;
    let v = get(&format!("http://{admin}/config")).await.json()["version"].clone();
    assert_eq!(v, 2, "a new snapshot was loaded");
    assert!(p.child.id() > 0);
}

#[tokio::test]
async fn access_log_file_has_every_field_with_its_type() {
    let up = upstream(status(200)).await;
    let routes = format!(
        "{}\n[[route]]\nname = \"fixed\"\npath = \"/fixed\"\nrespond = {{ status = 204 }}\n",
        one_upstream("u", up.addr)
    )
    .replace("[[route]]\nname = \"u\"\n", "[[route]]\nname = \"u\"\npath_prefix = \"/up\"\n");
    let dir = config_dir(
        "127.0.0.1:0",
        "[access_log]\nenabled = true\npath = \"access.log\"\n",
        &[("a.toml", &routes)],
    );
    let (_p, addr, _) = start(dir.path()).await;

    let r = send(
        http::Request::post(format!("http://{addr}/up/x"))
            .header("x-request-id", "req-1")
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .body(full("hello"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    // Refused (no route): its line still has the request's identity, the id the client sent.
    let missing = send(
        http::Request::get(format!("http://{addr}/missing"))
            .header("x-request-id", "req-404")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.headers["x-request-id"], "req-404");
    // Sent as `/x/../%66ixed`: the log records the canonical path the route matched, `/fixed`.
    let fixed = get(&format!("http://{addr}/x/../%66ixed")).await;
    assert_eq!(fixed.status, 204);
    let fixed_id = fixed.headers["x-request-id"].to_str().unwrap().to_owned();

    let path = dir.path().join("access.log");
    let mut lines: Vec<Value> = Vec::new();
    eventually("three access log lines", Duration::from_secs(10), || {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let n = lines.len();
        async move { n == 3 }
    })
    .await;
    let by_path =
        |p: &str| lines.iter().find(|l| l["path"] == p).unwrap_or_else(|| panic!("{p}: {lines:?}")).clone();

    let fields = [
        "ts",
        "listener",
        "client",
        "method",
        "host",
        "path",
        "protocol",
        "status",
        "route",
        "upstream",
        "endpoint",
        "attempts",
        "duration_ms",
        "upstream_ms",
        "bytes_in",
        "bytes_out",
        "request_id",
        "trace_id",
        "error",
    ];
    for l in &lines {
        let o = l.as_object().unwrap();
        for f in fields {
            assert!(o.contains_key(f), "{f} missing: {l}");
        }
        let ts = l["ts"].as_str().unwrap();
        // RFC 3339, UTC, milliseconds: 2024-01-02T03:04:05.678Z
        let b = ts.as_bytes();
        assert!(ts.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z', "ts {ts}");
        assert!(ts[20..23].bytes().all(|c| c.is_ascii_digit()), "ts {ts}");
        assert_eq!(l["listener"], "http");
        assert_eq!(l["client"], "127.0.0.1");
        assert_eq!(l["protocol"], "HTTP/1.1");
        assert!(l["host"].is_string());
        assert!(l["status"].is_u64() && l["attempts"].is_u64());
        assert!(l["duration_ms"].is_number() && l["bytes_in"].is_u64() && l["bytes_out"].is_u64());
        assert!(l["request_id"].as_str().is_some_and(|s| !s.is_empty()));
        let trace_id = l["trace_id"].as_str().unwrap();
        assert!(
            trace_id.len() == 32
                && trace_id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    let up_line = by_path("/up/x");
    assert_eq!(up_line["method"], "POST");
    assert_eq!(up_line["status"], 200);
    assert_eq!(up_line["route"], "u");
    assert_eq!(up_line["upstream"], "u");
    assert_eq!(up_line["endpoint"], up.addr.to_string());
    assert_eq!(up_line["attempts"], 1);
    assert!(up_line["upstream_ms"].as_f64().is_some_and(|ms| ms > 0.0), "the time to the head: {up_line}");
    assert_eq!(up_line["bytes_in"], 5);
    assert_eq!(up_line["request_id"], "req-1");
    assert_eq!(up_line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(up_line["error"].is_null());

    let missing = by_path("/missing");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["attempts"], 0, "the gateway answered itself");
    assert!(missing["route"].is_null() && missing["upstream"].is_null() && missing["endpoint"].is_null());
    assert!(missing["upstream_ms"].is_null());
    assert_eq!(missing["error"], "no_route");
    assert!(missing["bytes_out"].as_u64().unwrap() > 0, "the plain-text error body is counted");
    assert_eq!(missing["bytes_in"], 0);
    assert_eq!(missing["request_id"], "req-404");
    assert!(missing["host"].as_str().is_some_and(|h| h == addr.to_string()), "{missing}");

    let fixed = by_path("/fixed");
    assert_eq!(fixed["status"], 204);
    assert_eq!(fixed["route"], "fixed");
    assert_eq!(fixed["attempts"], 0);
    assert!(fixed["upstream"].is_null() && fixed["endpoint"].is_null());
    assert!(fixed["error"].is_null());
    assert_eq!(fixed["bytes_in"], 0, "a request without a body");
    assert_eq!(fixed["request_id"], fixed_id.as_str(), "the id the gateway made and answered with");
}

#[tokio::test]
async fn the_access_log_file_is_reopened_on_sigusr1() {
    let dir = config_dir(
        "127.0.0.1:0",
        "[access_log]\nenabled = true\npath = \"access.log\"\n",
        &[("a.toml", "[[route]]\nname = \"a\"\nrespond = { status = 200 }\n")],
    );
    let (p, addr, _) = start(dir.path()).await;
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let lines = |f: &Path| std::fs::read_to_string(f).map(|s| s.lines().count()).unwrap_or(0);
    assert_eq!(get(&format!("http://{addr}/before")).await.status, 200);
    eventually("the first line", Duration::from_secs(10), || async { lines(&log) == 1 }).await;
    // What logrotate does: move the file away, then tell the process.
    std::fs::rename(&log, &rotated).unwrap();
    p.signal("USR1");
    eventually("a new access.log after SIGUSR1", Duration::from_secs(10), || async {
        let _ = get(&format!("http://{addr}/after")).await;
        lines(&log) >= 1
    })
    .await;
    let fresh = std::fs::read_to_string(&log).unwrap();
    assert!(fresh.lines().all(|l| l.contains("\"/after\"")), "{fresh}");
    assert!(std::fs::read_to_string(&rotated).unwrap().contains("\"/before\""));
}

/// The soft open-file limit is raised to the hard one at start, and both are logged.
#[tokio::test]
async fn the_open_file_soft_limit_is_raised_to_the_hard_limit() {
    let dir =
        config_dir("127.0.0.1:0", "", &[("r.toml", "[[route]]\nname = \"r\"\nrespond = { status = 200 }\n")]);
    let p = Proc::start_after(
        "ulimit -Sn 256",
        &["--log-format", "json", "--config", "gateway.toml"],
        dir.path(),
    );
    let line = p.log("open-file limit").await;
    assert_eq!(line["fields"]["was"], 256, "{line}");
    let hard = line["fields"]["hard"].as_u64().unwrap();
    assert_eq!(line["fields"]["now"].as_u64(), Some(hard), "{line}");
    // And the process really runs with it.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.child.id())).unwrap();
    let row = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let soft: u64 = row.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(soft, hard, "{row}");
}
