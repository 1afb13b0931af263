//! TLS end to end: SNI choice, ALPN, protocol versions, certificate hot reload, broken pairs,
//! mTLS and x-forwarded-client-cert, TLS to upstreams, the development certificate, handshake
//! hygiene and `switchyard check`. Certificates are made here with rcgen (never fixtures that
//! expire); the clients are rustls (with hyper on top), and the system's curl and openssl.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Command;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// === certificates ===

/// A test CA that issues server and client certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

/// An issued certificate and its key.
#[derive(Clone)]
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), der: cert.der().clone(), issuer: Issuer::new(p, key) }
    }

    fn issue(&self, cn: &str, sans: &[&str], client: bool, expired: bool) -> Leaf {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name.push(DnType::OrganizationName, "Switchyard Test");
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }

    fn server(&self, cn: &str, sans: &[&str]) -> Leaf {
        self.issue(cn, sans, false, false)
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut r = rustls::RootCertStore::empty();
        r.add(self.der.clone()).unwrap();
        r
    }
}

impl Leaf {
    /// Write `NAME.crt` + `NAME.key` atomically (temp file + rename, key first).
    fn write(&self, dir: &Path, name: &str) {
        write_atomic(&dir.join(format!("{name}.key")), &self.key_pem);
        write_atomic(&dir.join(format!("{name}.crt")), &self.cert_pem);
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.der.clone())]
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }
}

// === clients ===

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate: for the tests that look at which one was served.
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &provider().signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &provider().signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap()
}

/// A client that trusts `ca`, offering `alpn`.
fn client_config(ca: &Ca, alpn: &[&[u8]], client_cert: Option<&Leaf>) -> Arc<ClientConfig> {
    let b = builder().with_root_certificates(ca.roots());
    let mut cfg = match client_cert {
        Some(c) => b.with_client_auth_cert(c.chain(), c.key()).unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A client that accepts any certificate (to see which one is served).
fn any_cert_config() -> Arc<ClientConfig> {
    let mut cfg =
        builder().dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny)).with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one TLS request saw.
#[derive(Debug)]
struct Tls {
    got: Got,
    alpn: Option<Vec<u8>>,
    leaf: Vec<u8>,
}

fn server_name(sni: &str) -> ServerName<'static> {
    ServerName::try_from(sni.to_owned()).unwrap()
}

/// Handshake only; the served leaf certificate.
async fn served_leaf(addr: SocketAddr, sni: ServerName<'static>) -> Result<Vec<u8>, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(any_cert_config()).connect(sni, tcp),
    )
    .await??;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

/// A TLS connection carrying HTTP/1.1 or HTTP/2 as ALPN chose.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<TestBody>),
    H2(hyper::client::conn::http2::SendRequest<TestBody>),
}

struct Conn {
    sender: Sender,
    alpn: Option<Vec<u8>>,
    leaf: Vec<u8>,
    host: String,
}

async fn connect(addr: SocketAddr, sni: &str, cfg: Arc<ClientConfig>) -> Result<Conn, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(cfg).connect(server_name(sni), tcp),
    )
    .await??;
    let (_, c) = tls.get_ref();
    let alpn = c.alpn_protocol().map(<[u8]>::to_vec);
    let leaf = c.peer_certificates().map(|p| p[0].to_vec()).unwrap_or_default();
    let io = TokioIo::new(tls);
    let sender = if alpn.as_deref() == Some(b"h2") {
        let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Sender::H2(s)
    } else {
        let (s, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        Sender::H1(s)
    };
    Ok(Conn { sender, alpn, leaf, host: sni.to_owned() })
}

impl Conn {
    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Got, BoxError> {
        let mut b = match &self.sender {
            Sender::H1(_) => Request::get(path).header("host", &self.host),
            Sender::H2(_) => Request::get(format!("https://{}{path}", self.host)),
        };
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(full("")).unwrap();
        let res = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let (parts, body) = res.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Got { status: parts.status, headers: parts.headers, body })
    }
}

