//! Hot reload of route files: changed, added and removed files apply; invalid sets
//! keep the old routes and show in `GET /config`; reloads are counted; unchanged upstreams keep
//! their pools; in-flight requests finish on their snapshot; nothing fails under load.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use serde_json::Value;
use support::*;

const WITHIN: Duration = Duration::from_secs(10);

fn respond(name: &str, path: &str, body: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\npath = \"{path}\"\nrespond = {{ status = 200, body = \"{body}\" }}\n"
    )
}

async fn body_is(g: &TestGateway, path: &str, want: &str) -> bool {
    let r = get(&g.url(path)).await;
    r.status == 200 && r.text() == want
}

async fn config(g: &TestGateway) -> Value {
    get(&g.admin_url("/config")).await.json()
}

#[tokio::test]
async fn changed_added_and_removed_files_apply() {
    let g = gateway_with("", &[("a.toml", &respond("a", "/a", "one"))]).await;
    assert!(body_is(&g, "/a", "one").await);

    g.write_routes("a.toml", &respond("a", "/a", "two"));
    eventually("the changed file applies", WITHIN, || body_is(&g, "/a", "two")).await;

    g.write_routes("b.toml", &respond("b", "/b", "bee"));
    eventually("the added file applies", WITHIN, || body_is(&g, "/b", "bee")).await;
    assert!(body_is(&g, "/a", "two").await);
    let files = config(&g).await["files"].as_array().unwrap().len();
    assert_eq!(files, 2);

    std::fs::remove_file(g.routes_dir().join("a.toml")).unwrap();
    eventually("the removed file's route is gone", WITHIN, || async {
        let r = get(&g.url("/a")).await;
        r.status == 404 && r.error() == Some("no_route")
    })
    .await;
    assert!(body_is(&g, "/b", "bee").await);
}

/// Write `bad` over `file`, wait for the reload to fail, and check that the old routes serve
/// and that `GET /config` names the file, line and column; then restore `good` and check the
/// error clears.
async fn rejected(g: &TestGateway, file: &str, bad: &str, good: &str, line: u64, column: u64, says: &str) {
    g.write_routes(file, bad);
    eventually(&format!("{file}: the reload is rejected"), WITHIN, || async {
        !config(g).await["last_error"].is_null()
    })
    .await;
    let cfg = config(g).await;
    let e = &cfg["last_error"];
    assert!(e["file"].as_str().unwrap().ends_with(file), "{e}");
    assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(line), Some(column)), "{e}");
    assert!(e["message"].as_str().unwrap().contains(says), "{e}");
    assert!(e["at"].as_str().unwrap().ends_with('Z'), "{e}");
    assert!(body_is(g, "/a", "one").await, "the old routes keep serving");

    g.write_routes(file, good);
    eventually("a valid reload clears last_error", WITHIN, || async {
        config(g).await["last_error"].is_null()
    })
    .await;
    assert!(body_is(g, "/a", "one").await);
}

#[tokio::test]
async fn invalid_files_keep_the_old_routes_and_report_where() {
    let a = respond("a", "/a", "one");
    let g = gateway_with("", &[("a.toml", &a), ("b.toml", "")]).await;
    let v0 = config(&g).await["version"].as_u64().unwrap();

    rejected(&g, "b.toml", "[[route]]\nname = \"x\"\nrespond = {\n", "", 3, 12, "").await;
    rejected(
        &g,
        "b.toml",
        "[[route]]\nname = \"x\"\npath = \"/x\"\nrespnd = { status = 200 }\n",
        "",
        4,
        1,
        "respnd",
    )
    .await;
    rejected(&g, "b.toml", &format!("\n\n{}", respond("a", "/dup", "dup")), "", 4, 8, "a").await;
    rejected(&g, "b.toml", "[[route]]\nname = \"x\"\nupstream = \"nowhere\"\n", "", 3, 12, "nowhere").await;

    // Every rejected set changed nothing; the valid ones in between each made a version.
    let v1 = config(&g).await["version"].as_u64().unwrap();
    assert!(v1 > v0);
}

