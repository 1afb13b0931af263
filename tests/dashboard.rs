//! The dashboard (`GET /` on the admin listener) in a real headless Chromium, driven over
//! WebDriver: it loads with no console error and no request to any other host, shows the
//! routes of the route files in precedence order, an upstream endpoint that dies turns
//! unhealthy within one probe interval plus one refresh, a failed reload shows its file and
//! line, it stays within a phone's width, with `token_env` it asks for the token once, and in
//! fleet mode it lists the members (from `GET /fleet`) with the versions they serve.
//!
//! The screenshot in docs/dashboard.png comes from the first test: run it with
//! `SWITCHYARD_DASHBOARD_PNG=docs/dashboard.png` to write it there.

mod support;

use std::time::{Duration, Instant};

use http::Request;
use serde_json::json;
use support::browser::Browser;
use support::*;

/// The dashboard's refresh period (src/admin/dashboard/app.js).
const REFRESH: Duration = Duration::from_secs(2);
/// The probe interval of the upstream the test kills.
const PROBE: Duration = Duration::from_secs(1);
/// Room for a loaded machine on top of what each wait is about (scheduling, Chromium's
/// start, a debounce); the tests report how long each wait really took.
const SLACK: Duration = Duration::from_secs(8);

fn routes(api: std::net::SocketAddr, web: std::net::SocketAddr) -> String {
    format!(
        r#"[[upstream]]
name = "api"
endpoints = ["{api}"]

[[upstream]]
name = "web"
endpoints = ["{web}"]
[upstream.health]
path = "/healthz"
interval = "1s"
timeout = "500ms"
healthy_threshold = 1
unhealthy_threshold = 1

[[route]]
name = "web"
upstream = "web"

[[route]]
name = "api-v1"
hosts = ["api.example.com"]
path_prefix = "/v1/"
methods = ["GET", "POST"]
upstream = "api"

[[route]]
name = "deny-admin"
path_prefix = "/admin"
respond = {{ status = 403, body = "no" }}
"#
    )
}

/// The route names in the order the page lists them.
const ROUTE_ORDER_JS: &str =
    "return [...document.querySelectorAll('#routes-body tr')].map(r => r.dataset.route);";

fn health_js(addr: &str) -> String {
    format!("document.querySelector('[data-endpoint=\"{addr}\"] .health')?.dataset.health")
}

