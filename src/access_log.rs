//! The access log (docs/configuration.md, `[access_log]`): one JSON object per line per request.
//!
//! Records are handed to a dedicated writer thread over a bounded channel, so formatting and
//! writing never happen on a request thread and a slow disk cannot stall traffic: when the
//! channel is full the record is dropped and counted (and the count logged once a second).
//! The file is reopened on SIGUSR1 for log rotation.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::AccessLogConfig;
use crate::metrics::Name;

/// Records in flight to the writer before new ones are dropped. At ~300 bytes a record this
/// bounds the queue to a few MiB.
const QUEUE: usize = 16_384;

/// One request, as written.
#[derive(Debug, Serialize)]
pub struct Record {
    /// RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "ser_ts")]
    pub ts: SystemTime,
    /// Listener name.
    pub listener: Name,
    /// Client IP.
    pub client: String,
    /// Method.
    pub method: String,
    /// Host as sent.
    pub host: Option<String>,
    /// Path.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// Status sent.
    pub status: u16,
    /// Route name.
    pub route: Option<Name>,
    /// Upstream name.
    pub upstream: Option<Name>,
    /// Endpoint of the last attempt.
    pub endpoint: Option<Name>,
    /// Attempts (0 when the gateway answered itself).
    pub attempts: u32,
    /// Whole request, ms.
    pub duration_ms: f64,
    /// Upstream time to response head, ms.
    pub upstream_ms: Option<f64>,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Request id.
    pub request_id: String,
    /// The gateway's REASON, if it made the response.
    pub error: Option<&'static str>,
}

fn ser_ts<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// The sending side; cheap to clone.
#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: Option<SyncSender<Record>>,
    dropped: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// A log that writes nothing.
    pub fn disabled() -> Self {
        AccessLog { tx: None, dropped: Arc::default(), reopen: Arc::default() }
    }

    /// Start the writer thread for `cfg`. Fails if the file cannot be opened.
    pub fn start(cfg: &AccessLogConfig) -> io::Result<Self> {
        if !cfg.enabled {
            return Ok(Self::disabled());
        }
        let sink = Sink::open(cfg.path.clone())?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let log = AccessLog { tx: Some(tx), dropped: Arc::default(), reopen: Arc::default() };
        let (dropped, reopen) = (Arc::clone(&log.dropped), Arc::clone(&log.reopen));
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, sink, dropped, reopen))?;
        Ok(log)
    }

    /// Whether records are wanted (callers skip building them otherwise).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queue a record; never blocks.
    pub fn log(&self, rec: Record) {
        if let Some(tx) = &self.tx {
            if let Err(TrySendError::Full(_)) = tx.try_send(rec) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Ask the writer to reopen its file (SIGUSR1).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }
}

struct Sink {
    path: Option<PathBuf>,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl Sink {
    fn open(path: Option<PathBuf>) -> io::Result<Sink> {
        let w: Box<dyn Write + Send> = match &path {
            None => Box::new(io::stdout()),
            Some(p) => Box::new(open_append(p)?),
        };
        Ok(Sink { path, out: BufWriter::with_capacity(64 * 1024, w) })
    }
}

fn open_append(p: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

fn writer(rx: Receiver<Record>, mut sink: Sink, dropped: Arc<AtomicU64>, reopen: Arc<AtomicBool>) {
    let mut line = Vec::with_capacity(512);
    loop {
        // Flush whenever the queue runs dry, so lines appear promptly at low rates.
        let rec = match rx.try_recv() {
            Ok(r) => Some(r),
            Err(_) => {
                let _ = sink.out.flush();
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(r) => Some(r),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        if reopen.swap(false, Ordering::Relaxed) {
            let _ = sink.out.flush();
            match Sink::open(sink.path.clone()) {
                Ok(s) => sink = s,
                Err(e) => tracing::error!(error = %e, "cannot reopen the access log; keeping the old file"),
            }
        }
        let n = dropped.swap(0, Ordering::Relaxed);
        if n > 0 {
            tracing::warn!(dropped = n, "access log writer fell behind; records were dropped");
        }
        if let Some(rec) = rec {
            line.clear();
            if serde_json::to_writer(&mut line, &rec).is_ok() {
                line.push(b'\n');
                if let Err(e) = sink.out.write_all(&line) {
                    tracing::error!(error = %e, "writing the access log failed");
                }
            }
        }
    }
    let _ = sink.out.flush();
}