#[tokio::test]
async fn reloads_are_counted_and_post_reload_answers() {
    let g = gateway_with("", &[("a.toml", &respond("a", "/a", "one"))]).await;
    let ok = "switchyard_config_reloads_total{result=\"success\"}";
    let failed = "switchyard_config_reloads_total{result=\"failure\"}";

    let before = admin_metric(g.admin, ok).await;
    let v = config(&g).await["version"].as_u64().unwrap();
    let r = send(Request::post(g.admin_url("/reload")).body(full("")).unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"].as_u64(), Some(v + 1), "an unchanged set still counts as a reload");
    assert_eq!(admin_metric(g.admin, ok).await, before + 1.0);
    let r = send(Request::post(g.admin_url("/reload")).body(full("")).unwrap()).await;
    assert_eq!(r.json()["version"].as_u64(), Some(v + 2));
    assert_eq!(admin_metric(g.admin, ok).await, before + 2.0);

    // A broken file: the watcher's attempt fails (counted), then POST /reload answers 400.
    g.write_routes("a.toml", "[[route]]\nname = \"a\"\nbogus = 1\n");
    eventually("the watcher's reload fails", WITHIN, || async { admin_metric(g.admin, failed).await >= 1.0 })
        .await;
    let fails = admin_metric(g.admin, failed).await;
    let r = send(Request::post(g.admin_url("/reload")).body(full("")).unwrap()).await;
    assert_eq!(r.status, 400);
    let errors = r.json()["errors"].as_array().cloned().unwrap();
    assert!(!errors.is_empty());
    assert!(errors[0]["file"].as_str().unwrap().ends_with("a.toml"));
    assert_eq!((errors[0]["line"].as_u64(), errors[0]["column"].as_u64()), (Some(3), Some(1)));
    assert_eq!(admin_metric(g.admin, failed).await, fails + 1.0);
    assert!(body_is(&g, "/a", "one").await);
}

#[tokio::test]
async fn a_deleted_routes_dir_keeps_its_routes_and_is_watched_again_once_back() {
    let g = gateway_with("", &[("a.toml", &respond("a", "/a", "one"))]).await;
    let dir = g.routes_dir();
    assert!(body_is(&g, "/a", "one").await);

    // Deleted: the reload fails (a missing folder is not an empty set) and the routes stay.
    std::fs::remove_dir_all(&dir).unwrap();
    eventually("the reload of a missing routes_dir is rejected", WITHIN, || async {
        !config(&g).await["last_error"].is_null()
    })
    .await;
    let e = &config(&g).await["last_error"];
    assert!(e["message"].as_str().unwrap().contains("cannot read the routes directory"), "{e}");
    assert!(body_is(&g, "/a", "one").await, "the old routes keep serving while routes_dir is gone");

    // Created again with another file: watched again and loaded, without SIGHUP.
    std::fs::create_dir(&dir).unwrap();
    write_atomic(&dir.join("b.toml"), &respond("b", "/b", "bee"));
    eventually("the re-created routes_dir is loaded", WITHIN, || body_is(&g, "/b", "bee")).await;
    assert_eq!(get(&g.url("/a")).await.status, 404, "the set is the new folder's");
    assert!(config(&g).await["last_error"].is_null());
    // And changes inside the new folder are seen.
    g.write_routes("b.toml", &respond("b", "/b", "two"));
    eventually("a change in the re-created routes_dir applies", WITHIN, || body_is(&g, "/b", "two")).await;

    // A folder renamed into place (a deploy that swaps whole folders) is watched too: the
    // watch follows the new folder, not the old one renamed away.
    let next = dir.with_file_name("routes.next");
    std::fs::create_dir(&next).unwrap();
    std::fs::write(next.join("c.toml"), respond("c", "/c", "sea")).unwrap();
    std::fs::rename(&dir, dir.with_file_name("routes.old")).unwrap();
    std::fs::rename(&next, &dir).unwrap();
    eventually("the swapped-in routes_dir is loaded", WITHIN, || body_is(&g, "/c", "sea")).await;
    g.write_routes("c.toml", &respond("c", "/c", "sea2"));
    eventually("a change in the swapped-in routes_dir applies", WITHIN, || body_is(&g, "/c", "sea2")).await;
}

#[tokio::test]
async fn an_unchanged_upstream_keeps_its_pooled_connection() {
    let up = upstream(status(200)).await;
    let base = one_upstream("u", up.addr);
    let g = gateway_with("", &[("u.toml", &base), ("other.toml", &respond("o", "/o", "1"))]).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(send_with(&c, Request::get(g.url("/x")).body(full("")).unwrap()).await.status, 200);
    }
    assert_eq!(up.conns(), 1);

    // A reload that changes another file, and one that rewrites this file with an extra route:
    // the upstream's definition is the same, so its pool is kept.
    g.write_routes("other.toml", &respond("o", "/o", "2"));
    eventually("other.toml applies", WITHIN, || body_is(&g, "/o", "2")).await;
    g.write_routes("u.toml", &format!("{base}\n{}", respond("extra", "/extra", "e")));
    eventually("u.toml applies", WITHIN, || body_is(&g, "/extra", "e")).await;
    for _ in 0..3 {
        assert_eq!(send_with(&c, Request::get(g.url("/x")).body(full("")).unwrap()).await.status, 200);
    }
    assert_eq!(up.conns(), 1, "reloads that leave the upstream alone must not open a new connection");

    // Changing the upstream's definition does build a new one (and so a new connection): the
    // counter above can tell the two apart.
    g.write_routes("u.toml", &base.replace("endpoints", "connect_timeout = \"2s\"\nendpoints"));
    let r = send(Request::post(g.admin_url("/reload")).body(full("")).unwrap()).await;
    assert_eq!(r.status, 200);
    let r = get(&g.url("/extra")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, ""), "served by the upstream, not `respond`");
    assert_eq!(send_with(&c, Request::get(g.url("/x")).body(full("")).unwrap()).await.status, 200);
    assert_eq!(up.conns(), 2);
}

