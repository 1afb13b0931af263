//! The certificate store of one TLS listener: every pair in `certs_dir` (certs/README.md) loaded,
//! checked and indexed by SNI name, held as an immutable [`CertSet`] behind an `ArcSwap`.
//!
//! A reload builds a whole new set and swaps it in; handshakes in progress keep the set they
//! loaded (rustls holds the `Arc<CertifiedKey>`), established sessions are never touched. A
//! pair that fails (bad PEM, key not matching the certificate, expired) is skipped with an
//! error naming the file; the others load. When a pair that was serving breaks on a reload
//! (a half-written file, a bad copy), the last good version of that pair keeps serving —
//! rpxy's certificate reloader does the same — and the error is still reported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;
use crate::metrics::{CertLabel, Metrics};

/// One loaded certificate pair.
#[derive(Debug, Clone)]
pub(crate) struct LoadedCert {
    /// The file stem (`NAME` of `NAME.crt`/`NAME.pem`); the metric label and `default_cert`.
    pub stem: String,
    /// The chain and signing key, as rustls serves them.
    pub key: Arc<CertifiedKey>,
    /// The leaf's DNS SANs, lower-case (`*.example.com` kept as written).
    pub names: Vec<String>,
    /// The leaf's notAfter, Unix seconds.
    pub not_after: i64,
}

/// Every certificate of a folder, indexed for SNI lookup.
#[derive(Debug, Default)]
pub(crate) struct CertSet {
    /// The loaded pairs, in file-name order.
    pub certs: Vec<LoadedCert>,
    /// Exact DNS name → index into `certs` (the first file wins a duplicate name).
    exact: HashMap<String, usize>,
    /// Wildcard parent (`example.com` for `*.example.com`) → index into `certs`.
    wildcard: HashMap<String, usize>,
    /// File stem → index into `certs`.
    stems: HashMap<String, usize>,
    /// The problems of this load, each naming its file (line 1, column 1: a file-level problem).
    pub errors: Vec<ConfigError>,
    /// When this set was loaded.
    pub loaded_at: Option<SystemTime>,
}

impl CertSet {
    fn new(certs: Vec<LoadedCert>, errors: Vec<ConfigError>) -> Self {
        let mut set = CertSet { loaded_at: Some(SystemTime::now()), errors, ..Default::default() };
        for (i, c) in certs.iter().enumerate() {
            set.stems.insert(c.stem.clone(), i);
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(parent) => set.wildcard.entry(parent.to_owned()).or_insert(i),
                    None => set.exact.entry(n.clone()).or_insert(i),
                };
            }
        }
        set.certs = certs;
        set
    }

    /// The certificate for an SNI name: exact, then wildcard (RFC 6125: `*.example.com` covers
    /// exactly one label, so `a.example.com` but neither `a.b.example.com` nor `example.com`),
    /// then `default_cert` (a file stem), then the only certificate if there is one.
    /// `None` means the handshake must fail with `unrecognized_name`.
    pub(crate) fn pick(&self, sni: Option<&str>, default_cert: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let by_name = sni.and_then(|name| {
            let lower;
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                lower = name.to_ascii_lowercase();
                lower.as_str()
            } else {
                name
            };
            let name = name.strip_suffix('.').unwrap_or(name);
            self.exact.get(name).or_else(|| {
                let (label, parent) = name.split_once('.')?;
                if label.is_empty() {
                    return None;
                }
                self.wildcard.get(parent)
            })
        });
        let idx = by_name
            .or_else(|| default_cert.and_then(|d| self.stems.get(d)))
            .copied()
            .or(if self.certs.len() == 1 { Some(0) } else { None })?;
        Some(&self.certs[idx].key)
    }

    /// The pair loaded from the file stem `stem`.
    pub(crate) fn by_stem(&self, stem: &str) -> Option<&LoadedCert> {
        self.stems.get(stem).map(|&i| &self.certs[i])
    }
}

// === impl CertStore ===

/// The live certificate set of one listener's `certs_dir`, reloaded as a whole.
#[derive(Debug)]
pub(crate) struct CertStore {
    dir: PathBuf,
    /// A CA bundle that lives in `certs_dir` (mTLS `client_ca`) is not a server certificate.
    ignore: Option<PathBuf>,
    current: Arc<ArcSwap<CertSet>>,
    metrics: Arc<Metrics>,
    serial: Mutex<()>,
}

