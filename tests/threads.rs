//! Serving on several threads (one single-threaded runtime per thread, `SO_REUSEPORT` copies of
//! every listening socket): requests are served, draining finishes, and a second gateway on the
//! same port fails to start instead of silently sharing it.

mod support;

use std::time::Duration;

use support::*;

async fn start(dir: &std::path::Path, listen: &str, threads: usize) -> Result<switchyard::Gateway, String> {
    let toml = format!(
        "[gateway]\nroutes_dir = \"routes\"\ndrain_timeout = \"5s\"\n\n[[listener]]\nname = \"http\"\n\
         listen = \"{listen}\"\n\n[access_log]\nenabled = false\n"
    );
    std::fs::write(dir.join("gateway.toml"), toml).unwrap();
    let cfg = switchyard::config::load_gateway(&dir.join("gateway.toml")).unwrap();
    switchyard::Gateway::start_with(cfg, threads).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn several_serving_threads_share_the_port_and_drain() {
    let e = echo("e").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(
        dir.path().join("routes/r.toml"),
        format!(
            "[[upstream]]\nname = \"e\"\nendpoints = [\"{}\"]\n[[route]]\nname = \"r\"\nupstream = \"e\"\n",
            e.addr
        ),
    )
    .unwrap();
    let gw = start(dir.path(), "127.0.0.1:0", 3).await.unwrap();
    let addr = gw.listener_addr("http").unwrap();
    // Many fresh connections, so that every thread's socket gets some.
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            tokio::spawn(async move {
                let r = get(&format!("http://{addr}/t/{i}")).await;
                assert_eq!(r.status, 200);
                assert_eq!(r.json()["path"], format!("/t/{i}"));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // A second gateway on the same port must not start (it would silently share the port).
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir2.path().join("routes")).unwrap();
    let err = start(dir2.path(), &addr.to_string(), 2).await.unwrap_err();
    assert!(err.contains("cannot listen on") && err.contains("in use"), "{err}");
    assert!(tokio::time::timeout(Duration::from_secs(10), gw.drain()).await.unwrap());
}
