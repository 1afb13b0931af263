//! The `static` source (`endpoints = [...]`; `static` is a keyword, hence the file name): one
//! authoritative set, published once. It goes through the same [`Publisher`] and adapter as the
//! dynamic sources so every upstream is fed, counted and shown the same way.

use crate::config::StaticEndpoint;

use super::Publisher;

/// Publish `list` and stay until the registry stops this source (dropping the sender would
/// tell consumers the source ended).
pub(crate) async fn run(list: Vec<StaticEndpoint>, out: Publisher) {
    out.reset(list);
    std::future::pending::<()>().await;
}
