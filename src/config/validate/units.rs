//! Scalars: durations, sizes, bounded integers, percentages, addresses, choices, header names
//! and values, statuses.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use toml::Spanned;

use super::Ctx;
use crate::config::file::Scalar;

/// Parse a duration: a whole number and a unit, optionally repeated (`"250ms"`, `"5s"`, `"1m"`,
/// `"1h"`, `"1m30s"`). Units: `ns`, `us`, `ms`, `s`, `m`, `h`, `d`.
//
// Hand-written rather than `humantime::parse_duration`, because humantime accepts more than the
// gateway may: a bare `"0"`, fractions (`"1.5s"`), `M` for months next to `m` for minutes (so a
// wrong case silently turns minutes into months), weeks and years, and long spellings
// (`"5 sec"`, `"2min"`) that docs/configuration.md does not list; and its errors are byte
// offsets, not the hints below. Checking the shape first to keep those out means splitting
// every number from its unit and checking the unit, which is all this parser does; humantime
// would add only the multiply-and-add, a second pass, and its own overflow bound (it refuses
// `ms` and `us` amounts past about 584 years, which this accepts).
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("invalid duration {s:?}: write a number with a unit, e.g. \"5s\""));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid duration {s:?}: add a unit, e.g. \"{t}s\""));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("invalid duration {s:?}: expected a number followed by a unit, e.g. \"5s\""));
        }
        let (num, tail) = rest.split_at(digits);
        if tail.starts_with('.') {
            return Err(format!(
                "invalid duration {s:?}: use a whole number with a smaller unit, e.g. \"1500ms\" \
                 instead of \"1.5s\""
            ));
        }
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        let part = match unit.trim() {
            "ns" => Some(Duration::from_nanos(n)),
            "us" | "µs" => Some(Duration::from_micros(n)),
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            "d" => n.checked_mul(86_400).map(Duration::from_secs),
            "" => return Err(format!("invalid duration {s:?}: every number needs a unit, e.g. \"1m30s\"")),
            other => {
                return Err(format!("invalid duration {s:?}: unknown unit {other:?}; use ms, s, m or h"))
            }
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
        rest = next;
    }
    Ok(total)
}

