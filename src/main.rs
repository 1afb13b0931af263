//! The `switchyard` command line (README, "Start it"): run the gateway, `check` a config, or run the `echo`
//! upstream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// mimalloc: a proxy allocates and frees many small, short-lived objects per request (header
/// maps, futures, body frames); mimalloc's thread-local free lists serve them at a fraction of
/// glibc malloc's cost (`bench/profile.sh cpu` shows the allocator's share of a request).
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
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match cli.command {
        Some(Command::Check) => check(&cli.config),
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
