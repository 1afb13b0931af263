//! Validation tests, by topic, with the helpers they share: loads of in-memory route files
//! under `routes/`, and scratch folders for `gateway.toml`.

mod errors;
mod fleet;
mod gateway;
mod routes;
mod units;
mod upstreams;

use std::path::PathBuf;

use super::load_routes_from_sources;
use crate::config::{ConfigErrors, RouteConfig, RouteSet, UpstreamConfig};

const USERS: &str = "[[upstream]]\nname = \"users\"\nendpoints = [\"127.0.0.1:9001\"]\n";

fn load(files: &[(&str, &str)]) -> Result<RouteSet, ConfigErrors> {
    load_routes_from_sources(
        files.iter().map(|(p, t)| (PathBuf::from(format!("routes/{p}")), (*t).to_owned())).collect(),
    )
}

/// Every error of a load, as `check` prints them.
fn errors(files: &[(&str, &str)]) -> Vec<String> {
    match load(files) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// The single error of a one-file load (with `users` defined in a second file).
fn error(text: &str) -> String {
    let errs = errors(&[("a.toml", text), ("z.toml", USERS)]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.into_iter().next().unwrap()
}

fn assert_prefix(got: &str, want: &str) {
    assert!(got.starts_with(want), "\n got: {got}\nwant: {want}…");
}

fn route(body: &str) -> RouteConfig {
    let text = format!("[[route]]\nname = \"r\"\n{body}\n");
    let set = load(&[("a.toml", &text), ("z.toml", USERS)]).unwrap_or_else(|e| panic!("{e}"));
    set.routes.into_iter().next().unwrap()
}

fn upstream(body: &str) -> UpstreamConfig {
    let text = format!("[[upstream]]\nname = \"u\"\n{body}\n");
    let set = load(&[("a.toml", &text)]).unwrap_or_else(|e| panic!("{e}"));
    set.upstreams.into_iter().next().unwrap()
}

/// A scratch folder under the system temp dir, unique per test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-config-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
