//! rustls' certificate choice by SNI over the live [`CertSet`] (certs/README.md): one hash lookup for
//! the exact name, one for the wildcard parent, then `default_cert`, then the only certificate.
//! The set is read with one `ArcSwap` load per handshake, so a reload never blocks a handshake.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::store::CertSet;

/// Picks a listener's certificate by SNI.
#[derive(Debug)]
pub(crate) struct SniResolver {
    set: Arc<ArcSwap<CertSet>>,
    default_cert: Option<String>,
}

impl SniResolver {
    /// A resolver over the live set, with `default_cert` (a file stem) for unmatched names.
    pub(crate) fn new(set: Arc<ArcSwap<CertSet>>, default_cert: Option<String>) -> Self {
        SniResolver { set, default_cert }
    }

    /// The certificate for `sni`, if any.
    pub(crate) fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.set.load().pick(sni, self.default_cert.as_deref()).cloned()
    }

    /// Whether a handshake for `sni` would find a certificate.
    pub(crate) fn knows(&self, sni: Option<&str>) -> bool {
        self.set.load().pick(sni, self.default_cert.as_deref()).is_some()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}
