//! `GET /`: the dashboard, one HTML page with its style and script inline, embedded in the
//! binary (docs/admin-api.md#get-). The page carries no data: its script reads `/config`,
//! `/routes`, `/upstreams`, `/stats` (and `/fleet` in fleet mode) every 2 s with the token the
//! person typed, so the page itself is served without one.
//!
//! The Content-Security-Policy lets the page run only its own script and style (by their
//! SHA-256) and talk only to this listener: no request leaves the gateway, and no text the
//! page displays (route names, error messages) can become markup or script.

use std::sync::OnceLock;

use base64::Engine as _;
use bytes::Bytes;
use http::HeaderValue;

const HTML: &str = include_str!("dashboard/page.html");
const STYLE: &str = include_str!("dashboard/style.css");
const SCRIPT: &str = include_str!("dashboard/app.js");

/// The page and its policy, built once per token setting.
#[derive(Debug)]
pub(crate) struct Page {
    /// The whole document.
    pub html: Bytes,
    /// `content-security-policy`, naming the inline script and style by hash.
    pub csp: HeaderValue,
}

/// The page for an admin API with (`token_required`) or without a token: it tells the script
/// whether to ask for one before its first request, so that it never shows a 401 first.
pub(crate) fn page(token_required: bool) -> &'static Page {
    static WITH: OnceLock<Page> = OnceLock::new();
    static WITHOUT: OnceLock<Page> = OnceLock::new();
    let cell = if token_required { &WITH } else { &WITHOUT };
    cell.get_or_init(|| build(token_required))
}

fn build(token_required: bool) -> Page {
    let html = HTML
        .replace("{{token}}", if token_required { "required" } else { "none" })
        .replace("{{style}}", STYLE)
        .replace("{{script}}", SCRIPT);
    let csp = format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256(SCRIPT),
        sha256(STYLE)
    );
    Page {
        html: Bytes::from(html),
        // Base64 and ASCII only: always a valid header value.
        csp: HeaderValue::from_str(&csp).expect("CSP is ASCII"),
    }
}

/// A CSP hash source: `sha256-` and the base64 of the SHA-256 of `text`.
fn sha256(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_inlines_its_parts_and_the_policy_names_them() {
        for required in [false, true] {
            let p = page(required);
            let html = std::str::from_utf8(&p.html).unwrap();
            assert!(!html.contains("{{"), "a placeholder left in the page");
            assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
            assert!(html.contains(&format!("<style>{STYLE}</style>")));
            let meta = if required { "content=\"required\"" } else { "content=\"none\"" };
            assert!(html.contains(meta));
            let csp = p.csp.to_str().unwrap();
            assert!(csp.contains(&sha256(SCRIPT)) && csp.contains(&sha256(STYLE)), "{csp}");
            assert!(csp.starts_with("default-src 'none'") && csp.contains("connect-src 'self'"));
        }
    }

    #[test]
    fn the_page_refers_to_no_other_host() {
        // Only the SVG namespace name (an identifier, never fetched) may spell a URL; nothing
        // is loaded from one (the CSP enforces that in the browser too).
        let all = format!("{HTML}{STYLE}{SCRIPT}");
        for (i, _) in all.match_indices("://") {
            let start = all[..i].rfind(['\'', '"', '(', ' ']).map_or(0, |s| s + 1);
            let url = &all[start..i + 3 + all[i + 3..].find(['\'', '"', ')', ' ']).unwrap_or(0)];
            assert_eq!(url, "http://www.w3.org/2000/svg", "the page names another host");
        }
        assert!(!all.contains("innerHTML") && !all.contains("eval("), "text must never become markup");
    }

    #[test]
    fn sha256_source_matches_a_known_digest() {
        // printf 'abc' | openssl dgst -sha256 -binary | base64
        assert_eq!(sha256("abc"), "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
    }
}
