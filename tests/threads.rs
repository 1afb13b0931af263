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

#[tokio::test]
async fn max_connections_holds_across_serving_threads() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(
        dir.path().join("routes/r.toml"),
        "[[route]]\nname = \"ok\"\nrespond = { status = 200 }\n",
    )
    .unwrap();
    let toml =
        "[gateway]\nroutes_dir = \"routes\"\n\n[[listener]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\n\
                [limits]\nmax_connections = 2\n\n[access_log]\nenabled = false\n";
    std::fs::write(dir.path().join("gateway.toml"), toml).unwrap();
    let cfg = switchyard::config::load_gateway(&dir.path().join("gateway.toml")).unwrap();
    let gw = switchyard::Gateway::start_with(cfg, 3).await.unwrap();
    let addr = gw.listener_addr("http").unwrap();
    // Six connections, spread by the kernel over three threads' sockets: only two may be served.
    let mut conns = Vec::new();
    for _ in 0..6 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        conns.push(s);
    }
    // Read all six at once: the two served answer at once; give the others 1.5 s to (wrongly) answer.
    let reads: Vec<_> = conns
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                let r = tokio::time::timeout(Duration::from_millis(1500), s.read(&mut buf)).await;
                // The stream goes back to the test: closing it would free its slot.
                (matches!(r, Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 200")), s)
            })
        })
        .collect();
    let mut served = 0;
    let mut open = Vec::new();
    for r in reads {
        let (ok, s) = r.await.unwrap();
        served += usize::from(ok);
        open.push(s);
    }
    assert_eq!(served, 2, "max_connections = 2 is per listener, not per thread");
}