async fn tls_get(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Tls, BoxError> {
    let mut c = connect(addr, sni, cfg).await?;
    let got = tokio::time::timeout(Duration::from_secs(10), c.get(path, headers)).await??;
    Ok(Tls { got, alpn: c.alpn, leaf: c.leaf })
}

/// Run a command without blocking the runtime (the gateway serves on this test's runtime).
async fn run(cmd: &mut Command) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .expect("command timed out")
    .expect("command runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

async fn openssl(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    run(Command::new("openssl").args(["s_client", "-connect", &addr.to_string()]).args(args)).await
}

// === gateways ===

fn echo_routes(echo: &FakeUpstream) -> String {
    format!("[[upstream]]\nname = \"echo\"\nendpoints = [\"{}\"]\n\n[[route]]\nname = \"all\"\nupstream = \"echo\"\n", echo.addr)
}

/// A gateway with an `https` listener on `certs` (plus `tls_extra` in `[listener.tls]` and
/// `extra` after it).
async fn tls_gateway(certs: &Path, tls_extra: &str, extra: &str, routes: &str) -> (TestGateway, SocketAddr) {
    let cfg = format!(
        "[[listener]]\nname = \"https\"\nlisten = \"127.0.0.1:0\"\n[listener.tls]\ncerts_dir = \"{}\"\n{tls_extra}\n\n{extra}\n",
        certs.display()
    );
    let g = gateway_with(&cfg, &[("routes.toml", routes)]).await;
    let addr = g.gateway().listener_addr("https").unwrap();
    (g, addr)
}

fn certs_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("certs");
    std::fs::create_dir(&p).unwrap();
    (d, p)
}

async fn metrics(g: &TestGateway) -> String {
    get(&g.admin_url("/metrics")).await.text()
}

/// How long a reload may take to show (the watch debounces for 200 ms).
const WITHIN: Duration = Duration::from_secs(10);

// === tests ===

#[tokio::test]
async fn sni_picks_exact_then_wildcard_then_default_then_the_single_certificate() {
    let ca = Ca::new("sni ca");
    let (_d, dir) = certs_dir();
    let exact = ca.server("a", &["a.example.com"]);
    let wild = ca.server("wild", &["*.example.com"]);
    let other = ca.server("other", &["other.test"]);
    exact.write(&dir, "a");
    wild.write(&dir, "wild");
    other.write(&dir, "other");
    let echo = echo("e").await;
    let (g, addr) = tls_gateway(&dir, "default_cert = \"other\"", "", &echo_routes(&echo)).await;

    let leaf = |sni: &str| served_leaf(addr, server_name(sni));
    assert_eq!(leaf("a.example.com").await.unwrap(), exact.der, "exact name");
    assert_eq!(leaf("A.Example.COM").await.unwrap(), exact.der, "names are case-insensitive");
    assert_eq!(leaf("b.example.com").await.unwrap(), wild.der, "wildcard covers one label");
    assert_eq!(leaf("x.b.example.com").await.unwrap(), other.der, "wildcard covers exactly one label");
    assert_eq!(leaf("example.com").await.unwrap(), other.der, "wildcard does not cover the apex");
    assert_eq!(leaf("other.test").await.unwrap(), other.der);
    assert_eq!(leaf("nothing.invalid").await.unwrap(), other.der, "default_cert");
    // An IP address sends no SNI: the default.
    assert_eq!(
        served_leaf(addr, ServerName::from(std::net::IpAddr::from([127, 0, 0, 1]))).await.unwrap(),
        other.der
    );
    // A verifying client gets a request through with the exact certificate.
    let r =
        tls_get(addr, "a.example.com", client_config(&ca, &[b"http/1.1"], None), "/x", &[]).await.unwrap();
    assert_eq!(r.got.status, StatusCode::OK);
    assert_eq!(r.leaf, exact.der);
    assert_eq!(r.got.json()["headers"]["x-forwarded-proto"], "https");
    let m = metrics(&g).await;
    assert!(m.contains("switchyard_tls_handshakes_total{listener=\"https\",result=\"success\"}"), "{m}");
    for stem in ["a", "wild", "other"] {
        assert!(
            m.contains(&format!("switchyard_tls_cert_expiry_timestamp_seconds{{cert=\"{stem}\"}}")),
            "{m}"
        );
    }
    drop(g);

    // Without default_cert and with three certificates, an unknown name fails: unrecognized_name.
    let (g, addr) = tls_gateway(&dir, "", "", &echo_routes(&echo)).await;
    let e = served_leaf(addr, server_name("nothing.invalid")).await.unwrap_err();
    assert!(format!("{e:?}").contains("UnrecognisedName"), "{e:?}");
    let (ok, out) = openssl(addr, &["-servername", "nothing.invalid"]).await;
    assert!(!ok && out.contains("unrecognized name"), "{out}");
    assert_eq!(served_leaf(addr, server_name("b.example.com")).await.unwrap(), wild.der);
    let m = metrics(&g).await;
    assert!(m.contains("switchyard_tls_handshakes_total{listener=\"https\",result=\"failure\"}"), "{m}");
    drop(g);

    // A single certificate is served for any name.
    let (_d2, single) = certs_dir();
    exact.write(&single, "only");
    let (_g, addr) = tls_gateway(&single, "", "", &echo_routes(&echo)).await;
    assert_eq!(leaf_of(addr, "unrelated.test").await, exact.der);
}

async fn leaf_of(addr: SocketAddr, sni: &str) -> Vec<u8> {
    served_leaf(addr, server_name(sni)).await.unwrap()
}

#[tokio::test]
async fn alpn_h2_and_http11_each_carry_a_request() {
    let ca = Ca::new("alpn ca");
    let (d, dir) = certs_dir();
    ca.server("site", &["site.test"]).write(&dir, "site");
    let echo = echo("e").await;
    let (_g, addr) = tls_gateway(&dir, "", "", &echo_routes(&echo)).await;

    let h2 = tls_get(addr, "site.test", client_config(&ca, &[b"h2", b"http/1.1"], None), "/two", &[])
        .await
        .unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(h2.got.status, StatusCode::OK);
    assert_eq!(h2.got.json()["path"], "/two");
    assert_eq!(h2.got.json()["headers"]["x-forwarded-proto"], "https");

    let h1 = tls_get(addr, "site.test", client_config(&ca, &[b"http/1.1"], None), "/one", &[]).await.unwrap();
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(h1.got.status, StatusCode::OK);
    assert_eq!(h1.got.json()["path"], "/one");

    // And with curl, which negotiates by ALPN too.
    let ca_file = d.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let resolve = format!("site.test:{}:127.0.0.1", addr.port());
    let url = format!("https://site.test:{}/curl", addr.port());
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (ok, out) = run(Command::new("curl").args([
            "-sS",
            flag,
            "--cacert",
            ca_file.to_str().unwrap(),
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            &url,
        ]))
        .await;
        assert!(ok, "{out}");
        assert_eq!(out.trim(), format!("{want} 200"));
    }
}

