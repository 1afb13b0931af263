//! switchyard: an HTTP reverse-proxy gateway.

pub mod config;
pub mod router;