#[tokio::test]
async fn an_in_flight_request_finishes_on_its_old_snapshot() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = gated(Arc::clone(&gate)).await;
    let g = gateway_with(
        "",
        &[("slow.toml", &one_upstream("slow", slow.addr)), ("a.toml", &respond("a", "/a", "one"))],
    )
    .await;
    let url = g.url("/slow");
    let pending = tokio::spawn(async move { get(&url).await });
    eventually("the slow request reached its upstream", WITHIN, || async { slow.hits() == 1 }).await;

    std::fs::remove_file(g.routes_dir().join("slow.toml")).unwrap();
    let r = send(Request::post(g.admin_url("/reload")).body(full("")).unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(get(&g.url("/slow")).await.status, 404, "new requests see the new routes");

    gate.add_permits(1);
    let r = pending.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_fails_no_request() {
    let a = echo("a").await;
    let b = echo("b").await;
    // Upstream "b" changes definition every other reload (so it is rebuilt, with a new pool),
    // "a" never does; the route alternates between them.
    let variant = |i: usize| {
        format!(
            "[[upstream]]\nname = \"a\"\nendpoints = [\"{}\"]\n\
             [[upstream]]\nname = \"b\"\nendpoints = [\"{}\"]\nconnect_timeout = \"{}s\"\n\
             [[route]]\nname = \"load\"\npath_prefix = \"/load\"\nupstream = \"{}\"\n",
            a.addr,
            b.addr,
            1 + i % 2,
            if i % 2 == 0 { "a" } else { "b" },
        )
    };
    let g = gateway_with("", &[("load.toml", &variant(0)), ("other.toml", &respond("o", "/o", "0"))]).await;
    let ok_reloads = "switchyard_config_reloads_total{result=\"success\"}";
    let reloads_before = admin_metric(g.admin, ok_reloads).await;

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let seen_b = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (stop, served, seen_b) = (Arc::clone(&stop), Arc::clone(&served), Arc::clone(&seen_b));
        let url = g.url("/load/x");
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let res = tokio::time::timeout(
                    Duration::from_secs(10),
                    c.request(Request::get(url.as_str()).body(full("")).unwrap()),
                )
                .await;
                match res {
                    Ok(Ok(res)) => {
                        let status = res.status();
                        let body = http_body_util::BodyExt::collect(res.into_body()).await;
                        let name = body
                            .ok()
                            .and_then(|b| serde_json::from_slice::<Value>(&b.to_bytes()).ok())
                            .and_then(|j| j["name"].as_str().map(str::to_owned));
                        match (status.as_u16(), name.as_deref()) {
                            (200, Some("a")) => {}
                            (200, Some("b")) => seen_b.store(true, Ordering::Relaxed),
                            other => failures.push(format!("{other:?}")),
                        }
                    }
                    Ok(Err(e)) => failures.push(format!("client error: {e:?}")),
                    Err(_) => failures.push("timed out".into()),
                }
                served.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }

    // Rewrite the files 24 times, reloading each time (the watcher joins in, debounced).
    for i in 1..=24 {
        g.write_routes("load.toml", &variant(i));
        g.write_routes("other.toml", &respond("o", "/o", &i.to_string()));
        let r = send(Request::post(g.admin_url("/reload")).body(full("")).unwrap()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(80)).await; // pacing the rewrites over ~2 s
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(10)]);
    assert!(served.load(Ordering::Relaxed) > 100, "the load was real");
    assert!(seen_b.load(Ordering::Relaxed), "the reloads took effect");
    assert!(admin_metric(g.admin, ok_reloads).await >= reloads_before + 24.0);
}
