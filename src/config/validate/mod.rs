//! Turns the file structs (`file.rs`) into the runtime model (`model`), collecting every error
//! with its file, line and column.
//!
//! Validation never stops at the first problem: each file is checked on its own (a file with a
//! TOML syntax error, or a value of the wrong type, contributes that one error — serde stops
//! there), then the cross-file rules run (unique upstream and route names, every upstream a
//! route names exists). Errors come back sorted by file (load order), line and column, the way
//! rustc lists them. Positions come from the TOML parser's spans (`toml::de::Error::span`, or
//! the [`Spanned`] wrapper around each value), turned into 1-based line and column (counted in
//! characters) by a per-file table of line starts.
//!
//! One `Ctx` checks one file; its methods are spread over the submodules by what they check:
//! `units` (durations, sizes, integers and other scalars), `gateway`, `upstream`, `discovery`,
//! `route`, and `address` (host names, endpoints, Consul URLs). `diagnostics` turns spans into
//! lines and columns, and suggests names in "not defined" messages.
//!
//! [`Spanned`]: toml::Spanned

mod address;
mod diagnostics;
mod discovery;
mod fleet;
mod gateway;
mod route;
#[cfg(test)]
mod tests;
mod units;
mod upstream;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::file::{GatewayFile, RoutesFile};
use super::{ConfigError, ConfigErrors, GatewayConfig, RouteConfig, RouteSet, UpstreamConfig};
use diagnostics::{io_error, name_hint, routes_dir_label, Source};

// === public API ===

/// Load and validate `gateway.toml` at `path`.
///
/// Relative paths in it (`routes_dir`, `certs_dir`, `client_ca`, the access log) resolve against
/// the folder holding `path`.
pub fn load_gateway(path: &Path) -> Result<GatewayConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![io_error(path, "cannot read the config file", &e)]))?;
    let src = Source::new(path, &text);
    let mut cx = Ctx::new(&src);
    let file: GatewayFile = match toml::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            cx.toml_error(&e);
            return Err(ConfigErrors(cx.errors));
        }
    };
    let base = path.parent().unwrap_or_else(|| Path::new(""));
    match cx.gateway(file, base, path) {
        Some(g) if cx.errors.is_empty() => Ok(g),
        _ => {
            cx.errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(cx.errors))
        }
    }
}

/// Load and validate every `*.toml` in `dir` (not recursive), in file-name order.
///
/// `dir` is used as given (the caller resolves it against `gateway.toml`'s folder), so error
/// paths read `dir/FILE.toml`. A file that cannot be read is an error at its line 1, column 1;
/// the others are still checked.
///
/// `base` is the folder relative paths in route files (an `[upstream.tls] ca`) resolve
/// against: the folder of `gateway.toml`, as for every other relative path.
pub fn load_routes(dir: &Path, base: &Path) -> Result<RouteSet, ConfigErrors> {
    let (sources, read_errors) = read_route_dir(dir)?;
    validate_routes(sources, read_errors, Some(base))
}

/// The files of a routes folder, as `(path, text)`, and the errors of those that could not be
/// read.
pub type RouteDir = (Vec<(PathBuf, String)>, Vec<ConfigError>);

/// Every `*.toml` in `dir` (not recursive, symlinks followed), as `(path, text)` in file-name
/// order, with an error for each file that could not be read. Fails when `dir` cannot be
/// listed.
pub fn read_route_dir(dir: &Path) -> Result<RouteDir, ConfigErrors> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigErrors(vec![io_error(dir, "cannot read the routes directory", &e)]))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| ConfigErrors(vec![io_error(dir, "cannot read the routes directory", &e)]))?;
        let path = entry.path();
        let is_toml = path.extension().is_some_and(|x| x == "toml");
        // `metadata` follows symlinks, so a linked file counts and a linked folder does not.
        if is_toml && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            paths.push(path);
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));

    let mut sources = Vec::with_capacity(paths.len());
    let mut read_errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push((path, text)),
            Err(e) => read_errors.push(io_error(&path, "cannot read the route file", &e)),
        }
    }
    Ok((sources, read_errors))
}

/// Validate route files already in memory, as `(path, contents)` in load order.
///
/// This is [`load_routes`] without the file system (benches, tests and fuzzing use it). With
/// no `gateway.toml` to go by, a relative `ca` in `[upstream.tls]` resolves against the folder
/// of the route file that names it.
pub fn load_routes_from_sources(files: Vec<(PathBuf, String)>) -> Result<RouteSet, ConfigErrors> {
    validate_routes(files, Vec::new(), None)
}

/// Validate route files held in memory, as `(name, contents)` in load order, exactly as
/// [`load_routes`] validates the files of a folder: fleet mode's route files come from
/// ZooKeeper or Consul, and relative paths in them resolve against `base` (the folder of
/// `gateway.toml`).
pub fn validate_route_files(files: Vec<(PathBuf, String)>, base: &Path) -> Result<RouteSet, ConfigErrors> {
    validate_routes(files, Vec::new(), Some(base))
}

/// Resolve `p` against `base` (the folder of `gateway.toml`) unless it is absolute.
fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The checks of one file, and the errors they found.
#[derive(Debug)]
struct Ctx<'s, 'a> {
    src: &'s Source<'a>,
    errors: Vec<ConfigError>,
}

