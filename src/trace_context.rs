//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` a request is
//! forwarded with, decided once per request before routing (docs/configuration.md, "Request
//! headers the gateway sets").
//!
//! A valid incoming `traceparent` is kept as it is, and its `tracestate` with it. A missing or
//! invalid one (or more than one `traceparent` field) is replaced by a new one, `00-<random
//! trace id>-<random parent id>-01`, and the client's `tracestate` is then dropped: the W3C rules
//! forbid passing on a `tracestate` whose `traceparent` could not be parsed. The gateway is a
//! pass-through, not a tracing participant: it never makes a new parent id for a valid context.
//!
//! A leaf: it imports nothing of the crate.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent`.
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub(crate) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The length of a version `00` `traceparent`, and the shortest any version may be.
const LEN: usize = 55;

/// A trace id: 32 lowercase hex digits, not all zero.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 32]);

impl TraceId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ever made of hex digits (`parse`, `TraceContext::new_root`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request's trace context, as the gateway forwards it.
#[derive(Clone, Debug)]
pub struct TraceContext {
    /// The `traceparent` sent upstream: the client's when it is valid, else a new one.
    pub traceparent: HeaderValue,
    /// Its trace id (the access log's `trace_id`).
    pub trace_id: TraceId,
    /// Whether `traceparent` is the client's (its `tracestate` goes along) rather than new (any
    /// `tracestate` the client sent is dropped).
    pub incoming: bool,
}

/// A value that differs on every request (a request id, a `traceparent`), marked for HTTP/2's
/// header compression as one never to index (HPACK's never-indexed literal; HTTP/1 ignores
/// the mark). Indexed, each would be inserted into the connection's table only to push an
/// older entry out, and h2's encoder compares every new value of a name with each one of that
/// name still in the table (some fifty byte comparisons per response), for a value that is
/// never sent twice. Measured: HPACK encoding 6.8 k -> 4.3 k instructions per response.
pub(crate) fn never_indexed(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

impl TraceContext {
    /// The context of a request with `headers`: its one `traceparent` field when that is valid,
    /// else a new root.
    pub fn from_headers(headers: &HeaderMap) -> TraceContext {
        let mut fields = headers.get_all(&TRACEPARENT).iter();
        if let (Some(v), None) = (fields.next(), fields.next()) {
            if let Some(trace_id) = parse(v.as_bytes()) {
                return TraceContext { traceparent: never_indexed(v.clone()), trace_id, incoming: true };
            }
        }
        TraceContext::new_root()
    }

    /// A new trace: `00-<32 random hex>-<16 random hex>-01`, neither id all zeros.
    pub fn new_root() -> TraceContext {
        let (hi, lo) = loop {
            let (hi, lo) = (fastrand::u64(..), fastrand::u64(..));
            if (hi, lo) != (0, 0) {
                break (hi, lo);
            }
        };
        let parent = fastrand::u64(1..);
        let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-01";
        buf[3..19].copy_from_slice(&hex16(hi));
        buf[19..35].copy_from_slice(&hex16(lo));
        buf[36..52].copy_from_slice(&hex16(parent));
        let mut id = [0u8; 32];
        id.copy_from_slice(&buf[3..35]);
        // The buffer becomes the value's storage as it is (one allocation; the clones made for
        // each attempt only count references).
        let traceparent =
            never_indexed(HeaderValue::from_maybe_shared(Bytes::from_owner(buf)).unwrap_or_else(|_| {
                HeaderValue::from_static("00-00000000000000000000000000000001-0000000000000001-01")
            }));
        TraceContext { traceparent, trace_id: TraceId(id), incoming: false }
    }
}

/// `n` as 16 lowercase hex digits, eight at a time (this runs for every request without a
/// `traceparent`; a table lookup per digit cost several times the instructions).
pub(crate) fn hex16(n: u64) -> [u8; 16] {
    /// The 8 digits of `x`, one per byte, most significant first when read big-endian.
    fn eight(x: u32) -> [u8; 8] {
        // Spread the nibbles apart, one per byte: 0x1234_5678 -> 0x0102_0304_0506_0708.
        let mut v = u64::from(x);
        v = ((v & 0xffff_0000) << 16) | (v & 0xffff);
        v = ((v & 0x0000_ff00_0000_ff00) << 8) | (v & 0x0000_00ff_0000_00ff);
        v = ((v & 0x00f0_00f0_00f0_00f0) << 4) | (v & 0x000f_000f_000f_000f);
        // 1 in each byte whose nibble is 10 or more (no byte carries into the next).
        let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        // '0' + nibble, and 'a' - '0' - 10 = 0x27 more for the letters.
        (v + 0x3030_3030_3030_3030 + letters * 0x27).to_be_bytes()
    }
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&eight((n >> 32) as u32));
    out[8..].copy_from_slice(&eight(n as u32));
    out
}

fn is_hex(s: &[u8]) -> bool {
    s.iter().all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The trace id of a valid `traceparent` value, `None` when it is not valid.
///
/// `version-traceid-parentid-flags`, lowercase hex only: version 2 digits and not `ff`, trace id
/// 32 digits and parent id 16, neither all zeros, flags 2 digits. Version `00` is exactly 55
/// characters. A higher version is read as `00` over its first 55 characters, and whatever
/// follows them must start with `-` (the W3C forward-compatibility rule; it is visible ASCII
/// here, as a header value of the gateway's must be).
fn parse(v: &[u8]) -> Option<TraceId> {
    if v.len() < LEN || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let (version, trace, parent, flags) = (&v[..2], &v[3..35], &v[36..52], &v[53..55]);
    if !is_hex(version) || version == b"ff" {
        return None;
    }
    if version == b"00" {
        if v.len() != LEN {
            return None;
        }
    } else if v.len() > LEN && (v[LEN] != b'-' || !v[LEN..].iter().all(|b| (0x21..=0x7e).contains(b))) {
        return None;
    }
    if !is_hex(trace) || !is_hex(parent) || !is_hex(flags) {
        return None;
    }
    if trace.iter().all(|&b| b == b'0') || parent.iter().all(|&b| b == b'0') {
        return None;
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(trace);
    Some(TraceId(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn ok(v: &str) -> bool {
        parse(v.as_bytes()).is_some()
    }

    fn with(values: &[&[u8]]) -> TraceContext {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&TRACEPARENT, HeaderValue::from_bytes(v).unwrap());
        }
        TraceContext::from_headers(&h)
    }

    fn assert_new_root(t: &TraceContext) {
        assert!(!t.incoming);
        let v = t.traceparent.to_str().unwrap();
        assert_eq!(v.len(), 55, "{v}");
        assert!(v.starts_with("00-") && v.ends_with("-01"), "{v}");
        assert_eq!(parse(v.as_bytes()), Some(t.trace_id), "{v}");
        assert_eq!(&v[3..35], t.trace_id.as_str());
    }

    #[test]
    fn a_valid_version_00_is_kept_with_its_trace_id() {
        assert_eq!(parse(VALID.as_bytes()).unwrap().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(ok("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
        assert!(ok("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff"));
        let t = with(&[VALID.as_bytes()]);
        assert!(t.incoming);
        assert_eq!(t.traceparent, VALID);
        assert_eq!(t.trace_id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn uppercase_hex_is_invalid() {
        assert!(!ok("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
        assert!(!ok("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01"));
        assert!(!ok("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A"));
        assert!(!ok("0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    }

    #[test]
    fn all_zero_ids_are_invalid() {
        assert!(!ok("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
        assert!(!ok("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
    }

    #[test]
    fn version_ff_is_invalid() {
        assert!(!ok("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!ok("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"));
    }

    #[test]
    fn wrong_lengths_are_invalid() {
        for v in [
            "",
            "00",
            &VALID[..54],
            // Version 00 with anything after its 55 characters.
            format!("{VALID}-").as_str(),
            format!("{VALID}-what-the-future-will-be-like").as_str(),
            format!("{VALID}.").as_str(),
            // Each field one digit short or long.
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-001",
        ] {
            assert!(!ok(v), "{v:?}");
        }
    }

    #[test]
    fn a_future_version_is_read_as_00_and_may_carry_more_after_a_dash() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse(v.as_bytes()).unwrap().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(ok("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like"));
        assert!(ok("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-"));
        // Kept as sent, suffix and all.
        let long = b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like";
        let t = with(&[long]);
        assert!(t.incoming);
        assert_eq!(t.traceparent.as_bytes(), long);
        // What follows the first 55 characters must start with a dash, and be visible ASCII.
        assert!(!ok("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what-the-future-will-be-like"));
        assert!(!ok("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010"));
        assert!(!ok("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-a b"));
        assert!(parse(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-caf\xe9").is_none());
        // The fields of a future version follow the same rules.
        assert!(!ok("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g-x"));
        assert!(!ok("cc-00000000000000000000000000000000-00f067aa0ba902b7-01-x"));
    }

    #[test]
    fn non_hex_and_misplaced_dashes_are_invalid() {
        for v in [
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ".0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47.6-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-.1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        ] {
            assert!(!ok(v), "{v:?}");
        }
        assert!(parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902\xe9-01").is_none());
    }

    #[test]
    fn missing_invalid_or_repeated_traceparent_gets_a_new_root() {
        assert_new_root(&TraceContext::from_headers(&HeaderMap::new()));
        assert_new_root(&with(&[b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"]));
        assert_new_root(&with(&[b"caf\xe9"]));
        // Two fields, even two valid and equal ones, are not one traceparent.
        let t = with(&[VALID.as_bytes(), VALID.as_bytes()]);
        assert_new_root(&t);
        assert_ne!(t.traceparent, VALID);
        let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_new_root(&with(&[VALID.as_bytes(), other.as_bytes()]));
    }

    #[test]
    fn new_roots_are_random_and_well_formed() {
        let a = TraceContext::new_root();
        let b = TraceContext::new_root();
        assert_new_root(&a);
        assert_new_root(&b);
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.traceparent.as_bytes()[36..52], b.traceparent.as_bytes()[36..52]);
        let fixed = [0u64, 1, 9, 10, 15, 16, 0xbeef, 0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210, u64::MAX];
        for n in fixed.into_iter().chain((0..10_000).map(|_| fastrand::u64(..))) {
            assert_eq!(std::str::from_utf8(&hex16(n)).unwrap(), format!("{n:016x}"));
        }
    }
}
