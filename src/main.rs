//! The `switchyard` command line (README, "Start it"): run the gateway, `check` a config, or run the `echo`
//! upstream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// mimalloc: a proxy allocates and frees many small, short-lived objects per request (header
/// maps, futures, body frames); mimalloc's thread-local free lists serve them at a fraction of
/// glibc malloc's cost (`bench/profile.sh cpu` shows the allocator's share of a request). The
/// wrapper crate is vendored (vendor/mimalloc/SWITCHYARD-PATCHES.md) so that word-aligned
/// requests take mimalloc's plain calls.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "switchyard", version, about = "An HTTP reverse-proxy gateway")]
struct Cli {
    /// The gateway config file.
    #[arg(long, global = true, default_value = "gateway.toml")]
    config: PathBuf,
    /// Log format on stderr (level from SWITCHYARD_LOG, EnvFilter syntax, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load and validate the config, every route file and every certificate; bind nothing.
    Check,
    /// A tiny upstream that answers every request with a JSON description of it.
    Echo {
        /// Address to listen on, e.g. 127.0.0.1:9001.
        #[arg(long)]
        listen: SocketAddr,
        /// Name reported in every answer.
        #[arg(long, default_value = "echo")]
        name: String,
    },
    /// Fleet mode: publish the route files to the routes_source, or pull them from it.
    Routes {
        #[command(subcommand)]
        action: RoutesAction,
    },
    /// Fleet mode: list the gateways of the fleet with the version they serve and their last error.
    Fleet {
        /// Print JSON (`{"published_version", "members": [...]}`) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RoutesAction {
    /// Validate DIR as `check` would and publish it as the next version (exit 1 invalid, 2 the
    /// source failed, 3 --if-version did not match).
    Publish {
        /// Publish only if the published version is N (0: nothing published yet).
        #[arg(long, value_name = "N")]
        if_version: Option<u64>,
        /// The folder of route files.
        dir: PathBuf,
    },
    /// Write the published set into DIR (its *.toml files become exactly the set).
    Pull {
        /// The folder to write.
        dir: PathBuf,
    },
}

/// Logs at `default` unless `SWITCHYARD_LOG` says otherwise.
fn init_logs(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// The main runtime: single-threaded. It serves one copy of every listener and runs the control
/// plane (admin API, reloads, discovery, health checks); `Gateway::start_with` adds one more
/// single-threaded serving runtime per extra thread (`SWITCHYARD_WORKER_THREADS`, default one
/// per CPU). Measured against tokio's work-stealing runtime with the same thread count:
/// +9–12 % requests per CPU-second (bench/README.md).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn check(path: &std::path::Path) -> ExitCode {
    let errors = switchyard::check(path);
    if errors.is_empty() {
        println!("{}: ok", path.display());
        ExitCode::SUCCESS
    } else {
        for e in &errors {
            eprintln!("{e}");
        }
        ExitCode::FAILURE
    }
}

/// The config for a fleet command, or the exit status after saying why there is none.
fn fleet_config(path: &std::path::Path) -> Result<switchyard::config::GatewayConfig, ExitCode> {
    switchyard::config::load_gateway(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::FAILURE
    })
}

fn failed(command: &str, e: &switchyard::CommandError) -> ExitCode {
    match e {
        switchyard::CommandError::Invalid(_) => eprintln!("{e}"),
        switchyard::CommandError::Mismatch(_) => {
            eprintln!("switchyard {command}: {e}; nothing was published")
        }
        switchyard::CommandError::Failed(_) => eprintln!("switchyard {command}: {e}"),
    }
    ExitCode::from(e.exit_code())
}

fn routes(config: &std::path::Path, action: RoutesAction) -> ExitCode {
    let cfg = match fleet_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match action {
        RoutesAction::Publish { if_version, dir } => match switchyard::publish_routes(&cfg, &dir, if_version)
        {
            Ok(v) => {
                eprintln!("switchyard routes publish: published {} as version {v}", dir.display());
                println!("{v}");
                ExitCode::SUCCESS
            }
            Err(e) => failed("routes publish", &e),
        },
        RoutesAction::Pull { dir } => match switchyard::pull_routes(&cfg, &dir) {
            Ok(p) => {
                for f in &p.removed {
                    eprintln!("removed {} (not in the published set)", f.display());
                }
                eprintln!(
                    "switchyard routes pull: wrote {} files of version {} into {}",
                    p.written.len(),
                    p.version,
                    dir.display()
                );
                println!("{}", p.version);
                ExitCode::SUCCESS
            }
            Err(e) => failed("routes pull", &e),
        },
    }
}