impl CertStore {
    /// Load `dir` now. Problems with single pairs are in the set's `errors` (and logged);
    /// an empty set is allowed here (the caller decides whether that is fatal).
    pub(crate) fn open(dir: PathBuf, ignore: Option<PathBuf>, metrics: Arc<Metrics>) -> Self {
        let store = CertStore {
            dir,
            ignore,
            current: Arc::new(ArcSwap::from_pointee(CertSet::default())),
            metrics,
            serial: Mutex::new(()),
        };
        store.reload();
        store
    }

    /// The folder this store loads.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live set, shared with the SNI resolver.
    pub(crate) fn current(&self) -> &Arc<ArcSwap<CertSet>> {
        &self.current
    }

    /// Load the folder again and swap the new set in (blocking file IO). A pair that fails
    /// now but loaded before keeps its previous version. A load that finds no usable
    /// certificate at all (the folder emptied, deleted or unreadable) keeps the whole serving
    /// set: an empty set would fail every handshake. Returns the number of errors.
    pub(crate) fn reload(&self) -> usize {
        let _serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let prev = self.current.load_full();
        let (mut certs, mut errors) = load_dir(&self.dir, self.ignore.as_deref());
        if certs.is_empty() && !prev.certs.is_empty() {
            let n = prev.certs.len();
            let kept = format!(
                "the set loaded before ({n} certificate{}) keeps serving",
                if n == 1 { "" } else { "s" }
            );
            // A folder that cannot be read already has its error; name the outcome in it.
            match errors.iter_mut().find(|e| e.file == self.dir) {
                Some(e) => e.message = format!("{}; {kept}", e.message),
                None => errors.push(err(&self.dir, format!("no usable certificate in this folder; {kept}"))),
            }
            for e in &errors {
                tracing::error!("{e}");
            }
            let n = errors.len();
            tracing::info!(
                dir = %self.dir.display(),
                certificates = prev.certs.len(),
                errors = n,
                "no usable certificate found: the serving certificates are kept"
            );
            self.current.store(Arc::new(CertSet::new(prev.certs.clone(), errors)));
            return n;
        }
        for e in &errors {
            let stem = e.file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            if let Some(old) = prev.by_stem(stem) {
                if !certs.iter().any(|c| c.stem == stem) {
                    tracing::error!("{e}; the previously loaded certificate {:?} keeps serving", old.stem);
                    certs.push(old.clone());
                    continue;
                }
            }
            tracing::error!("{e}; this certificate is skipped");
        }
        certs.sort_by(|a, b| a.stem.cmp(&b.stem));
        for c in &certs {
            self.metrics.tls_cert_expiry.get_or_create(&CertLabel { cert: c.stem.clone() }).set(c.not_after);
        }
        for old in &prev.certs {
            if !certs.iter().any(|c| c.stem == old.stem) {
                self.metrics.tls_cert_expiry.remove(&CertLabel { cert: old.stem.clone() });
            }
        }
        let n = errors.len();
        tracing::info!(
            dir = %self.dir.display(),
            certificates = certs.len(),
            errors = n,
            "certificates loaded"
        );
        self.current.store(Arc::new(CertSet::new(certs, errors)));
        n
    }
}

// === loading ===

fn err(file: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError { file: file.to_owned(), line: 1, column: 1, message: message.into() }
}

/// The files of one certificate, by stem.
#[derive(Default)]
struct Files {
    crt: Option<PathBuf>,
    key: Option<PathBuf>,
    pem: Option<PathBuf>,
}

/// Load every pair in `dir` (not recursively), in file-name order. `ignore` is a file to skip
/// (the mTLS CA bundle when it lives there). Returns the good pairs and one error per bad one.
pub(crate) fn load_dir(dir: &Path, ignore: Option<&Path>) -> (Vec<LoadedCert>, Vec<ConfigError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return (Vec::new(), vec![err(dir, format!("cannot read the certificates folder: {e}"))]),
    };
    let mut by_stem: std::collections::BTreeMap<String, Files> = Default::default();
    for entry in entries.flatten() {
        let path = entry.path();
        if ignore.is_some_and(|i| same_file(i, &path)) || !path.is_file() {
            continue;
        }
        let (Some(stem), Some(ext)) =
            (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|s| s.to_str()))
        else {
            continue;
        };
        let f = by_stem.entry(stem.to_owned()).or_default();
        match ext {
            "crt" => f.crt = Some(path),
            "key" => f.key = Some(path),
            "pem" => f.pem = Some(path),
            _ => {}
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut certs = Vec::new();
    let mut errors = Vec::new();
    for (stem, f) in by_stem {
        let r = match (&f.crt, &f.key, &f.pem) {
            (Some(crt), Some(key), _) => load_pair(&stem, crt, key, now),
            (None, None, Some(pem)) => load_pair(&stem, pem, pem, now),
            (Some(crt), None, _) => {
                Err(err(crt, format!("no private key for this certificate: expected {stem}.key next to it")))
            }
            (None, Some(key), _) => {
                Err(err(key, format!("no certificate for this key: expected {stem}.crt next to it")))
            }
            (None, None, None) => continue,
        };
        match r {
            Ok(c) => certs.push(c),
            Err(e) => errors.push(e),
        }
    }
    (certs, errors)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn provider() -> &'static CryptoProvider {
    static P: std::sync::OnceLock<CryptoProvider> = std::sync::OnceLock::new();
    P.get_or_init(rustls::crypto::ring::default_provider)
}