/// Parse a size: a number of bytes, optionally with a unit: `B`, binary `KiB` `MiB` `GiB`
/// `TiB`, or decimal `KB` `MB` `GB` `TB` (`"64KiB"`, `"10MiB"`, `"512B"`, `"1KB"` = 1000).
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!(
            "invalid size {s:?}: expected a number of bytes, optionally with a unit, e.g. \"64KiB\""
        ));
    }
    let (num, unit) = t.split_at(digits);
    if unit.starts_with('.') {
        return Err(format!(
            "invalid size {s:?}: use a whole number with a smaller unit, e.g. \"1536KiB\" \
             instead of \"1.5MiB\""
        ));
    }
    let mult: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {other:?}; use B, KiB, MiB, GiB (or KB, MB, GB \
                 for powers of 1000)"
            ))
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// An RFC 7230 token (cookie names, header names).
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Ctx<'_, '_> {
    pub(super) fn duration(&mut self, v: &Spanned<Scalar>) -> Option<Duration> {
        let r = match v.get_ref() {
            Scalar::Str(s) => parse_duration(s),
            Scalar::Int(i) => Err(format!("invalid duration \"{i}\": add a unit, e.g. \"{i}s\"")),
            Scalar::Float(x) => Err(format!(
                "invalid duration {x}: write a string with a unit, e.g. \"{}ms\"",
                (x * 1000.0).round()
            )),
        };
        r.map_err(|m| self.err(v.span(), m)).ok()
    }

    /// An optional duration with a default; `key` must not be zero.
    pub(super) fn duration_or(
        &mut self,
        v: Option<&Spanned<Scalar>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        match v {
            None => default,
            Some(v) => match self.duration(v) {
                Some(d) if d.is_zero() => {
                    self.err(v.span(), format!("`{key}` must be greater than zero"));
                    default
                }
                Some(d) => d,
                None => default,
            },
        }
    }

    pub(super) fn size(&mut self, v: &Spanned<Scalar>) -> Option<u64> {
        let r = match v.get_ref() {
            Scalar::Str(s) => parse_size(s),
            Scalar::Int(i) => {
                u64::try_from(*i).map_err(|_| format!("invalid size {i}: a size cannot be negative"))
            }
            Scalar::Float(x) => {
                Err(format!("invalid size {x}: write whole bytes, or a string with a unit, e.g. \"64KiB\""))
            }
        };
        r.map_err(|m| self.err(v.span(), m)).ok()
    }

    /// An integer in `lo..=hi`.
    pub(super) fn int(&mut self, v: &Spanned<i64>, key: &str, lo: i64, hi: i64) -> Option<i64> {
        let n = *v.get_ref();
        if (lo..=hi).contains(&n) {
            return Some(n);
        }
        let msg = if hi == i64::from(u32::MAX) || hi == i64::MAX {
            format!("`{key}` must be at least {lo}, got {n}")
        } else {
            format!("`{key}` must be between {lo} and {hi}, got {n}")
        };
        self.err(v.span(), msg);
        None
    }

    pub(super) fn u32_or(&mut self, v: Option<&Spanned<i64>>, key: &str, lo: u32, default: u32) -> u32 {
        v.and_then(|v| self.int(v, key, i64::from(lo), i64::from(u32::MAX))).map_or(default, |n| n as u32)
    }

    pub(super) fn percent_or(&mut self, v: Option<&Spanned<i64>>, key: &str, default: u8) -> u8 {
        v.and_then(|v| self.int(v, key, 0, 100)).map_or(default, |n| n as u8)
    }

    /// A socket address `IP:port` (names are not resolved at load).
    pub(super) fn socket_addr(&mut self, v: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match v.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    v.span(),
                    format!(
                        "invalid `{key}` address {:?}: expected IP:port, e.g. \"127.0.0.1:8080\" \
                         or \"[::1]:8080\"",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// One of `choices` (config spelling → value).
    pub(super) fn choice<T: Copy>(
        &mut self,
        v: &Spanned<String>,
        key: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, t)) = choices.iter().find(|(s, _)| *s == v.get_ref()) {
            return Some(*t);
        }
        let names: Vec<&str> = choices.iter().map(|(s, _)| *s).collect();
        self.err(
            v.span(),
            format!("unknown `{key}` {:?}; expected one of: {}", v.get_ref(), names.join(", ")),
        );
        None
    }

    pub(super) fn non_empty(&mut self, v: &Spanned<String>, key: &str) -> Option<String> {
        if v.get_ref().trim().is_empty() {
            self.err(v.span(), format!("`{key}` must not be empty"));
            None
        } else {
            Some(v.get_ref().clone())
        }
    }

    pub(super) fn header_name(&mut self, v: &Spanned<String>) -> Option<HeaderName> {
        let lower = v.get_ref().to_ascii_lowercase();
        match HeaderName::from_bytes(lower.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(
                    v.span(),
                    format!(
                        "invalid header name {:?}: use letters, digits and `-`, e.g. \"x-request-id\"",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn header_value(&mut self, v: &Spanned<String>, name: &str) -> Option<HeaderValue> {
        match HeaderValue::from_str(v.get_ref()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(
                    v.span(),
                    format!(
                        "invalid value {:?} for header {name:?}: only visible ASCII, spaces and \
                         tabs are allowed",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn status(&mut self, v: &Spanned<i64>) -> Option<StatusCode> {
        let n = *v.get_ref();
        match u16::try_from(n).ok().and_then(|n| StatusCode::from_u16(n).ok()) {
            Some(s) if (100..=599).contains(&n) => Some(s),
            _ => {
                self.err(v.span(), format!("invalid status {n}: expected 100 to 599"));
                None
            }
        }
    }
}
