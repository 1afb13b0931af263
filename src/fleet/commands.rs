//! The fleet's command line: `switchyard routes publish`, `switchyard routes pull`,
//! `switchyard fleet`, and what `switchyard check` reads from the source.
//!
//! Each runs on a small runtime of its own (the command line has none), bounded in time.

use std::path::{Path, PathBuf};

use super::{is_route_file_name, Member, PublishError, Store};
use crate::config::{self, ConfigError, ConfigErrors, GatewayConfig, RouteSet};

/// Why a command failed, with the exit status it maps to.
#[derive(Debug)]
pub enum CommandError {
    /// The configuration or the set is invalid (exit 1): each error as `path:line:column: message`.
    Invalid(Vec<ConfigError>),
    /// `--if-version` did not match (exit 3): the current version (`None`: nothing published).
    Mismatch(Option<u64>),
    /// The source could not be reached, or refused (exit 2).
    Failed(String),
}

impl CommandError {
    /// The process exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Invalid(_) => 1,
            CommandError::Failed(_) => 2,
            CommandError::Mismatch(_) => 3,
        }
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Invalid(errs) => write!(f, "{}", ConfigErrors(errs.clone())),
            CommandError::Mismatch(None) => f.write_str("nothing is published yet (that is version 0)"),
            CommandError::Mismatch(Some(v)) => write!(f, "the published version is {v}"),
            CommandError::Failed(m) => f.write_str(m),
        }
    }
}

/// The members of a fleet, with the published version.
#[derive(Debug)]
pub struct FleetStatus {
    /// The published version (`None`: nothing published yet).
    pub published_version: Option<u64>,
    /// The members' records, as JSON objects (`id`, `hostname`, `listeners`, `admin`,
    /// `routes_version`, `last_error`, `started_at`), by id.
    pub members: Vec<serde_json::Value>,
}

fn run<T>(
    f: impl std::future::Future<Output = Result<T, CommandError>> + Send + 'static,
) -> Result<T, CommandError>
where
    T: Send + 'static,
{
    // A thread of its own: callers may already be inside a runtime (tests, `check` from a
    // running gateway's code), where a nested `block_on` would panic.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CommandError::Failed(format!("cannot start a runtime: {e}")))?;
        rt.block_on(f)
    })
    .join()
    .unwrap_or_else(|_| Err(CommandError::Failed("the command panicked".into())))
}

fn store(cfg: &GatewayConfig) -> Result<Store, CommandError> {
    let src = cfg.routes_source.as_ref().ok_or_else(|| {
        CommandError::Invalid(vec![ConfigError {
            file: cfg.path.clone(),
            line: 1,
            column: 1,
            message: "[gateway] has no routes_source: fleet commands need one (see docs/fleet.md)".into(),
        }])
    })?;
    Store::new(src).map_err(CommandError::Failed)
}

/// Validate the route files in `dir` as `check` would and publish them as the next version;
/// with `if_version`, only if the current version is that one (0: nothing published yet).
pub fn publish(cfg: &GatewayConfig, dir: &Path, if_version: Option<u64>) -> Result<u64, CommandError> {
    let store = store(cfg)?;
    let (files, mut errors) = config::read_route_dir(dir).map_err(|e| CommandError::Invalid(e.0))?;
    for (path, _) in &files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !is_route_file_name(&name) {
            errors.push(ConfigError {
                file: path.clone(),
                line: 1,
                column: 1,
                message: "this file name cannot be published: a route file is a plain `NAME.toml` (no leading dot, no control characters)".into(),
            });
        }
    }
    match config::validate_route_files(files.clone(), cfg.base_dir()) {
        Ok(set) => errors.extend(crate::tls::route_set_cas(&set)),
        Err(e) => errors.extend(e.0),
    }
    if !errors.is_empty() {
        return Err(CommandError::Invalid(errors));
    }
    let named: Vec<(String, String)> = files
        .into_iter()
        .map(|(p, t)| (p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), t))
        .collect();
    run(async move {
        store.publish(&named, if_version).await.map_err(|e| match e {
            PublishError::Mismatch(v) => CommandError::Mismatch(v),
            PublishError::Failed(m) => CommandError::Failed(m),
        })
    })
}

/// What `routes pull` did.
#[derive(Debug)]
pub struct Pulled {
    /// The version written.
    pub version: u64,
    /// The files written.
    pub written: Vec<PathBuf>,
    /// `*.toml` files of `dir` that are not in the set, removed so that `dir` is the set.
    pub removed: Vec<PathBuf>,
}

/// Write the published set into `dir` (created if missing): afterwards its `*.toml` files are
/// exactly the set.
pub fn pull(cfg: &GatewayConfig, dir: &Path) -> Result<Pulled, CommandError> {
    let store = store(cfg)?;
    let published = run(async move { store.read().await.map_err(CommandError::Failed) })?
        .ok_or_else(|| CommandError::Failed("nothing is published yet".into()))?;
    let io = |what: &str, p: &Path, e: std::io::Error| {
        CommandError::Failed(format!("cannot {what} {}: {e}", p.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let mut written = Vec::new();
    for (name, text) in &published.files {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.pull"));
        std::fs::write(&tmp, text).map_err(|e| io("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("write", &path, e))?;
        written.push(path);
    }
    let (present, _) = config::read_route_dir(dir).map_err(|e| CommandError::Invalid(e.0))?;
    let mut removed = Vec::new();
    for (path, _) in present {
        if !written.contains(&path) {
            std::fs::remove_file(&path).map_err(|e| io("remove", &path, e))?;
            removed.push(path);
        }
    }
    Ok(Pulled { version: published.version, written, removed })
}

/// The fleet's members and published version.
pub fn status(cfg: &GatewayConfig) -> Result<FleetStatus, CommandError> {
    let store = store(cfg)?;
    run(async move {
        let published = store.read().await.map_err(CommandError::Failed)?.map(|p| p.version);
        let members = store.members().await.map_err(CommandError::Failed)?;
        let members = members.iter().filter_map(|m: &Member| serde_json::to_value(m).ok()).collect();
        Ok(FleetStatus { published_version: published, members })
    })
}

/// The published set, validated (`check` with a `routes_source`); the source's failure or
/// an empty source is an error.
pub(crate) fn published_set(cfg: &GatewayConfig) -> Result<RouteSet, ConfigErrors> {
    let src = cfg.routes_source.clone().ok_or_else(|| ConfigErrors(Vec::new()))?;
    let whole = |message: String| {
        ConfigErrors(vec![ConfigError { file: cfg.path.clone(), line: 1, column: 1, message }])
    };
    let store = Store::new(&src).map_err(whole)?;
    let read = run(async move { store.read().await.map_err(CommandError::Failed) });
    match read {
        Ok(Some(p)) => config::validate_route_files(super::held(&src, &p), cfg.base_dir()),
        Ok(None) => Err(whole(format!(
            "routes_source: nothing is published at {} yet; publish with `switchyard routes publish DIR`",
            src.describe()
        ))),
        Err(e) => Err(whole(format!("routes_source: cannot read the routes from {}: {e}", src.describe()))),
    }
}