fn fleet(config: &std::path::Path, json: bool) -> ExitCode {
    let cfg = match fleet_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let status = match switchyard::fleet_status(&cfg) {
        Ok(s) => s,
        Err(e) => return failed("fleet", &e),
    };
    if json {
        let v = serde_json::json!({"published_version": status.published_version, "members": status.members});
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    let published = status.published_version.map_or("none".to_owned(), |v| v.to_string());
    println!("published version: {published}; {} members", status.members.len());
    println!("{:<32} {:<20} {:>7}  {:<22} {:<21} LAST ERROR", "ID", "HOSTNAME", "ROUTES", "ADMIN", "STARTED");
    for m in &status.members {
        let s = |k: &str| m[k].as_str().unwrap_or("-").to_owned();
        let version = m["routes_version"].as_u64().map_or("-".to_owned(), |v| v.to_string());
        println!(
            "{:<32} {:<20} {:>7}  {:<22} {:<21} {}",
            s("id"),
            s("hostname"),
            version,
            s("admin"),
            s("started_at"),
            m["last_error"].as_str().unwrap_or("none")
        );
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The one-shot commands print their result; the client libraries' session chatter (a
    // ZooKeeper reconnect, say) is not part of it.
    let default = match cli.command {
        Some(Command::Routes { .. } | Command::Fleet { .. } | Command::Check) => {
            "warn,zookeeper_client=error"
        }
        _ => "info",
    };
    init_logs(cli.log_format, default);
    match cli.command {
        Some(Command::Check) => check(&cli.config),
        Some(Command::Routes { action }) => routes(&cli.config, action),
        Some(Command::Fleet { json }) => fleet(&cli.config, json),
        Some(Command::Echo { listen, name }) => {
            let r = runtime().and_then(|rt| rt.block_on(switchyard::echo::run(listen, name)));
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard echo: cannot listen on {listen}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let cfg = match switchyard::config::load_gateway(&cli.config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!(
                        "switchyard: invalid config; run `switchyard check --config {}` after fixing it",
                        cli.config.display()
                    );
                    return ExitCode::FAILURE;
                }
            };
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("switchyard: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(switchyard::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The global allocator (vendor/mimalloc, patched to take mimalloc's plain calls for word
    /// alignment and less) gives every block the alignment its type asks for, at every size a
    /// request's objects come in, fresh, zeroed and grown.
    #[test]
    fn the_allocator_aligns_every_block_as_asked() {
        #[derive(Clone, Copy)]
        #[repr(align(16))]
        struct A16(#[allow(dead_code)] u8);
        #[derive(Clone, Copy)]
        #[repr(align(64))]
        struct A64(#[allow(dead_code)] u8);
        #[derive(Clone, Copy)]
        #[repr(align(4096))]
        struct A4096(#[allow(dead_code)] u8);

        fn check<T: Copy>(x: T) {
            let align = std::mem::align_of::<T>();
            let mut held = Vec::new();
            for n in (1..=70).chain([100, 500, 1000, 5000]) {
                let mut v: Vec<T> = vec![x; n];
                assert_eq!(v.as_ptr() as usize % align, 0, "{n} of align {align}");
                v.extend(std::iter::repeat_n(x, n * 2 + 1)); // grown in place or moved
                assert_eq!(v.as_ptr() as usize % align, 0, "{n} of align {align}, grown");
                let zeroed: Vec<u64> = vec![0; n];
                assert!(zeroed.iter().all(|&z| z == 0));
                held.push(v);
                held.push(Vec::with_capacity(n));
            }
            assert!(held.iter().all(|v| v.as_ptr() as usize % align == 0));
        }
        check(1u8);
        check(1u16);
        check(1u32);
        check(1u64);
        check(1u128);
        check(A16(1));
        check(A64(1));
        check(A4096(1));
        check([7u8; 3]);
        check([7u64; 3]);
    }
}
