//! HTTP/3 against a client switchyard did not write: aioquic (Python), driven through
//! `scripts/h3client.py`, talks to an `https` listener with `http3 = true` (certificates from a
//! test CA, SNI `app.test`, dialed on 127.0.0.1). The aioquic Python is the one of the virtual
//! environment `scripts/test.sh` makes (`target/h3venv`), or `SWITCHYARD_H3_PYTHON`; without
//! it these tests fail and say so, they never pass silently.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response};
use http_body_util::BodyExt;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use support::*;
use tokio::process::Command;

/// The TLS server name the certificate is for (and the URL host of every request).
const HOST: &str = "app.test";
/// Size of the upstream's large response.
const BIG: usize = 1 << 20;
/// Size of the POST body the client sends.
const POST: usize = 256 * 1024;

/// The Python with aioquic: `SWITCHYARD_H3_PYTHON`, else `target/h3venv/bin/python`.
fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = std::env::var_os("SWITCHYARD_H3_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/h3venv/bin/python"));
    assert!(
        path.exists(),
        "no Python with aioquic at {}: run scripts/test.sh (it makes target/h3venv with the pinned \
         aioquic), or set SWITCHYARD_H3_PYTHON to a Python that has it",
        path.display()
    );
    path
}

/// The bytes `h3client.py --data-size N` sends: 0..=250 repeated.
fn client_body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// The upstream's large response: a byte pattern unlike the client's.
fn big_body() -> Bytes {
    let mut x = 0x2545_f491_u32;
    (0..BIG)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A CA, and a certs dir holding one pair it signed for [`HOST`] (and localhost, 127.0.0.1).
struct Certs {
    _dir: tempfile::TempDir,
    certs: PathBuf,
    ca_file: PathBuf,
}

fn certs() -> Certs {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "h3 interop ca");
    p.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = p.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(p, ca_key);

    let sans = [HOST, "localhost", "127.0.0.1"].map(str::to_owned).to_vec();
    let mut leaf = CertificateParams::new(sans).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, HOST);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("app.key"), key.serialize_pem()).unwrap();
    std::fs::write(certs.join("app.crt"), cert.pem()).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    Certs { _dir: dir, certs, ca_file }
}

/// An upstream for the transfers: `GET /fake/big` answers [`big_body`]; any other request is
/// read whole and answered with JSON `{"method", "bytes", "sha256", "content_length"}` of what
/// arrived.
async fn fake() -> FakeUpstream {
    let big = big_body();
    upstream(move |req| {
        let big = big.clone();
        async move {
            if req.method() == Method::GET && req.uri().path() == "/fake/big" {
                return Response::builder()
                    .header("content-type", "application/octet-stream")
                    .body(full(big))
                    .unwrap();
            }
            let method = req.method().to_string();
            let content_length =
                req.headers().get("content-length").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let json = serde_json::json!({
                "method": method,
                "bytes": body.len(),
                "sha256": sha256_hex(&body),
                "content_length": content_length,
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(full(json.to_string()))
                .unwrap()
        }
    })
    .await
}

/// A gateway with an `https` listener (HTTP/3 on) in front of `echo` (`/echo`) and [`fake`]
/// (`/fake`); `extra` is appended to gateway.toml.
struct H3Gateway {
    g: TestGateway,
    port: u16,
    certs: Certs,
    _echo: FakeUpstream,
    _fake: FakeUpstream,
}

async fn h3_gateway(extra: &str) -> H3Gateway {
    let certs = certs();
    let echo = echo("e").await;
    let fake = fake().await;
    let routes = format!(
        "[[upstream]]\nname = \"echo\"\nendpoints = [\"{}\"]\n\n[[upstream]]\nname = \"fake\"\nendpoints = [\"{}\"]\n\n\
         [[route]]\nname = \"echo\"\npath_prefix = \"/echo\"\nupstream = \"echo\"\n\n\
         [[route]]\nname = \"fake\"\npath_prefix = \"/fake\"\nupstream = \"fake\"\n",
        echo.addr, fake.addr
    );
    let cfg = format!(
        "[[listener]]\nname = \"https\"\nlisten = \"127.0.0.1:0\"\n[listener.tls]\ncerts_dir = \"{}\"\nhttp3 = true\n\n{extra}\n",
        certs.certs.display()
    );
    let g = gateway_with(&cfg, &[("routes.toml", &routes)]).await;
    // UDP is bound on the TCP listener's address: the same port number.
    let port = g.gateway().listener_addr("https").unwrap().port();
    H3Gateway { g, port, certs, _echo: echo, _fake: fake }
}

impl H3Gateway {
    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.port)
    }

    /// One request with aioquic (`scripts/h3client.py URL --connect 127.0.0.1 --ca CA ARGS`):
    /// its JSON line, which must say `"ok": true`.
    async fn h3(&self, path: &str, args: &[&str]) -> serde_json::Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/h3client.py");
        let mut cmd = Command::new(python());
        cmd.arg(script)
            .arg(self.url(path))
            .args(["--connect", "127.0.0.1", "--timeout", "20", "--ca"])
            .arg(&self.certs.ca_file)
            .args(args);
        let (ok, stdout, stderr) = run(&mut cmd).await;
        let line = stdout.lines().last().unwrap_or("");
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("h3client.py printed no JSON ({e}); stdout: {stdout}\nstderr: {stderr}")
        });
        assert!(ok && v["ok"] == true, "h3client.py {path} failed: {v}\nstderr: {stderr}");
        assert_eq!(v["alpn"], "h3", "{v}");
        v
    }
}

/// Run a command without blocking the runtime (the gateway serves on this test's runtime),
/// for at most 60 s; (success, stdout, stderr).
async fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .expect("command timed out")
    .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// A response header of an h3client.py result.
