//! The rustls client configuration of an upstream with `[upstream.tls]` (docs/configuration.md): trust the
//! `ca` file, or else the webpki (Mozilla) roots; `insecure_skip_verify` accepts any
//! certificate (validation already warned about it at load); ALPN `h2` for `protocol = "h2"`,
//! else `http/1.1`. An `https://` Consul agent (`tls_ca`, `tls_insecure_skip_verify`) is
//! trusted through the same function.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{ConfigError, UpstreamProtocol, UpstreamTls};

/// Build the client configuration for an upstream's TLS settings.
pub(crate) fn config(
    tls: &UpstreamTls,
    protocol: UpstreamProtocol,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = super::provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError {
            file: Default::default(),
            line: 1,
            column: 1,
            message: format!("TLS setup failed: {e}"),
        })?;
    let mut cfg = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let roots = match &tls.ca {
            Some(ca) => super::roots(ca)?,
            None => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = match protocol {
        UpstreamProtocol::H2 | UpstreamProtocol::H2c => vec![b"h2".to_vec()],
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
    };
    Ok(Arc::new(cfg))
}

/// `insecure_skip_verify`: any certificate is accepted; handshake signatures are still
/// checked, so the session keys are at least bound to the certificate presented.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
