//! The shape of the source tree, checked so that it cannot drift (docs/architecture.md):
//!
//! - imports between the top-level modules run one way, down the layers below;
//! - no cycle between the submodules of one module;
//! - no source file over 600 lines, test modules aside (`tests.rs` files and the
//!   `#[cfg(test)] mod tests` at the end of a file).
//!
//! Test code is exempt from the import rules: a unit test may build whatever it needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, from the top down. A module may import only modules of a lower layer;
/// modules of one layer do not import each other.
const LAYERS: &[&[&str]] = &[
    &["lib", "main"],
    &["admin", "server"],
    &["fleet"],
    &["snapshot"],
    &["router", "stack"],
    &["balance"],
    &["health", "discovery", "resilience"],
    &["proxy"],
    &["tls", "access_log", "reply"],
    &["body", "context", "echo"],
    &["error", "config", "metrics", "backoff", "trace_context"],
    &["clock"],
];

/// The longest a source file may be, test modules aside.
const MAX_LINES: usize = 600;

struct File {
    path: PathBuf,
    /// Its module path, e.g. `["balance", "upstream"]`; `["lib"]` for src/lib.rs.
    module: Vec<String>,
    /// Its text up to its test module, without comments.
    code: String,
}

fn sources() -> Vec<File> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|m| m == "tests") || module.iter().any(|m| m == "tests") {
                continue; // a test module in its own file
            }
            if module.len() > 1 && module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            let code: String =
                code.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
            out.push(File { path, module, code });
        }
    }
    out
}

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer of tests/layout.rs: add it"))
}

/// Every `crate::a` / `crate::a::b` path in `code`, as (a, Some(b)).
fn crate_paths(code: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + 7..];
        let ident =
            |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
        let a = ident(rest);
        let after = &rest[a.len()..];
        let b = after.strip_prefix("::").map(ident).filter(|b| !b.is_empty());
        out.push((a, b));
    }
    out
}

#[test]
fn imports_run_down_the_layers() {
    let mut wrong = BTreeSet::new();
    for f in sources() {
        let from = f.module[0].as_str();
        let from_layer = layer_of(from);
        for (to, _) in crate_paths(&f.code) {
            if to == from || !to.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                continue;
            }
            let to_layer = layer_of(&to);
            if to_layer <= from_layer {
                wrong.insert(format!(
                    "{} ({from}, layer {from_layer}) uses {to} (layer {to_layer})",
                    f.path.display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn no_cycle_between_sibling_submodules() {
    let files = sources();
    let known: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    // Edges between submodules of one top-level module (a::x -> a::y), from `crate::a::y`,
    // `super::y` and `self::y` paths; the parent (`a` itself) is left out: it declares its
    // children, and children reading the parent's items is the module tree, not a cycle.
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for f in &files {
        if f.module.len() < 2 {
            continue;
        }
        let top = &f.module[0];
        let mut targets = Vec::new();
        for (a, b) in crate_paths(&f.code) {
            if &a == top {
                if let Some(b) = b {
                    targets.push(vec![a, b]);
                }
            }
        }
        for prefix in ["super::", "self::"] {
            for part in f.code.split(prefix).skip(1) {
                let name: String =
                    part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let mut t = f.module[..f.module.len() - 1].to_vec();
                if prefix == "self::" {
                    t = f.module.clone();
                }
                t.push(name);
                targets.push(t);
            }
        }
        for t in targets {
            if t.len() == 2 && known.contains(&t) && t != f.module && t[0] == *top {
                edges.entry(f.module[..2].to_vec()).or_default().insert(t);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        path: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        state.insert(n.clone(), 1);
        path.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m) {
                Some(1) => {
                    let i = path.iter().position(|p| p == m).unwrap();
                    let mut cycle = path[i..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, edges, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n) {
            if let Some(c) = visit(n, &edges, &mut state, &mut Vec::new()) {
                panic!("import cycle: {}", c.iter().map(|m| m.join("::")).collect::<Vec<_>>().join(" -> "));
            }
        }
    }
}

#[test]
fn no_source_file_is_over_the_limit() {
    let mut long = Vec::new();
    for f in sources() {
        let text = std::fs::read_to_string(&f.path).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let n = code.lines().count();
        if n > MAX_LINES {
            long.push(format!("{}: {n} lines", f.path.display()));
        }
    }
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines (move tests to a tests.rs, or split by what it holds):\n{}",
        long.join("\n")
    );
}
