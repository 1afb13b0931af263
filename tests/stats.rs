//! `GET /stats`: requests, errors and latency per route and per upstream in 10-second buckets,
//! read back through the admin API of a running gateway.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, Response, StatusCode};
use serde_json::Value;
use support::*;

/// Every array in `v`, wherever it is, with the path to it.
fn arrays<'v>(v: &'v Value, path: String, out: &mut Vec<(String, &'v Vec<Value>)>) {
    match v {
        Value::Array(a) => {
            if a.iter().all(|x| !x.is_object()) {
                out.push((path, a));
            } else {
                for (i, x) in a.iter().enumerate() {
                    arrays(x, format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                arrays(x, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn newest(v: &Value) -> u64 {
    v.as_array().unwrap().last().unwrap().as_u64().unwrap()
}

fn sum(v: &Value) -> u64 {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).sum()
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v[key].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn stats_show_each_routes_and_upstreams_requests_and_errors_in_the_newest_bucket() {
    let up = upstream(|req| {
        let code = match req.uri().path() {
            "/api/missing" => 404,
            "/api/broken" => 503,
            _ => 200,
        };
        let mut r = Response::new(full("x"));
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        std::future::ready(r)
    })
    .await;
    let dead = dead_addr();
    let routes = format!(
        "[[upstream]]\nname = \"users\"\nendpoints = [\"{}\"]\n\n\
         [[upstream]]\nname = \"gone\"\nendpoints = [\"{}\"]\n\n\
         [[route]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"users\"\n\n\
         [[route]]\nname = \"down\"\npath_prefix = \"/down\"\nupstream = \"gone\"\n\
         [route.retry]\nattempts = 0\n\n\
         [[route]]\nname = \"idle\"\npath = \"/idle\"\nrespond = {{ status = 200 }}\n",
        up.addr,
        dead.addr()
    );
    let g = gateway(&routes).await;
    let mut sent = Vec::new();
    for (path, n) in [("/api/ok", 5), ("/api/missing", 2), ("/api/broken", 1), ("/down", 3), ("/none", 2)] {
        for _ in 0..n {
            sent.push(get(&g.url(path)).await.status.as_u16());
        }
    }
    assert_eq!(sent.iter().filter(|&&s| s == 404).count(), 4, "{sent:?}");
    assert_eq!(sent.iter().filter(|&&s| s == 502).count(), 3, "{sent:?}");
    // A request is counted when its response body ends, which the client may see first.
    let series = |route: &str, upstream: &str, code: u16| {
        format!("switchyard_requests_total{{listener=\"http\",route=\"{route}\",upstream=\"{upstream}\",code=\"{code}\"}}")
    };
    let expected = [
        (series("api", "users", 200), 5.0),
        (series("api", "users", 404), 2.0),
        (series("api", "users", 503), 1.0),
        (series("down", "gone", 502), 3.0),
    ];
    eventually("every request is counted", Duration::from_secs(5), || async {
        let m = get(&g.admin_url("/metrics")).await.text();
        expected.iter().all(|(s, n)| metric(&m, s) == Some(*n))
    })
    .await;

    switchyard::internals::tick_stats(g.gateway());
    let r = get(&g.admin_url("/stats")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!((v["bucket_seconds"].as_u64(), v["buckets"].as_u64()), (Some(10), Some(30)));
    let end = v["end"].as_u64().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(end % 10 == 0 && end + 20 >= now && end <= now + 1, "end {end}, now {now}");

    let routes = get(&g.admin_url("/routes")).await.json();
    assert_eq!(names(&v, "routes"), names(&routes, "routes"), "routes in precedence order");
    let upstreams = get(&g.admin_url("/upstreams")).await.json();
    assert_eq!(names(&v, "upstreams"), names(&upstreams, "upstreams"));

    let route = |n: &str| v["routes"].as_array().unwrap().iter().find(|r| r["name"] == n).unwrap().clone();
    let api = route("api");
    assert_eq!(
        (newest(&api["requests"]), newest(&api["errors"]["4xx"]), newest(&api["errors"]["5xx"])),
        (8, 2, 1),
        "{api}"
    );
    assert_eq!(sum(&api["requests"]), 8, "all in the newest bucket: {api}");
    let p50 = api["p50_ms"].as_array().unwrap();
    assert!(p50.last().unwrap().as_f64().is_some_and(|ms| ms > 0.0), "{api}");
    assert!(p50[..29].iter().all(Value::is_null), "no requests, no p50: {api}");
    assert!(api["p99_ms"][29].as_f64().unwrap() >= p50[29].as_f64().unwrap());

    let down = route("down");
    assert_eq!(
        (newest(&down["requests"]), newest(&down["errors"]["4xx"]), newest(&down["errors"]["5xx"])),
        (3, 0, 3)
    );
    let idle = route("idle");
    assert_eq!((sum(&idle["requests"]), idle["p99_ms"][29].clone()), (0, Value::Null));

    let upstream =
        |n: &str| v["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == n).unwrap().clone();
    let users = upstream("users");
    let e = &users["errors"];
    assert_eq!(
        (
            newest(&users["requests"]),
            newest(&e["5xx"]),
            newest(&e["connect_failed"]),
            newest(&e["reset"]),
            newest(&e["timeout"])
        ),
        (8, 1, 0, 0, 0),
        "{users}"
    );
    let gone = upstream("gone");
    assert_eq!((newest(&gone["requests"]), newest(&gone["errors"]["connect_failed"])), (3, 3), "{gone}");

    let mut all = Vec::new();
    arrays(&v, String::new(), &mut all);
    assert_eq!(all.len(), 3 * 5 + 2 * 5, "{v}");
    for (path, a) in all {
        assert_eq!(a.len(), 30, "{path}");
    }
}

#[tokio::test]
async fn stats_need_the_admin_token_when_there_is_one() {
    let var = "SWITCHYARD_TEST_ADMIN_TOKEN_STATS";
    std::env::set_var(var, "st4ts-token");
    let admin = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"{var}\"\n");
    let g =
        gateway_with(&admin, &[("r.toml", "[[route]]\nname = \"r\"\nrespond = { status = 200 }\n")]).await;
    assert_eq!(get(&g.admin_url("/stats")).await.status, 401);
    let with_token = |method: http::Method| {
        Request::builder()
            .method(method)
            .uri(g.admin_url("/stats"))
            .header("authorization", "Bearer st4ts-token")
            .body(full(""))
            .unwrap()
    };
    let r = send(with_token(http::Method::GET)).await;
    assert_eq!(r.status, 200);
    assert_eq!(names(&r.json(), "routes"), ["r"]);
    assert_eq!(send(with_token(http::Method::POST)).await.status, 405);
}
