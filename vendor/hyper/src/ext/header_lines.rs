//! switchyard patch: header fields an HTTP/1 client request carries after its `HeaderMap`'s, and the
//! mark of a request head that declared two framings.

use http::header::{HeaderName, HeaderValue};

/// Header fields written after the message's `HeaderMap`, already in their HTTP/1 form
/// (`name: value\r\n`).
///
/// Set as an extension of a request sent on an HTTP/1 client connection (`Client::encode`);
/// nothing else reads it (not HTTP/2, not a server's responses). A proxy that adds the same few
/// fields to every request it forwards writes them here instead of inserting each into the
/// map, which hashes each name. The fields are built from a [`HeaderName`] and a
/// [`HeaderValue`], so every line is a valid field line. The caller makes sure the map does
/// not also hold a field it means to replace.
#[derive(Clone, Debug, Default)]
pub struct HeaderLines(Vec<u8>);

impl HeaderLines {
    /// No fields, with room for `bytes` bytes of them.
    pub fn with_capacity(bytes: usize) -> Self {
        HeaderLines(Vec::with_capacity(bytes))
    }

    /// Add the field `name: value`.
    pub fn push(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.0.extend_from_slice(name.as_str().as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value.as_bytes());
        self.0.extend_from_slice(b"\r\n");
    }

    /// The fields as written: `name: value\r\n` each.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether there is no field.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Set by an HTTP/1 server on a request whose head had both `transfer-encoding` and
/// `content-length` (RFC 9112 section 6.3). hyper frames such a request by its
/// `transfer-encoding`, drops the `content-length` header and closes the connection after it;
/// this extension lets the service see that it was there (and refuse the request, as a proxy
/// should: the two framings are how requests are smuggled past one).
#[derive(Clone, Copy, Debug)]
pub struct ConflictingFraming;