/// Read PEM certificates from `path` (every `CERTIFICATE` block, leaf first).
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(path, "bad PEM: no CERTIFICATE block"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            err(path, "bad PEM: no private key (PKCS#8, PKCS#1 or SEC1) block")
        }
        e => err(path, format!("bad PEM: {e}")),
    })
}

/// Load and check one pair: PEM parses, the key is usable and matches the leaf, the leaf is
/// not expired. `crt` and `key` are the same file for `NAME.pem`.
fn load_pair(stem: &str, crt: &Path, key: &Path, now: i64) -> Result<LoadedCert, ConfigError> {
    let chain = read_certs(crt)?;
    let key_der = read_key(key)?;
    let signer = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| err(key, format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(err(
                key,
                format!("the private key does not match the certificate in {}", crt.display()),
            ))
        }
        Err(e) => return Err(err(crt, format!("bad certificate: {e}"))),
    }
    let (names, not_before, not_after) = leaf_info(&ck.cert[0]).map_err(|m| err(crt, m))?;
    if not_after < now {
        return Err(err(
            crt,
            format!("certificate expired at {}", humantime::format_rfc3339_seconds(unix(not_after))),
        ));
    }
    if not_before > now {
        tracing::warn!(
            "{}: certificate is not valid before {}",
            crt.display(),
            humantime::format_rfc3339_seconds(unix(not_before))
        );
    }
    if names.is_empty() {
        tracing::warn!(
            "{}: the certificate has no DNS subject alternative name; it is served only as the \
             default or the single certificate",
            crt.display()
        );
    }
    Ok(LoadedCert { stem: stem.to_owned(), key: Arc::new(ck), names, not_after })
}

fn unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64)
}

/// The leaf's DNS SANs (lower-case), notBefore and notAfter (Unix seconds).
fn leaf_info(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("bad certificate: cannot parse the leaf: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    let v = cert.validity();
    Ok((names, v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Every problem `switchyard check` should report for a listener's TLS files: each bad pair
/// in `certs_dir` and an unreadable `client_ca`. An empty or missing `certs_dir` is not an
/// error: a development certificate is generated there at start.
pub(crate) fn check(dir: &Path, client_ca: Option<&Path>) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if dir.exists() {
        errors.extend(load_dir(dir, client_ca).1);
    }
    if let Some(ca) = client_ca {
        if let Err(e) = super::roots(ca) {
            errors.push(e);
        }
    }
    errors
}

// === development certificate ===

/// Whether `dir` holds any certificate file (`*.crt` or `*.pem`, other than `ignore`).
fn has_certificate(dir: &Path, ignore: Option<&Path>) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let p = e.path();
            matches!(p.extension().and_then(|x| x.to_str()), Some("crt" | "pem"))
                && !ignore.is_some_and(|i| same_file(i, &p))
        })
    })
}

/// If `dir` holds no certificate, generate a self-signed one for `localhost` and `127.0.0.1`
/// into it (`dev.crt`, `dev.key` with mode 0600), creating the folder if needed. Returns
/// whether it did.
pub(crate) fn ensure_dev_cert(dir: &Path, ignore: Option<&Path>) -> Result<bool, String> {
    if has_certificate(dir, ignore) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the certificates folder {}: {e}", dir.display()))?;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .map_err(|e| format!("cannot generate a development certificate: {e}"))?;
    let key_path = dir.join("dev.key");
    let crt_path = dir.join("dev.crt");
    write_private(&key_path, ck.signing_key.serialize_pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
    std::fs::write(&crt_path, ck.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", crt_path.display()))?;
    tracing::warn!(
        "!!! {} held no certificate: generated a SELF-SIGNED DEVELOPMENT certificate for \
         localhost and 127.0.0.1 into {} and {}. Clients will not trust it (use curl -k). \
         Put real certificates there for anything but development. !!!",
        dir.display(),
        crt_path.display(),
        key_path.display()
    );
    Ok(true)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}
