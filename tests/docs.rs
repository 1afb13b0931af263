//! The documentation under `docs/` keeps up with the code: every config key, metric family and
//! admin path the code knows is named in the matching document, and the README links to them.

use std::fs;
use std::path::Path;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The keys of every `struct ...Section` / `...File` / `...Entry` / `...Table` in
/// src/config/file.rs: each `pub(super) NAME:` field, or the name of a `#[serde(rename = "..")]`
/// just above it. Returns `(struct, key)` pairs.
fn config_keys(src: &str) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    let mut current: Option<String> = None;
    let mut rename: Option<String> = None;
    for line in src.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("pub(super) struct ") {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            let wanted = ["Section", "File", "Entry", "Table"].iter().any(|s| name.ends_with(s));
            current = (wanted && rest.trim_end().ends_with('{')).then_some(name);
            rename = None;
            continue;
        }
        let Some(strukt) = &current else { continue };
        if t == "}" {
            current = None;
            continue;
        }
        if let Some(r) = t.strip_prefix("#[serde(rename = \"") {
            rename = r.split('"').next().map(str::to_owned);
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub(super) ") {
            if let Some((field, _)) = rest.split_once(':') {
                let key = rename.take().unwrap_or_else(|| field.trim().to_owned());
                keys.push((strukt.clone(), key));
            }
        }
    }
    keys
}

#[test]
fn every_config_key_is_documented() {
    let keys = config_keys(&read("src/config/file.rs"));
    let names: Vec<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
    // The parser must have seen the structs (a rename of the file's conventions would
    // otherwise pass silently), and the rename of `kind` to `type`.
    for expected in ["routes_dir", "certs_dir", "tls_insecure_skip_verify", "max_replay_body_bytes", "type"] {
        assert!(names.contains(&expected), "parser did not find `{expected}` in src/config/file.rs");
    }
    assert!(!names.contains(&"kind"), "`kind` is renamed to `type`");
    let doc = read("docs/configuration.md");
    let missing: Vec<String> = keys
        .iter()
        .filter(|(_, k)| !doc.contains(&format!("`{k}`")))
        .map(|(s, k)| format!("`{k}` (from {s})"))
        .collect();
    assert!(missing.is_empty(), "docs/configuration.md does not mention: {}", missing.join(", "));
}

/// Every string literal in `src` that starts with `prefix`, up to its closing quote.
fn literals_starting_with(src: &str, prefix: &str) -> Vec<String> {
    let needle = format!("\"{prefix}");
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find(&needle) {
        let after = &rest[i + 1..];
        let end = after.find('"').unwrap_or(after.len());
        out.push(after[..end].to_owned());
        rest = &after[end..];
    }
    out
}

#[test]
fn every_metric_is_documented() {
    let src = read("src/metrics/mod.rs");
    let names = literals_starting_with(&src, "switchyard_");
    assert!(names.len() >= 10, "found only {names:?} in src/metrics/mod.rs");
    let doc = read("docs/metrics.md");
    let missing: Vec<&String> = names.iter().filter(|n| !doc.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "docs/metrics.md does not mention: {missing:?}");
}

#[test]
fn every_admin_path_is_documented() {
    let src = read("src/admin/mod.rs");
    // The request match: from `match (req.method(), req.uri().path())` to the 404 fallback.
    let start = src.find("match (req.method(), req.uri().path())").expect("the admin request match");
    let body = &src[start..];
    let end = body.find("_ => text(").expect("the admin 404 arm");
    let mut paths: Vec<String> = literals_starting_with(&body[..end], "/")
        .into_iter()
        .filter(|p| p.len() > 1 && p[1..].chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .collect();
    paths.sort();
    paths.dedup();
    for expected in ["/healthz", "/ready", "/metrics", "/reload"] {
        assert!(paths.iter().any(|p| p == expected), "parser did not find {expected} in src/admin/mod.rs");
    }
    let doc = read("docs/admin-api.md");
    let missing: Vec<&String> = paths.iter().filter(|p| !doc.contains(&format!("`{p}`"))).collect();
    assert!(missing.is_empty(), "docs/admin-api.md does not mention: {missing:?}");
}

#[test]
fn readme_links_the_docs_and_nothing_points_outside() {
    let readme = read("README.md");
    for doc in ["docs/configuration.md", "docs/admin-api.md", "docs/metrics.md"] {
        assert!(readme.contains(&format!("]({doc}")), "README.md does not link to {doc}");
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut files = vec![("README.md".to_owned(), readme)];
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_file() {
            let text = fs::read_to_string(&path).unwrap_or_default();
            files.push((path.display().to_string(), text));
        }
    }
    for (name, text) in &files {
        // The outside contract is a file named SPEC.md; a reference to it names the file.
        for banned in ["SPEC.md", "SPEC "] {
            assert!(!text.contains(banned), "{name} mentions {banned:?}");
        }
    }
}

/// Source comments cite the docs in the repository, never section numbers of a contract that
/// a clone does not have.
#[test]
fn source_comments_cite_no_outside_contract() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "benches"] {
        walk(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "the walk found too few source files: {}", files.len());
    for path in files {
        let text = fs::read_to_string(&path).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            assert!(
                !line.contains("SPEC ") && !line.contains("SPEC.md"),
                "{}:{}: cites a contract outside the repository: {line}",
                path.display(),
                i + 1
            );
        }
    }
}
