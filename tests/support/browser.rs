//! A real headless Chromium driven over W3C WebDriver (Debian's `chromium` and
//! `chromium-driver`; `scripts/test.sh` installs them). Only the commands the dashboard tests
//! use: navigate, run a script, find/type/click, window size, screenshot, and ChromeDriver's
//! browser and performance logs (console messages and every network request the page made).
//!
//! ChromeDriver listens on a port it picks itself (`--port=0`) and prints; it and the browser
//! it starts run in their own process group, which [`Browser`]'s drop ends.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use http::{Method, Request};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{full, send_with, TestBody};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(var: &str, default: &str, package: &str) -> PathBuf {
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    assert!(
        p.exists(),
        "{} not found: the dashboard tests need a real browser. Install it with \
         `apt-get install -y chromium chromium-driver` (scripts/test.sh does this), or point {var} at it",
        p.display()
    );
    let _ = package;
    p
}

/// A browser session; dropped, it ends ChromeDriver and the browser.
pub struct Browser {
    driver: tokio::process::Child,
    pgid: u32,
    base: String,
    session: String,
    client: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, TestBody>,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("base", &self.base).finish_non_exhaustive()
    }
}

/// How many times ChromeDriver is started when the port it picked is taken on `::1`.
const DRIVER_ATTEMPTS: usize = 5;

/// Start ChromeDriver on a port it picks; its process, process group, port and the rest of
/// its output.
///
/// With `--port=0` ChromeDriver binds `127.0.0.1` to a free port P and then `::1` to the same
/// P, and exits ("IPv6 port not available") if another socket of the test run holds `::1`
/// port P. Nothing outside ChromeDriver can pick a P that is free on both without releasing
/// it before use, so that one failure, and only it, starts ChromeDriver again. Any other
/// exit fails with what ChromeDriver printed.
async fn start_driver(
    chromedriver: &std::path::Path,
) -> (tokio::process::Child, u32, u16, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) {
    let mut said = String::new();
    for _ in 0..DRIVER_ATTEMPTS {
        let mut driver = tokio::process::Command::new(chromedriver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start chromedriver");
        let pgid = driver.id().expect("chromedriver pid");
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        let mut stderr = driver.stderr.take().unwrap();
        // Its log goes to stderr; keep reading it so that it never blocks on a full pipe.
        let errors = tokio::spawn(async move {
            let mut text = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
            text
        });
        said.clear();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("chromedriver output") {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return Some(rest.trim_end_matches('.').trim().parse::<u16>().expect("port"));
                }
                said.push_str(&line);
                said.push('\n');
            }
            None
        })
        .await
        .expect("chromedriver did not start within 30 s");
        if let Some(port) = port {
            return (driver, pgid, port, lines);
        }
        // Its output ended, so it is exiting; neither wait is left unbounded all the same.
        let _ = tokio::time::timeout(Duration::from_secs(5), driver.wait()).await;
        if let Ok(Ok(text)) = tokio::time::timeout(Duration::from_secs(5), errors).await {
            said.push_str(&text);
        }
        if !said.contains("port not available") {
            break;
        }
    }
    panic!("chromedriver exited before it listened; it said:\n{said}");
}