/// An echo upstream on `hold`'s port, in a runtime of its own on a thread of its own: dropping
/// what this returns ends that runtime, which closes the listener and every open connection at
/// once, as the death of an upstream process would (the held port then refuses connections).
fn killable_echo(hold: &PortHold, name: &str) -> tokio::sync::oneshot::Sender<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listener = {
        let _in = rt.enter();
        hold.listen()
    };
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    let name = name.to_owned();
    std::thread::spawn(move || {
        rt.block_on(async move {
            tokio::select! {
                _ = switchyard::echo::serve(listener, name) => {}
                _ = killed => {}
            }
        });
        // `rt` drops here, and with it every connection task.
    });
    kill
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_gateway_in_a_real_browser() {
    let api = echo("api").await;
    let web_port = PortHold::new();
    let web_server = killable_echo(&web_port, "web");
    let certs = tempfile::tempdir().unwrap();
    let tls = format!(
        "[[listener]]\nname = \"https\"\nlisten = \"127.0.0.1:0\"\n[listener.tls]\ncerts_dir = \"{}\"\n",
        certs.path().join("certs").display()
    );
    let g = gateway_with(&tls, &[("routes.toml", &routes(api.addr, web_port.addr()))]).await;
    // Some traffic, for the charts: successes on two routes and a few 403s.
    for _ in 0..20 {
        get(&g.url("/")).await;
    }
    for _ in 0..12 {
        assert_eq!(get_host(&g.url("/v1/users"), "api.example.com").await.status, 200);
    }
    for _ in 0..5 {
        assert_eq!(get(&g.url("/admin/x")).await.status, 403);
    }
    // Close the current `GET /stats` bucket now rather than at the next multiple of 10 s.
    switchyard::internals::tick_stats(g.gateway());
    let web = web_port.addr().to_string();
    eventually("web is healthy", SLACK, || async {
        endpoint_view(&g, "web", &web).await["health"] == "healthy"
    })
    .await;

    let b = Browser::start(1280, 1400).await;
    let origin = format!("http://{}", g.admin);
    b.goto(&g.admin_url("/")).await;
    let took = b
        .wait_for("the routes are drawn", "document.querySelectorAll('#routes-body tr').length === 3", SLACK)
        .await;
    eprintln!("routes drawn {took:?} after the load event");

    // Routes in precedence order, as the admin API has them (exact/longest prefix first).
    let want: Vec<String> = get(&g.admin_url("/routes")).await.json()["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(want.len(), 3);
    assert_eq!(b.script(ROUTE_ORDER_JS, json!([])).await, json!(want));
    let api_row = b.text("[data-route=\"api-v1\"]").await.unwrap();
    assert!(
        api_row.contains("api.example.com") && api_row.contains("prefix /v1") && api_row.contains("→ api"),
        "{api_row}"
    );
    assert!(b.text("[data-route=\"deny-admin\"]").await.unwrap().contains("respond 403"));
    // Upstreams with their endpoints, the certificate with its expiry, one chart per route.
    assert_eq!(b.script(&format!("return {};", health_js(&web)), json!([])).await, "healthy");
    assert!(b.text("[data-upstream=\"api\"]").await.unwrap().contains(&api.addr.to_string()));
    let cert = b.text("[data-cert=\"dev\"]").await.expect("the dev certificate is listed");
    assert!(cert.contains("localhost") && cert.contains("days"), "{cert}");
    assert_eq!(
        b.script("return document.querySelectorAll('#routes-body svg.spark').length;", json!([])).await,
        3
    );

    // An endpoint that dies shows as unhealthy within one probe interval plus one refresh.
    drop(web_server);
    let killed = Instant::now();
    let took = b
        .wait_for(
            "the killed endpoint shows as unhealthy",
            &format!("{} === 'unhealthy'", health_js(&web)),
            PROBE + REFRESH + SLACK,
        )
        .await;
    eprintln!("killed endpoint unhealthy on the page after {took:?} (probe {PROBE:?} + refresh {REFRESH:?})");
    assert!(killed.elapsed() >= took);

    // A reload that fails shows its file and line, and the version still served.
    g.write_routes("zz-broken.toml", "[[route]]\nname = \"broken\"\nupstream = \n");
    let r = send(Request::post(g.admin_url("/reload")).body(full("")).unwrap()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    b.wait_for(
        "the reload error is shown with file:line",
        "document.querySelector('[data-error]')?.textContent.includes('zz-broken.toml:3:')",
        REFRESH + SLACK,
    )
    .await;

    // Nothing went wrong in the page, and it asked nothing of any other host.
    let errors = b.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let urls = b.requested_urls(&origin).await;
    assert!(urls.iter().any(|u| u.ends_with("/stats")), "the page polls /stats: {urls:?}");
    let foreign: Vec<&String> =
        urls.iter().filter(|u| !u.starts_with(&origin) && !u.starts_with("data:")).collect();
    assert!(foreign.is_empty(), "requests to other hosts: {foreign:?}");

    let png = b.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "a screenshot of the page");
    if let Ok(path) = std::env::var("SWITCHYARD_DASHBOARD_PNG") {
        std::fs::write(&path, &png).unwrap();
    }

    // On a phone's width the page does not scroll sideways (wide tables scroll in their box).
    b.resize(390, 844).await;
    b.goto(&g.admin_url("/")).await;
    b.wait_for(
        "the routes are drawn on a phone",
        "document.querySelectorAll('#routes-body tr').length === 3",
        SLACK,
    )
    .await;
    let widths =
        b.script("return [document.documentElement.scrollWidth, window.innerWidth];", json!([])).await;
    assert!(widths[0].as_u64() <= widths[1].as_u64(), "the page is wider than the phone: {widths}");
    if let Ok(path) = std::env::var("SWITCHYARD_DASHBOARD_PHONE_PNG") {
        std::fs::write(&path, b.screenshot().await).unwrap();
    }
    assert!(b.console_errors().await.is_empty());
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_dashboard_asks_for_it_once_per_browser_session() {
    let token = "dash-Board.token_7";
    std::env::set_var("SWITCHYARD_TEST_DASHBOARD_TOKEN", token);
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"SWITCHYARD_TEST_DASHBOARD_TOKEN\"\n";
    let g =
        gateway_with(admin, &[("r.toml", "[[route]]\nname = \"hello\"\nrespond = { status = 200 }\n")]).await;

    let b = Browser::start(1024, 900).await;
    b.goto(&g.admin_url("/")).await;
    b.wait_for("the token form is shown", "!document.getElementById('token-form').hidden", SLACK).await;
    assert_eq!(b.script("return document.getElementById('main').hidden;", json!([])).await, true);
    assert_eq!(b.script("return document.getElementById('token-error').hidden;", json!([])).await, true);
    // Asking first, rather than after a 401: nothing failed, and no data path was requested.
    assert!(b.console_errors().await.is_empty());
    let origin = format!("http://{}", g.admin);
    assert!(!b.requested_urls(&origin).await.iter().any(|u| u.ends_with("/config")));

    b.type_into("#token-input", token).await;
    b.click("#token-submit").await;
    b.wait_for("the data is shown", "document.querySelector('[data-route=\"hello\"]')", SLACK).await;
    assert!(b.console_errors().await.is_empty());

    // Kept for the browser session: a reload of the page does not ask again.
    b.goto(&g.admin_url("/")).await;
    b.wait_for("the data is shown again", "document.querySelector('[data-route=\"hello\"]')", SLACK).await;
    assert_eq!(b.script("return document.getElementById('token-form').hidden;", json!([])).await, true);

    // A wrong token (say the variable changed and the gateway restarted) asks again, saying so.
    b.script("sessionStorage.setItem('switchyard.admin.token', 'wrong');", json!([])).await;
    b.goto(&g.admin_url("/")).await;
    b.wait_for(
        "the form says the token was refused",
        "!document.getElementById('token-form').hidden && !document.getElementById('token-error').hidden",
        SLACK,
    )
    .await;
    assert_eq!(
        b.script("return sessionStorage.getItem('switchyard.admin.token');", json!([])).await,
        json!(null)
    );
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_fleet_mode_the_dashboard_lists_the_members_and_their_versions() {
    use support::consul_double::ConsulDouble;
    use support::fleet::*;
    let consul = ConsulDouble::start().await;
    let src = format!("{{ type = \"consul\", address = \"http://{}\", prefix = \"edge\" }}", consul.addr);
    let (_cfg, _) = published_fleet(&src);
    // This gateway, in-process, and one more as a process: two members.
    let g = gateway_with(&format!("[gateway]\nroutes_source = {src}\n"), &[]).await;
    let (_dirs, others) = gateways(&src, 1).await;
    converged(&[&others[0]], 1).await;
    eventually("both members registered", SLACK, || async {
        get(&g.admin_url("/fleet")).await.json()["members"].as_array().is_some_and(|m| m.len() == 2)
    })
    .await;
    let other_id = others[0].member_id().await;

    let b = Browser::start(1280, 1000).await;
    b.goto(&g.admin_url("/")).await;
    b.wait_for("two members are listed", "document.querySelectorAll('#fleet-body tr').length === 2", SLACK)
        .await;
    assert_eq!(b.script("return document.getElementById('fleet').hidden;", json!([])).await, false);
    let source = b.text("#fleet-source").await.unwrap();
    assert!(
        source.contains("consul") && source.contains("published 1") && source.contains("applied 1"),
        "{source}"
    );
    let row = b.text(&format!("[data-member=\"{other_id}\"]")).await.expect("the other gateway's row");
    assert!(row.contains(&others[0].addr.to_string()) && row.contains(&others[0].admin.to_string()), "{row}");

    // The source goes away: the page keeps refreshing, and the fleet section says why.
    consul.stop().await;
    b.wait_for(
        "the fleet section shows the outage",
        "[...document.querySelectorAll('[data-fleet-error]')].some((e) => e.textContent.startsWith('source unreachable'))",
        REFRESH + SLACK,
    )
    .await;
    b.wait_for(
        "the members' error is shown too",
        "[...document.querySelectorAll('[data-fleet-error]')].some((e) => e.textContent.startsWith('members:'))",
        REFRESH + SLACK,
    )
    .await;
    let status = b.script("return document.getElementById('status').className;", json!([])).await;
    assert_eq!(status, "status", "the rest of the page still refreshes");
    // Chromium logs each failed request; nothing else went wrong.
    let errors = b.console_errors().await;
    let other: Vec<_> = errors.iter().filter(|e| !e.contains("/fleet") || !e.contains("503")).collect();
    assert!(other.is_empty(), "console errors: {errors:#?}");
    b.quit().await;
}
