//! A throwaway certificate authority for tests that need a TLS server (made with rcgen at run
//! time, never a fixture that expires), and the rustls server configuration of a certificate it
//! issues.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A test CA.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM: what a `ca` / `tls_ca` file holds.
    pub pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        TestCa { pem: cert.pem(), issuer: Issuer::new(p, key) }
    }

    /// A rustls server configuration (ALPN `h2`, `http/1.1`) presenting a certificate for
    /// `sans` (names, or IP addresses such as "127.0.0.1") issued by this CA.
    pub fn server_config(&self, sans: &[&str]) -> Arc<rustls::ServerConfig> {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, sans.first().copied().unwrap_or("server"));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let mut cfg =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

impl TestCa {
    /// Write a server certificate for `sans` issued by this CA into `dir` as `NAME.crt` and
    /// `NAME.key` (as a listener's `certs_dir` holds them); returns the leaf's DER.
    pub fn write_pair(&self, dir: &std::path::Path, name: &str, sans: &[&str]) -> Vec<u8> {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, sans.first().copied().unwrap_or("server"));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        super::write_atomic(&dir.join(format!("{name}.key")), &key.serialize_pem());
        super::write_atomic(&dir.join(format!("{name}.crt")), &cert.pem());
        cert.der().to_vec()
    }

    /// A root store trusting only this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut r = rustls::RootCertStore::empty();
        r.add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap()).unwrap();
        r
    }
}
