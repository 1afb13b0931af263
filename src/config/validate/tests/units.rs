//! Duration and size strings, and the "did you mean" hint.

use std::time::Duration;

use crate::config::validate::diagnostics::name_hint;
use crate::config::validate::units::{parse_duration, parse_size};

#[test]
fn durations() {
    let ok = |s: &str| parse_duration(s).unwrap();
    assert_eq!(ok("250ms"), Duration::from_millis(250));
    assert_eq!(ok("5s"), Duration::from_secs(5));
    assert_eq!(ok("1m"), Duration::from_secs(60));
    assert_eq!(ok("1h"), Duration::from_secs(3600));
    assert_eq!(ok("1m30s"), Duration::from_secs(90));
    assert_eq!(ok("0s"), Duration::ZERO);
    assert_eq!(parse_duration("5").unwrap_err(), "invalid duration \"5\": add a unit, e.g. \"5s\"");
    assert!(parse_duration("").unwrap_err().contains("write a number with a unit"));
    assert!(parse_duration("1.5s").unwrap_err().contains("\"1500ms\""));
    assert!(parse_duration("5 sec").unwrap_err().contains("unknown unit \"sec\""));
    assert!(parse_duration("s").unwrap_err().contains("expected a number"));
    assert!(parse_duration("99999999999999999999s").unwrap_err().contains("too large"));
}

#[test]
fn sizes() {
    let ok = |s: &str| parse_size(s).unwrap();
    assert_eq!(ok("512B"), 512);
    assert_eq!(ok("1024"), 1024);
    assert_eq!(ok("64KiB"), 64 * 1024);
    assert_eq!(ok("10MiB"), 10 << 20);
    assert_eq!(ok("1GiB"), 1 << 30);
    assert_eq!(ok("1KB"), 1000);
    assert_eq!(ok("2MB"), 2_000_000);
    assert_eq!(ok("1GB"), 1_000_000_000);
    assert_eq!(ok("64 KiB"), 64 * 1024);
    assert!(parse_size("1.5MiB").unwrap_err().contains("\"1536KiB\""));
    assert!(parse_size("1kb").unwrap_err().contains("unknown unit \"kb\""));
    assert!(parse_size("KiB").unwrap_err().contains("expected a number of bytes"));
    assert!(parse_size("99999999999GiB").unwrap_err().contains("too large"));
}

/// What `humantime` would take and the documented grammar does not (see `parse_duration`), and
/// the spellings the grammar does take besides the plain ones above.
#[test]
fn durations_stay_within_the_documented_grammar() {
    for refused in ["0", "1M", "1w", "1y", "2min", "5 seconds", "1.5h", "1m30"] {
        assert!(parse_duration(refused).is_err(), "{refused:?} was accepted");
    }
    assert_eq!(parse_duration(" 1m 30s ").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("1d2h").unwrap(), Duration::from_secs(26 * 3600));
    assert_eq!(parse_duration("5µs").unwrap(), Duration::from_micros(5));
    assert_eq!(parse_duration("7ns").unwrap(), Duration::from_nanos(7));
}

#[test]
fn name_hints() {
    assert_eq!(name_hint("x", &[]), "; no upstream is defined: add an [[upstream]] table");
    assert_eq!(name_hint("userz", &["orders", "users"]), "; defined upstreams: \"orders\", \"users\"");
    let many: Vec<String> = (0..20).map(|i| format!("svc-{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(name_hint("svc-13x", &many), "; did you mean \"svc-13\"?");
    // "svc-1" and "svc-10" to "svc-19" are all one edit away: the one that sorts first wins.
    assert_eq!(name_hint("svc-1x", &many), "; did you mean \"svc-1\"?");
    // Nothing close enough: no hint.
    assert_eq!(name_hint("orders", &many), "");
    // Distance counts characters: "äöc" is two edits from "abc" (in bytes it would be four,
    // past the limit of 3 / 3 + 1).
    let accented = ["äöc", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8"];
    assert_eq!(name_hint("abc", &accented), "; did you mean \"äöc\"?");
}