impl Browser {
    /// Start ChromeDriver and a headless Chromium with a `width`×`height` window, a fresh
    /// profile, and every background connection Chromium makes on its own turned off (the
    /// machine has no network but loopback).
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromium = find_program("SWITCHYARD_CHROMIUM", "/usr/bin/chromium", "chromium");
        let chromedriver =
            find_program("SWITCHYARD_CHROMEDRIVER", "/usr/bin/chromedriver", "chromium-driver");
        let (driver, pgid, port, mut lines) = start_driver(&chromedriver).await;
        // Keep reading what it prints, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let profile = tempfile::tempdir().unwrap();
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-features=Translate,OptimizationHints,MediaRouter".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
            "goog:loggingPrefs": { "browser": "ALL", "performance": "ALL" },
        }}});
        let mut b = Browser {
            driver,
            pgid,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            client: super::client(),
            _profile: profile,
        };
        let v = b.call(Method::POST, "/session", caps).await;
        b.session = v["sessionId"].as_str().expect("session id").to_owned();
        b
    }

    /// One WebDriver command; its `value`. Panics on a WebDriver error.
    async fn call(&self, method: Method, path: &str, body: Value) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut req = Request::builder().method(method.clone()).uri(url);
        let body = if method == Method::GET || method == Method::DELETE {
            full("")
        } else {
            req = req.header("content-type", "application/json");
            full(body.to_string())
        };
        let got =
            tokio::time::timeout(Duration::from_secs(60), send_with(&self.client, req.body(body).unwrap()))
                .await
                .expect("webdriver command timed out");
        let v: Value = serde_json::from_slice(&got.body)
            .unwrap_or_else(|e| panic!("webdriver {path}: not JSON ({e}): {}", got.text()));
        if !got.status.is_success() {
            panic!("webdriver {method} {path}: {} {}", got.status, v["value"]);
        }
        v["value"].clone()
    }

    /// Open `url` (returns once the page's load event fired).
    pub async fn goto(&self, url: &str) {
        self.call(Method::POST, "/url", json!({ "url": url })).await;
    }

    /// Run `js` (a function body; `arguments[i]` are `args`) in the page; what it returns.
    pub async fn script(&self, js: &str, args: Value) -> Value {
        self.call(Method::POST, "/execute/sync", json!({ "script": js, "args": args })).await
    }

    /// `js` (an expression) is truthy in the page, polled until `within`; returns how long it took.
    pub async fn wait_for(&self, what: &str, js: &str, within: Duration) -> Duration {
        let body = format!("return !!({js});");
        super::eventually(what, within, || async { self.script(&body, json!([])).await == json!(true) }).await
    }

    /// The text of the first element matching `css`, or None.
    pub async fn text(&self, css: &str) -> Option<String> {
        let v = self
            .script(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                json!([css]),
            )
            .await;
        v.as_str().map(str::to_owned)
    }

    async fn element(&self, css: &str) -> String {
        let v = self.call(Method::POST, "/element", json!({ "using": "css selector", "value": css })).await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_owned()
    }

    /// Type `text` into the element matching `css`, as a person would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(Method::POST, &format!("/element/{id}/value"), json!({ "text": text })).await;
    }

    /// Click the element matching `css`.
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(Method::POST, &format!("/element/{id}/click"), json!({})).await;
    }

    /// Resize the window.
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(Method::POST, "/window/rect", json!({ "width": width, "height": height })).await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.call(Method::GET, "/screenshot", Value::Null).await;
        base64::engine::general_purpose::STANDARD.decode(v.as_str().expect("base64")).expect("PNG")
    }

    /// ChromeDriver's log of `kind` (`browser`: console messages and failed loads;
    /// `performance`: DevTools events) since the last call.
    pub async fn log(&self, kind: &str) -> Vec<Value> {
        let v = self.call(Method::POST, "/se/log", json!({ "type": kind })).await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// The console messages of level SEVERE (errors, failed loads, CSP violations) since the
    /// last call.
    pub async fn console_errors(&self) -> Vec<String> {
        self.log("browser")
            .await
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Every URL that documents under `origin` asked for since the last call, whatever its
    /// host (from the DevTools network events; the browser's own pages, such as its new-tab
    /// page, are other documents and left out).
    pub async fn requested_urls(&self, origin: &str) -> Vec<String> {
        let mut urls = Vec::new();
        for e in self.log("performance").await {
            let Some(msg) = e["message"].as_str() else { continue };
            let Ok(m) = serde_json::from_str::<Value>(msg) else { continue };
            let p = &m["message"]["params"];
            if m["message"]["method"] != "Network.requestWillBeSent" {
                continue;
            }
            let document = p["documentURL"].as_str().unwrap_or_default();
            if document.starts_with(origin) {
                if let Some(u) = p["request"]["url"].as_str() {
                    urls.push(u.to_owned());
                }
            }
        }
        urls
    }

    /// End the session (closing the browser), then ChromeDriver.
    pub async fn quit(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            send_with(
                &self.client,
                Request::delete(format!("{}/session/{}", self.base, self.session)).body(full("")).unwrap(),
            ),
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Whatever is left of the process group we started: the browser and its helpers.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pgid)])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.start_kill();
    }
}