fn header<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    v["headers"].as_array()?.iter().find(|h| h[0] == name).and_then(|h| h[1].as_str())
}

#[tokio::test]
async fn aioquic_get_over_http3_reaches_the_echo_upstream() {
    let gw = h3_gateway("").await;
    let v = gw.h3("/echo/hello?x=1", &["--show-body", "-H", "x-probe: h3"]).await;
    assert_eq!(v["status"], 200, "{v}");
    let body = v["body"].as_str().unwrap();
    let echo: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(echo["name"], "e", "{echo}");
    assert_eq!(echo["method"], "GET", "{echo}");
    assert_eq!(echo["path"], "/echo/hello", "{echo}");
    assert_eq!(echo["query"], "x=1", "{echo}");
    assert_eq!(echo["body_bytes"], 0, "{echo}");
    let headers = &echo["headers"];
    assert_eq!(
        headers["host"],
        format!("{HOST}:{}", gw.port),
        "the upstream's Host is the :authority: {echo}"
    );
    assert_eq!(headers["x-probe"], "h3", "{echo}");
    assert_eq!(headers["x-forwarded-proto"], "https", "{echo}");
    assert_eq!(headers["user-agent"], "aioquic-h3client", "{echo}");
    assert_eq!(v["body_bytes"].as_u64(), Some(body.len() as u64), "{v}");
}

#[tokio::test]
async fn aioquic_post_of_256_kib_over_http3_arrives_byte_for_byte() {
    let gw = h3_gateway("").await;
    let size = POST.to_string();
    let v = gw.h3("/fake/sink", &["--data-size", &size, "--show-body"]).await;
    assert_eq!(v["status"], 200, "{v}");
    let want = sha256_hex(&client_body(POST));
    assert_eq!(v["sent_bytes"].as_u64(), Some(POST as u64), "{v}");
    assert_eq!(v["sent_sha256"], want, "the client sent other bytes than this test expects: {v}");
    let body = v["body"].as_str().unwrap();
    let seen: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(seen["method"], "POST", "{seen}");
    assert_eq!(seen["bytes"].as_u64(), Some(POST as u64), "the upstream got another length: {seen}");
    assert_eq!(seen["sha256"], want, "the upstream got other bytes: {seen}");
}

#[tokio::test]
async fn aioquic_reads_a_1_mib_response_over_http3_whole() {
    let gw = h3_gateway("").await;
    let v = gw.h3("/fake/big", &[]).await;
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["body_bytes"].as_u64(), Some(BIG as u64), "{v}");
    assert_eq!(v["body_sha256"], sha256_hex(&big_body()), "{v}");
    assert_eq!(header(&v, "content-type"), Some("application/octet-stream"), "{v}");
}

/// The TCP side of the listener advertises HTTP/3 (`alt-svc`), and the access log tells the
/// protocols apart.
#[tokio::test]
async fn tcp_responses_advertise_h3_and_the_access_log_says_http3() {
    let gw = h3_gateway("[access_log]\nenabled = true\npath = \"access.log\"\n").await;
    let want = format!("h3=\":{}\"; ma=86400", gw.port);
    for (flag, id) in [("--http1.1", "tcp-h1"), ("--http2", "tcp-h2")] {
        let resolve = format!("{HOST}:{}:127.0.0.1", gw.port);
        let (ok, head, stderr) = run(Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-D", "-", flag, "--resolve", &resolve, "-H"])
            .arg(format!("x-request-id: {id}"))
            .arg("--cacert")
            .arg(&gw.certs.ca_file)
            .arg(gw.url("/echo/tcp")))
        .await;
        assert!(ok, "curl {flag}: {stderr}");
        let alt_svc: Vec<&str> = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case("alt-svc"))
            .map(|(_, v)| v.trim())
            .collect();
        assert_eq!(alt_svc, [want.as_str()], "curl {flag}: {head}");
    }
    let v = gw.h3("/echo/quic", &["-H", "x-request-id: quic"]).await;
    assert_eq!(v["status"], 200, "{v}");

    let log = gw.g.dir.path().join("access.log");
    let lines = access_log_lines(&log, "three access log lines", |n| n >= 3).await;
    let protocol = |id: &str| {
        let l = lines.iter().find(|l| l["request_id"] == id).unwrap_or_else(|| panic!("{id}: {lines:?}"));
        l["protocol"].as_str().unwrap_or_else(|| panic!("no protocol: {l}")).to_owned()
    };
    assert_eq!(protocol("tcp-h1"), "HTTP/1.1");
    assert_eq!(protocol("tcp-h2"), "HTTP/2");
    assert_eq!(protocol("quic"), "HTTP/3");
}

#[tokio::test]
async fn empty_data_frames_inside_a_body_are_skipped_with_or_without_content_length() {
    // RFC 9114 allows DATA frames of length 0 anywhere; unpatched h3 took one for the end of
    // the body (vendor/h3/SWITCHYARD-PATCHES.md).
    let gw = h3_gateway("").await;
    let want = sha256_hex(&client_body(300));
    for extra in [&[][..], &["--no-content-length"][..]] {
        let mut args = vec!["--data-size", "300", "--frames", "0,100,0,100,0", "--show-body"];
        args.extend_from_slice(extra);
        let v = gw.h3("/fake/sink", &args).await;
        assert_eq!(v["status"], 200, "{extra:?}: {v}");
        let seen: serde_json::Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
        assert_eq!(seen["bytes"], 300, "{extra:?}: {seen}");
        assert_eq!(seen["sha256"], want, "{extra:?}: {seen}");
    }
    // And the gateway goes on serving.
    let v = gw.h3("/echo/after", &[]).await;
    assert_eq!(v["status"], 200, "{v}");
}
