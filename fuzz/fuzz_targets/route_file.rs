//! `config::load_routes_from_sources`: one route file of arbitrary UTF-8 text.
//!
//! Properties: never panics. On `Err` the error list is not empty and every error names
//! `fuzz.toml` with a 1-based line and column inside the text (line <= number of lines,
//! column <= that line's length in characters + 1). On `Ok` every route's origin line is >= 1
//! and the routes compile into a `Router` that answers a few lookups with an index in range.
#![no_main]

use std::path::{Path, PathBuf};

use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use switchyard::config::load_routes_from_sources;
use switchyard::internals::Router;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match load_routes_from_sources(vec![(PathBuf::from("fuzz.toml"), text.to_owned())]) {
        Err(errors) => {
            assert!(!errors.0.is_empty(), "Err with no errors");
            let lines: Vec<&str> = text.split('\n').collect();
            for e in &errors.0 {
                assert_eq!(e.file, Path::new("fuzz.toml"), "error names another file: {e}");
                assert!(e.line >= 1 && e.column >= 1, "error not 1-based: {e:?}");
                assert!(e.line <= lines.len(), "error line past the end ({} lines): {e:?}", lines.len());
                let width = lines[e.line - 1].chars().count();
                assert!(
                    e.column <= width + 1,
                    "error column past the end of its line ({width} chars): {e:?}"
                );
            }
        }
        Ok(set) => {
            for r in &set.routes {
                assert!(r.origin.line >= 1, "route origin line 0: {:?}", r.origin);
            }
            let router = Router::new(&set.routes);
            assert_eq!(router.len(), set.routes.len());
            let headers = HeaderMap::new();
            for (host, path) in
                [(Some("example.com"), "/"), (None, "/users/1"), (Some("API.Example.COM:80"), "/x")]
            {
                if let Some(i) = router.lookup(&Method::GET, host, path, Some("debug=1"), &headers) {
                    assert!(i < router.len(), "lookup index {i} out of range {}", router.len());
                }
            }
        }
    }
});
