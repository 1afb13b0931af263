//! `server::canonical::path`: the canonical form of an origin-form path.
//!
//! Input: byte 0 picks the `[http]` config (bit 0 `normalize_path`, bit 1 `merge_slashes`,
//! bits 2.. modulo 3 `escaped_slashes`: reject, keep, decode); the rest is the path, used only
//! when it is UTF-8 and starts with `/`.
//!
//! Properties on `Ok`: the result is its own canonical form (idempotence); it starts with `/`;
//! it holds no raw `\`; every `%` starts an escape with two upper-case hex digits; a path that
//! needed no work comes back unchanged. With `normalize_path`: no escaped unreserved character
//! and no `.`/`..` segment; with `merge_slashes` too: no `//`. With `escaped_slashes = reject`:
//! no `%2F`/`%5C`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::config::{EscapedSlashes, HttpConfig};
use switchyard::internals::canonical;

fn config(flags: u8) -> HttpConfig {
    HttpConfig {
        normalize_path: flags & 1 != 0,
        merge_slashes: flags & 2 != 0,
        escaped_slashes: match (flags >> 2) % 3 {
            0 => EscapedSlashes::Reject,
            1 => EscapedSlashes::Keep,
            _ => EscapedSlashes::Decode,
        },
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn upper_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn check(path: &str, cfg: &HttpConfig) {
    let Ok(out) = canonical::path(path, cfg) else { return };
    let out: &str = &out;
    let ctx = || format!("input {path:?}, output {out:?}, {cfg:?}");

    assert!(out.starts_with('/'), "result does not start with '/': {}", ctx());
    assert!(!out.contains('\\'), "raw backslash in result: {}", ctx());

    // Idempotence.
    match canonical::path(out, cfg) {
        Ok(again) => assert_eq!(&*again, out, "not idempotent: {}", ctx()),
        Err(e) => panic!("canonical form rejected on a second pass ({e:?}): {}", ctx()),
    }

    // A path with nothing to do is returned as it is.
    let quiet = !path.contains(['%', '\\']) && !path.contains("//") && !path.contains("/.");
    if quiet {
        assert_eq!(out, path, "a path that needed no work changed: {}", ctx());
    }

    // Escapes: well formed, upper-case; no escaped unreserved character when normalising.
    let b = out.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).copied().and_then(upper_hex);
            let lo = b.get(i + 2).copied().and_then(upper_hex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                panic!("malformed or lower-case escape at byte {i}: {}", ctx());
            };
            let c = hi << 4 | lo;
            if cfg.normalize_path {
                assert!(!unreserved(c), "escaped unreserved character left at byte {i}: {}", ctx());
            }
            if cfg.escaped_slashes == EscapedSlashes::Reject {
                assert!(c != b'/' && c != b'\\', "escaped slash with reject: {}", ctx());
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    if cfg.escaped_slashes == EscapedSlashes::Reject {
        let upper = out.to_ascii_uppercase();
        assert!(!upper.contains("%2F") && !upper.contains("%5C"), "%2F/%5C with reject: {}", ctx());
    }

    if cfg.normalize_path {
        for seg in out.split('/') {
            assert!(seg != "." && seg != "..", "dot-segment left: {}", ctx());
        }
        if cfg.merge_slashes {
            assert!(!out.contains("//"), "'//' left with merge_slashes: {}", ctx());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Ok(path) = std::str::from_utf8(rest) else { return };
    if !path.starts_with('/') {
        return;
    }
    check(path, &config(flags));
});