#[tokio::test]
async fn only_tls_12_and_13_are_accepted() {
    let ca = Ca::new("versions ca");
    let (_d, dir) = certs_dir();
    ca.server("site", &["site.test"]).write(&dir, "site");
    let echo = echo("e").await;
    let (_g, addr) = tls_gateway(&dir, "", "", &echo_routes(&echo)).await;

    // SECLEVEL=0 lets OpenSSL 3 offer TLS 1.1 at all; the gateway must refuse it.
    let (ok, out) =
        openssl(addr, &["-servername", "site.test", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]).await;
    assert!(!ok, "TLS 1.1 was accepted:\n{out}");
    // The server answers with a fatal alert and no cipher is agreed.
    assert!(out.contains("alert") && out.contains("Cipher is (NONE)"), "{out}");
    for (flag, want) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, out) = openssl(addr, &["-servername", "site.test", flag, "-brief"]).await;
        assert!(ok && out.contains(want), "{flag}:\n{out}");
    }
}

#[tokio::test]
async fn a_replaced_certificate_is_served_within_two_seconds_and_open_connections_stay() {
    let ca = Ca::new("reload ca");
    let (_d, dir) = certs_dir();
    let v1 = ca.server("v1", &["site.test", "other.test"]);
    v1.write(&dir, "site");
    let echo = echo("e").await;
    let (g, addr) = tls_gateway(&dir, "", "", &echo_routes(&echo)).await;
    assert_eq!(leaf_of(addr, "site.test").await, v1.der);
    let mut open = connect(addr, "site.test", client_config(&ca, &[b"http/1.1"], None)).await.unwrap();
    assert_eq!(open.get("/before", &[]).await.unwrap().status, StatusCode::OK);

    let v2 = ca.server("v2", &["site.test"]);
    v2.write(&dir, "site");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if leaf_of(addr, "site.test").await == v2.der {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was not served within 2 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection made before the swap keeps its session and keeps working.
    assert_eq!(open.leaf, v1.der);
    assert_eq!(open.get("/after", &[]).await.unwrap().status, StatusCode::OK);

    // A new pair added to the folder is picked up too; SIGHUP's path (Gateway::reload) as well.
    let added = ca.server("added", &["added.test"]);
    added.write(&dir, "added");
    g.gateway().reload().await.unwrap();
    assert_eq!(leaf_of(addr, "added.test").await, added.der);
}

#[tokio::test]
async fn a_broken_pair_is_skipped_while_the_others_serve() {
    let ca = Ca::new("broken ca");
    let (_d, dir) = certs_dir();
    let good = ca.server("good", &["good.test"]);
    good.write(&dir, "good");
    let bad = ca.server("bad", &["bad.test"]);
    std::fs::write(dir.join("bad.crt"), &bad.cert_pem).unwrap();
    std::fs::write(
        dir.join("bad.key"),
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    // A key that belongs to another certificate.
    let other = ca.server("other", &["mismatch.test"]);
    std::fs::write(dir.join("mismatch.crt"), &ca.server("m", &["mismatch.test"]).cert_pem).unwrap();
    std::fs::write(dir.join("mismatch.key"), &other.key_pem).unwrap();
    // Expired.
    ca.issue("old", &["old.test"], false, true).write(&dir, "old");
    // One .pem with both.
    let both = ca.server("both", &["both.test"]);
    std::fs::write(dir.join("both.pem"), format!("{}{}", both.cert_pem, both.key_pem)).unwrap();

    let echo = echo("e").await;
    let (g, addr) = tls_gateway(&dir, "", "", &echo_routes(&echo)).await;
    let r = tls_get(addr, "good.test", client_config(&ca, &[b"http/1.1"], None), "/", &[]).await.unwrap();
    assert_eq!(r.got.status, StatusCode::OK);
    assert_eq!(leaf_of(addr, "both.test").await, both.der);
    // bad.test has no certificate now: two are loaded and no default, so unrecognized_name.
    assert!(served_leaf(addr, server_name("bad.test")).await.is_err());

    let cfg = get(&g.admin_url("/config")).await.json();
    let errs = cfg["tls_errors"].as_array().unwrap();
    let find = |file: &str| {
        errs.iter()
            .find(|e| e["file"].as_str().unwrap().ends_with(file))
            .unwrap_or_else(|| panic!("no error for {file}: {cfg}"))["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(find("bad.key").contains("bad PEM"));
    assert!(find("mismatch.key").contains("does not match"));
    assert!(find("old.crt").contains("expired"));
    assert_eq!(errs.len(), 3, "{cfg}");

    // Fixing the key brings the pair in (POST /reload reloads certificates too).
    write_atomic(&dir.join("bad.key"), &bad.key_pem);
    let res = send(Request::post(g.admin_url("/reload")).body(full("")).unwrap()).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(leaf_of(addr, "bad.test").await, bad.der);
    let cfg = get(&g.admin_url("/config")).await.json();
    assert_eq!(cfg["tls_errors"].as_array().unwrap().len(), 2, "{cfg}");
}

/// `GET /config`'s `tls_errors`.
async fn tls_errors(g: &TestGateway) -> Vec<serde_json::Value> {
    get(&g.admin_url("/config")).await.json()["tls_errors"].as_array().cloned().unwrap_or_default()
}

/// Whether some entry of `tls_errors` is about `file` and says `says`.
async fn tls_error_says(g: &TestGateway, file: &Path, says: &str) -> bool {
    tls_errors(g).await.iter().any(|e| {
        e["file"].as_str() == Some(file.to_str().unwrap())
            && e["message"].as_str().is_some_and(|m| m.contains(says))
    })
}

#[tokio::test]
async fn a_reload_that_finds_no_certificate_keeps_the_serving_set() {
    let ca = Ca::new("empty ca");
    let (_d, dir) = certs_dir();
    let site = ca.server("site", &["site.test"]);
    site.write(&dir, "site");
    let echo = echo("e").await;
    let (g, addr) = tls_gateway(&dir, "", "", &echo_routes(&echo)).await;
    assert_eq!(leaf_of(addr, "site.test").await, site.der);

    // Every certificate removed: the watch reloads, finds nothing usable, keeps the set.
    std::fs::remove_file(dir.join("site.crt")).unwrap();
    std::fs::remove_file(dir.join("site.key")).unwrap();
    eventually("tls_errors says the folder holds no certificate", WITHIN, || {
        tls_error_says(&g, &dir, "no usable certificate")
    })
    .await;
    assert_eq!(leaf_of(addr, "site.test").await, site.der, "the old certificate keeps serving");
    let r = tls_get(addr, "site.test", client_config(&ca, &[b"http/1.1"], None), "/", &[]).await.unwrap();
    assert_eq!(r.got.status, StatusCode::OK);
    // POST /reload takes the same path.
    let res = send(Request::post(g.admin_url("/reload")).body(full("")).unwrap()).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(tls_error_says(&g, &dir, "no usable certificate").await, "{:?}", tls_errors(&g).await);
    assert_eq!(leaf_of(addr, "site.test").await, site.der);
    let m = metrics(&g).await;
    assert!(m.contains("switchyard_tls_cert_expiry_timestamp_seconds{cert=\"site\"}"), "{m}");

    // A usable certificate back clears the error.
    site.write(&dir, "site");
    eventually("tls_errors clears", WITHIN, || async { tls_errors(&g).await.is_empty() }).await;
    assert_eq!(leaf_of(addr, "site.test").await, site.der);
}

#[tokio::test]
async fn a_deleted_certs_dir_keeps_the_serving_set_and_is_watched_again_once_back() {
    let ca = Ca::new("gone ca");
    let (_d, dir) = certs_dir();
    let v1 = ca.server("v1", &["site.test"]);
    v1.write(&dir, "site");
    let echo = echo("e").await;
    let (g, addr) = tls_gateway(&dir, "", "", &echo_routes(&echo)).await;
    assert_eq!(leaf_of(addr, "site.test").await, v1.der);

    // The folder itself deleted: handshakes go on with the set that was serving.
    std::fs::remove_dir_all(&dir).unwrap();
    eventually("tls_errors says the folder cannot be read", WITHIN, || {
        tls_error_says(&g, &dir, "cannot read the certificates folder")
    })
    .await;
    assert_eq!(leaf_of(addr, "site.test").await, v1.der, "the old certificate keeps serving");
    let r = tls_get(addr, "site.test", client_config(&ca, &[b"h2"], None), "/", &[]).await.unwrap();
    assert_eq!(r.got.status, StatusCode::OK);

    // Created again with a new certificate: watched again and served, without SIGHUP.
    std::fs::create_dir(&dir).unwrap();
    let v2 = ca.server("v2", &["site.test"]);
    v2.write(&dir, "site");
    eventually("the re-created folder's certificate is served", WITHIN, || async {
        leaf_of(addr, "site.test").await == v2.der
    })
    .await;
    eventually("tls_errors clears", WITHIN, || async { tls_errors(&g).await.is_empty() }).await;
    // And changes inside the new folder are seen.
    let v3 = ca.server("v3", &["site.test"]);
    v3.write(&dir, "site");
    eventually("a change in the re-created folder is served", WITHIN, || async {
        leaf_of(addr, "site.test").await == v3.der
    })
    .await;
}

/// Whether a new connection with `cfg` resumes a session (`cfg` must have made a request
/// before, to hold a TLS 1.3 ticket). A refused handshake is not a resumption.
async fn resumes(addr: SocketAddr, cfg: Arc<ClientConfig>) -> bool {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(cfg).connect(server_name("site.test"), tcp),
    )
    .await
    .unwrap();
    tls.is_ok_and(|t| t.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
}

#[tokio::test]
async fn client_ca_is_reloaded_with_the_certificates() {
    let server_ca = Ca::new("server ca");
    let (old_ca, new_ca) = (Ca::new("old client ca"), Ca::new("new client ca"));
    let (d, dir) = certs_dir();
    server_ca.server("site", &["site.test"]).write(&dir, "site");
    // The bundle lives outside certs_dir: its own folder is watched.
    let ca_dir = d.path().join("trust");
    std::fs::create_dir(&ca_dir).unwrap();
    let ca_file = ca_dir.join("clients.pem");
    std::fs::write(&ca_file, &old_ca.pem).unwrap();
    let echo = echo("e").await;
    let (g, addr) =
        tls_gateway(&dir, &format!("client_ca = \"{}\"", ca_file.display()), "", &echo_routes(&echo)).await;
    let (old, new) = (old_ca.issue("old", &[], true, false), new_ca.issue("new", &[], true, false));
    let with = |leaf: &Leaf| {
        let cfg = client_config(&server_ca, &[b"http/1.1"], Some(leaf));
        async move {
            tls_get(addr, "site.test", cfg, "/", &[]).await.is_ok_and(|r| r.got.status == StatusCode::OK)
        }
    };
    assert!(with(&old).await, "a client of the configured CA is accepted");
    assert!(!with(&new).await, "a client of another CA is refused");
    // A reload that finds the same bundle keeps sessions resumable (rustls sends two tickets).
    let old_session = client_config(&server_ca, &[b"http/1.1"], Some(&old));
    tls_get(addr, "site.test", Arc::clone(&old_session), "/", &[]).await.unwrap();
    g.gateway().reload().await.unwrap();
    assert!(resumes(addr, Arc::clone(&old_session)).await, "an unchanged bundle keeps sessions");

    // Rotated on disk: the next handshakes use the new bundle, without SIGHUP.
    write_atomic(&ca_file, &new_ca.pem);
    eventually("a client of the new CA is accepted", WITHIN, || with(&new)).await;
    assert!(!with(&old).await, "a client of the old CA is refused after the rotation");
    // Nor can it come back on a session made under the old bundle.
    assert!(!resumes(addr, Arc::clone(&old_session)).await, "a session of the old CA was resumed");
    assert!(tls_errors(&g).await.is_empty(), "{:?}", tls_errors(&g).await);

    // An invalid bundle keeps the serving verifier and says why.
    write_atomic(&ca_file, "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n");
    eventually("tls_errors names the bad bundle", WITHIN, || tls_error_says(&g, &ca_file, "bad PEM")).await;
    assert!(with(&new).await, "the serving client CA is kept");
    assert!(!with(&old).await);
    // So does a missing one (SIGHUP's path this time).
    std::fs::remove_file(&ca_file).unwrap();
    g.gateway().reload().await.unwrap();
    assert!(tls_error_says(&g, &ca_file, "cannot read").await, "{:?}", tls_errors(&g).await);
    assert!(with(&new).await, "the serving client CA is kept");

    // A bundle holding both CAs accepts both (POST /reload's path); the error clears.
    std::fs::write(&ca_file, format!("{}{}", old_ca.pem, new_ca.pem)).unwrap();
    let res = send(Request::post(g.admin_url("/reload")).body(full("")).unwrap()).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(tls_errors(&g).await.is_empty(), "{:?}", tls_errors(&g).await);
    assert!(with(&old).await && with(&new).await);
}

#[tokio::test]
async fn pkcs8_pkcs1_and_sec1_keys_load() {
    let ca = Ca::new("formats ca");
    let (d, dir) = certs_dir();
    // SEC1 ("EC PRIVATE KEY") from an rcgen P-256 key.
    let ec = ca.server("ec", &["ec.test"]);
    let pk8 = d.path().join("ec.pk8");
    std::fs::write(&pk8, &ec.key_pem).unwrap();
    let (ok, sec1) = run(Command::new("openssl").args(["ec", "-in", pk8.to_str().unwrap()])).await;
    assert!(ok && sec1.contains("BEGIN EC PRIVATE KEY"), "{sec1}");
    let sec1 =
        sec1.lines().skip_while(|l| !l.starts_with("-----BEGIN")).collect::<Vec<_>>().join("\n") + "\n";
    std::fs::write(dir.join("ec.crt"), &ec.cert_pem).unwrap();
    std::fs::write(dir.join("ec.key"), sec1).unwrap();
    // PKCS#1 ("RSA PRIVATE KEY"): an RSA key from openssl, certified by the CA with rcgen.
    let rsa8 = d.path().join("rsa.pk8");
    let (ok, out) = run(Command::new("openssl").args([
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        rsa8.to_str().unwrap(),
    ]))
    .await;
    assert!(ok, "{out}");
    let rsa_key = KeyPair::from_pem(&std::fs::read_to_string(&rsa8).unwrap()).unwrap();
    let mut p = CertificateParams::new(vec!["rsa.test".to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "rsa");
    let rsa_cert = p.signed_by(&rsa_key, &ca.issuer).unwrap();
    let (ok, pkcs1) =
        run(Command::new("openssl").args(["rsa", "-traditional", "-in", rsa8.to_str().unwrap()])).await;
    assert!(ok && pkcs1.contains("BEGIN RSA PRIVATE KEY"), "{pkcs1}");
    let pkcs1 =
        pkcs1.lines().skip_while(|l| !l.starts_with("-----BEGIN")).collect::<Vec<_>>().join("\n") + "\n";
    std::fs::write(dir.join("rsa.crt"), rsa_cert.pem()).unwrap();
    std::fs::write(dir.join("rsa.key"), pkcs1).unwrap();
    // PKCS#8.
    let p8 = ca.server("p8", &["p8.test"]);
    p8.write(&dir, "p8");

    let echo = echo("e").await;
    let (g, addr) = tls_gateway(&dir, "", "", &echo_routes(&echo)).await;
    assert_eq!(leaf_of(addr, "ec.test").await, ec.der);
    assert_eq!(leaf_of(addr, "rsa.test").await, rsa_cert.der().to_vec());
    assert_eq!(leaf_of(addr, "p8.test").await, p8.der);
    let cfg = get(&g.admin_url("/config")).await.json();
    assert_eq!(cfg["tls_errors"].as_array().unwrap().len(), 0, "{cfg}");
}

#[tokio::test]
async fn mtls_requires_a_verified_client_certificate_and_forwards_xfcc() {
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let rogue_ca = Ca::new("rogue ca");
    let (d, dir) = certs_dir();
    server_ca.server("site", &["site.test"]).write(&dir, "site");
    // The client CA bundle lives in certs_dir: it must not be taken for a server certificate.
    let ca_file = dir.join("clients.pem");
    std::fs::write(&ca_file, &client_ca.pem).unwrap();
    let echo = echo("e").await;
    let (g, addr) =
        tls_gateway(&dir, &format!("client_ca = \"{}\"", ca_file.display()), "", &echo_routes(&echo)).await;

    let alpn: &[&[u8]] = &[b"http/1.1"];
    // No client certificate.
    let r = tls_get(addr, "site.test", client_config(&server_ca, alpn, None), "/", &[]).await;
    assert!(r.is_err(), "a request without a client certificate got through: {r:?}");
    // A certificate from another CA.
    let rogue = rogue_ca.issue("rogue", &[], true, false);
    let r = tls_get(addr, "site.test", client_config(&server_ca, alpn, Some(&rogue)), "/", &[]).await;
    assert!(r.is_err(), "a rogue client certificate got through: {r:?}");
    // A good one; a forged XFCC is replaced by the real one.
    let good = client_ca.issue("client-1", &[], true, false);
    for alpn in [&[&b"http/1.1"[..]][..], &[&b"h2"[..]][..]] {
        let r = tls_get(
            addr,
            "site.test",
            client_config(&server_ca, alpn, Some(&good)),
            "/who",
            &[("x-forwarded-client-cert", "Hash=forged;Subject=\"CN=admin\"")],
        )
        .await
        .unwrap();
        assert_eq!(r.got.status, StatusCode::OK);
        let hash: String = ring::digest::digest(&ring::digest::SHA256, &good.der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            r.got.json()["headers"]["x-forwarded-client-cert"],
            format!("Hash={hash};Subject=\"O=Switchyard Test,CN=client-1\""),
        );
    }
    // A name listed in `Connection` cannot remove the XFCC the gateway set (hop-by-hop headers
    // go on arrival, before the gateway adds its own).
    let r = tls_get(
        addr,
        "site.test",
        client_config(&server_ca, &[b"http/1.1"], Some(&good)),
        "/conn",
        &[("connection", "x-forwarded-client-cert, x-forwarded-for")],
    )
    .await
    .unwrap();
    let h = &r.got.json()["headers"];
    assert!(h["x-forwarded-client-cert"].as_str().unwrap().starts_with("Hash="), "{h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");

    // And curl with the client certificate.
    let (cf, kf, sf) = (d.path().join("c.crt"), d.path().join("c.key"), d.path().join("s.pem"));
    std::fs::write(&cf, &good.cert_pem).unwrap();
    std::fs::write(&kf, &good.key_pem).unwrap();
    std::fs::write(&sf, &server_ca.pem).unwrap();
    let (ok, out) = run(Command::new("curl").args([
        "-sS",
        "--cacert",
        sf.to_str().unwrap(),
        "--cert",
        cf.to_str().unwrap(),
        "--key",
        kf.to_str().unwrap(),
        "--resolve",
        &format!("site.test:{}:127.0.0.1", addr.port()),
        &format!("https://site.test:{}/curl", addr.port()),
    ]))
    .await;
    assert!(ok && out.contains("Hash="), "{out}");

    // On a plain listener a client-sent XFCC never reaches the upstream.
    let res = send(
        Request::get(g.url("/plain"))
            .header("x-forwarded-client-cert", "Hash=forged")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert!(res.json()["headers"].get("x-forwarded-client-cert").is_none(), "{}", res.text());
}

/// An upstream serving HTTPS with `leaf`, answering with its HTTP version.
async fn tls_upstream(leaf: &Leaf) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.chain(), leaf.key())
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let body = format!("tls upstream {:?} {}", req.version(), req.uri().path());
                    Ok::<_, std::convert::Infallible>(Response::new(full(body)))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn tls_to_upstreams_verifies_with_the_configured_ca() {
    let ca = Ca::new("upstream ca");
    let wrong = Ca::new("wrong ca");
    let leaf = ca.server("upstream", &["upstream.internal"]);
    let (up, _task) = tls_upstream(&leaf).await;
    let dir = tempfile::tempdir().unwrap();
    let (good_ca, wrong_ca) = (dir.path().join("ca.pem"), dir.path().join("wrong.pem"));
    std::fs::write(&good_ca, &ca.pem).unwrap();
    std::fs::write(&wrong_ca, &wrong.pem).unwrap();
    let routes = format!(
        r#"
[[upstream]]
name = "good"
endpoints = ["{up}"]
[upstream.tls]
sni = "upstream.internal"
ca = "{good}"

[[upstream]]
name = "good-h2"
endpoints = ["{up}"]
protocol = "h2"
[upstream.tls]
sni = "upstream.internal"
ca = "{good}"

[[upstream]]
name = "wrong"
endpoints = ["{up}"]
[upstream.tls]
sni = "upstream.internal"
ca = "{wrong}"

[[upstream]]
name = "insecure"
endpoints = ["{up}"]
[upstream.tls]
insecure_skip_verify = true

[[route]]
name = "good"
path_prefix = "/good"
upstream = "good"
[[route]]
name = "good-h2"
path_prefix = "/h2"
upstream = "good-h2"
[[route]]
name = "wrong"
path_prefix = "/wrong"
upstream = "wrong"
[[route]]
name = "insecure"
path_prefix = "/insecure"
upstream = "insecure"
"#,
        good = good_ca.display(),
        wrong = wrong_ca.display(),
    );
    let g = gateway(&routes).await;
    let r = get(&g.url("/good/x")).await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "tls upstream HTTP/1.1 /good/x".to_owned()));
    let r = get(&g.url("/h2")).await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "tls upstream HTTP/2.0 /h2".to_owned()));
    let r = get(&g.url("/insecure")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = get(&g.url("/wrong")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.error(), Some("connect_failed"));
}

#[tokio::test]
async fn a_development_certificate_is_generated_into_an_empty_folder() {
    let (_d, dir) = certs_dir();
    let echo = echo("e").await;
    let (_g, addr) = tls_gateway(&dir, "", "", &echo_routes(&echo)).await;
    let key = dir.join("dev.key");
    assert!(dir.join("dev.crt").is_file() && key.is_file());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    // curl -k https://localhost:PORT/ works, as on a fresh clone.
    let (ok, out) = run(Command::new("curl").args([
        "-sSk",
        "--resolve",
        &format!("localhost:{}:127.0.0.1", addr.port()),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://localhost:{}/", addr.port()),
    ]))
    .await;
    assert!(ok && out.trim() == "200", "{out}");
    // And it is for localhost and 127.0.0.1: curl verifies it when told to trust it.
    for host in ["localhost", "127.0.0.1"] {
        let (ok, out) = run(Command::new("curl").args([
            "-sS",
            "--cacert",
            dir.join("dev.crt").to_str().unwrap(),
            "--resolve",
            &format!("localhost:{}:127.0.0.1", addr.port()),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://{host}:{}/", addr.port()),
        ]))
        .await;
        assert!(ok && out.trim() == "200", "{host}: {out}");
    }
}

#[tokio::test]
async fn plain_http_garbage_and_silence_on_the_tls_port_close_only_that_connection() {
    let ca = Ca::new("hygiene ca");
    let (_d, dir) = certs_dir();
    ca.server("site", &["site.test"]).write(&dir, "site");
    let echo = echo("e").await;
    let (g, addr) =
        tls_gateway(&dir, "", "[limits]\nheader_read_timeout = \"500ms\"\n", &echo_routes(&echo)).await;
    let mut open = connect(addr, "site.test", client_config(&ca, &[b"h2"], None)).await.unwrap();
    assert_eq!(open.get("/1", &[]).await.unwrap().status, StatusCode::OK);

    // Plain HTTP: no HTTP answer, the connection is closed.
    let out = raw(addr, b"GET / HTTP/1.1\r\nhost: site.test\r\n\r\n", Duration::from_secs(3)).await;
    assert!(!out.contains("HTTP/1.1"), "{out:?}");
    // Garbage.
    let start = Instant::now();
    let _ =
        raw(addr, &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0xff, 0xff], Duration::from_secs(3)).await;
    assert!(start.elapsed() < Duration::from_secs(2), "garbage kept the connection open");
    // Silence: closed after header_read_timeout.
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    // A half-sent ClientHello is cut off at the same deadline.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // The established connection was not disturbed.
    assert_eq!(open.get("/2", &[]).await.unwrap().status, StatusCode::OK);
    let m = metrics(&g).await;
    let failures = m
        .lines()
        .find(|l| l.starts_with("switchyard_tls_handshakes_total{listener=\"https\",result=\"failure\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(failures >= 4, "{m}");
}

#[tokio::test]
async fn check_reports_certificate_problems() {
    let ca = Ca::new("check ca");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    ca.server("good", &["good.test"]).write(&certs, "good");
    ca.issue("old", &["old.test"], false, true).write(&certs, "old");
    std::fs::write(certs.join("bad.crt"), "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n")
        .unwrap();
    std::fs::write(certs.join("bad.key"), &ca.server("x", &[]).key_pem).unwrap();
    let other = ca.server("y", &["y.test"]);
    std::fs::write(certs.join("mismatch.crt"), &ca.server("z", &["z.test"]).cert_pem).unwrap();
    std::fs::write(certs.join("mismatch.key"), &other.key_pem).unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        "[gateway]\nroutes_dir = \"routes\"\n\n[[listener]]\nname = \"https\"\nlisten = \"127.0.0.1:0\"\n\
         [listener.tls]\ncerts_dir = \"certs\"\nclient_ca = \"missing-ca.pem\"\n",
    )
    .unwrap();
    let out = Command::new(bin()).args(["check", "--config", cfg.to_str().unwrap()]).output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = |file: &str| {
        err.lines()
            .find(|l| l.contains(&format!("{file}:1:1: ")))
            .unwrap_or_else(|| panic!("no error for {file}:\n{err}"))
            .to_owned()
    };
    assert!(line("certs/bad.crt").contains("bad PEM"));
    assert!(line("certs/mismatch.key").contains("does not match"));
    assert!(line("certs/old.crt").contains("expired"));
    assert!(line("missing-ca.pem").contains("cannot read"));
    assert!(!err.contains("good."), "{err}");

    // A clean folder passes.
    for f in ["old.crt", "old.key", "bad.crt", "bad.key", "mismatch.crt", "mismatch.key"] {
        std::fs::remove_file(certs.join(f)).unwrap();
    }
    std::fs::write(dir.path().join("missing-ca.pem"), &ca.pem).unwrap();
    let out = Command::new(bin()).args(["check", "--config", cfg.to_str().unwrap()]).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