impl<'s, 'a> Ctx<'s, 'a> {
    fn new(src: &'s Source<'a>) -> Self {
        Ctx { src, errors: Vec::new() }
    }

    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let e = self.src.error(span, message.into());
        self.errors.push(e);
    }

    /// For a table whose keys depend on its `type` (`discovery`, `routes_source`): an error at
    /// each key `present` (with its span, if written) that `allowed` does not list, e.g.
    /// "`servers` is not a consul discovery key; consul takes: address, …".
    fn only_keys(
        &mut self,
        present: &[(&str, Option<Range<usize>>)],
        allowed: &[&str],
        what: &str,
        kind: &str,
    ) {
        for (key, span) in present {
            if let Some(span) = span.clone().filter(|_| !allowed.contains(key)) {
                self.err(span, format!("`{key}` is not a {what} key; {kind} takes: {}", allowed.join(", ")));
            }
        }
    }
}

// === impl routes ===

/// What one route file contributes to the cross-file checks.
#[derive(Debug, Default)]
struct FileOutput {
    /// Every upstream name with its span, valid or not (so a broken upstream is not also
    /// reported as missing).
    upstream_names: Vec<(String, Range<usize>)>,
    /// Every route name with its span.
    route_names: Vec<(String, Range<usize>)>,
    /// Upstream names used by routes: (route, upstream, span of the reference).
    references: Vec<(String, String, Range<usize>)>,
    upstreams: Vec<UpstreamConfig>,
    routes: Vec<RouteConfig>,
}

/// Validate every file, then the cross-file rules. `early` holds problems found before (files
/// that could not be read); with any, the "upstream not defined" check is skipped, since the
/// missing file may define it.
fn validate_routes(
    files: Vec<(PathBuf, String)>,
    mut early: Vec<ConfigError>,
    base: Option<&Path>,
) -> Result<RouteSet, ConfigErrors> {
    let sources: Vec<Source<'_>> = files.iter().map(|(p, t)| Source::new(p, t)).collect();
    // (file index, error) so the final list can be sorted in load order.
    let mut errors: Vec<(usize, ConfigError)> = Vec::new();
    let mut outputs: Vec<FileOutput> = Vec::with_capacity(sources.len());
    let mut complete = early.is_empty();

    for (i, src) in sources.iter().enumerate() {
        let mut cx = Ctx::new(src);
        let out = match toml::from_str::<RoutesFile>(src.text) {
            Ok(f) => cx.routes_file(f, base),
            Err(e) => {
                cx.toml_error(&e);
                complete = false;
                FileOutput::default()
            }
        };
        errors.extend(cx.errors.into_iter().map(|e| (i, e)));
        outputs.push(out);
    }

    // Unique upstream names.
    let mut upstream_at: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, out) in outputs.iter().enumerate() {
        for (name, span) in &out.upstream_names {
            let line = sources[i].locate(span.start).0;
            if let Some(&(fi, fl)) = upstream_at.get(name.as_str()) {
                let msg = format!(
                    "duplicate upstream name {name:?} (first defined at {}:{fl}); upstream names \
                     must be unique across all route files",
                    sources[fi].path.display()
                );
                errors.push((i, sources[i].error(span.clone(), msg)));
            } else {
                upstream_at.insert(name, (i, line));
            }
        }
    }
    // Unique route names.
    let mut route_at: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, out) in outputs.iter().enumerate() {
        for (name, span) in &out.route_names {
            let line = sources[i].locate(span.start).0;
            if let Some(&(fi, fl)) = route_at.get(name.as_str()) {
                let msg = format!(
                    "duplicate route name {name:?} (first defined at {}:{fl}); route names must \
                     be unique across all route files",
                    sources[fi].path.display()
                );
                errors.push((i, sources[i].error(span.clone(), msg)));
            } else {
                route_at.insert(name, (i, line));
            }
        }
    }
    // Every upstream a route names exists.
    if complete {
        let dir = routes_dir_label(&files);
        let mut defined: Vec<&str> = upstream_at.keys().copied().collect();
        defined.sort_unstable();
        for (i, out) in outputs.iter().enumerate() {
            for (route, upstream, span) in &out.references {
                if upstream_at.contains_key(upstream.as_str()) {
                    continue;
                }
                let mut msg = format!(
                    "route {route:?} names upstream {upstream:?}, which is not defined in any \
                     file under {dir}"
                );
                msg.push_str(&name_hint(upstream, &defined));
                errors.push((i, sources[i].error(span.clone(), msg)));
            }
        }
    }

    if !errors.is_empty() || !early.is_empty() {
        errors.sort_by(|(fa, a), (fb, b)| (fa, a.line, a.column).cmp(&(fb, b.line, b.column)));
        early.extend(errors.into_iter().map(|(_, e)| e));
        return Err(ConfigErrors(early));
    }

    let mut set =
        RouteSet { files: Vec::with_capacity(files.len()), upstreams: Vec::new(), routes: Vec::new() };
    for out in outputs {
        set.upstreams.extend(out.upstreams);
        set.routes.extend(out.routes);
    }
    drop(sources);
    set.files = files.into_iter().map(|(p, _)| p).collect();
    Ok(set)
}

impl Ctx<'_, '_> {
    fn routes_file(&mut self, f: RoutesFile, base: Option<&Path>) -> FileOutput {
        let mut out = FileOutput::default();
        // A relative `ca` resolves against gateway.toml's folder (or, without one, the file's).
        let base = base
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.src.path.parent().unwrap_or_else(|| Path::new("")).to_path_buf());
        for u in &f.upstream {
            out.upstream_names.push((u.name.get_ref().clone(), u.name.span()));
            let before = self.errors.len();
            let cfg = self.upstream(u, &base);
            if let (Some(cfg), true) = (cfg, self.errors.len() == before) {
                out.upstreams.push(cfg);
            }
        }
        for r in &f.route {
            out.route_names.push((r.name.get_ref().clone(), r.name.span()));
            let before = self.errors.len();
            let cfg = self.route(r, &mut out.references);
            if let (Some(cfg), true) = (cfg, self.errors.len() == before) {
                out.routes.push(cfg);
            }
        }
        out
    }
}
