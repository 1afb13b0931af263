//! The access log (docs/configuration.md, `[access_log]`): one JSON object per line per request.
//!
//! Records are handed to a dedicated writer thread over a bounded channel, so formatting and
//! writing never happen on a request thread (a record holds the request's values as they are;
//! they become text on the writer thread) and a slow disk cannot stall traffic: when the
//! channel is full the record is dropped and counted (and the count logged once a second).
//! The file is reopened on SIGUSR1 for log rotation.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method};
use serde::Serialize;

use crate::config::AccessLogConfig;
use crate::metrics::Name;
use crate::trace_context::TraceId;

/// Records in flight to the writer before new ones are dropped. At ~300 bytes a record this
/// bounds the queue to a few MiB.
const QUEUE: usize = 16_384;

/// One request, as written: one JSON object whose keys come in this order.
///
/// [`Record::write_json`] writes the line; the `Serialize` derive is its reference (the tests
/// check that both write the same bytes), kept because serde's output is the specification of
/// JSON we hold the hand-written writer to.
#[derive(Debug, Serialize)]
pub struct Record {
    /// RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "ser_ts")]
    pub ts: SystemTime,
    /// Listener name.
    pub listener: Name,
    /// Client IP.
    #[serde(serialize_with = "ser_display")]
    pub client: IpAddr,
    /// Method.
    #[serde(serialize_with = "ser_method")]
    pub method: Method,
    /// Host as sent (`null` when it is not visible ASCII).
    #[serde(serialize_with = "ser_host")]
    pub host: Option<HeaderValue>,
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
    #[serde(serialize_with = "ser_value")]
    pub request_id: HeaderValue,
    /// The W3C trace id (32 hex digits) of the `traceparent` forwarded (the client's, or the
    /// gateway's new one).
    #[serde(serialize_with = "ser_trace_id")]
    pub trace_id: TraceId,
    /// The gateway's REASON, if it made the response.
    pub error: Option<&'static str>,
}

/// The writer thread's cache of the timestamp's whole-second part (`YYYY-MM-DDTHH:MM:SS`):
/// records of one second share it, so the calendar arithmetic runs once a second.
#[derive(Debug, Default)]
struct Clock {
    secs: Option<u64>,
    prefix: String,
}

impl Clock {
    fn write(&mut self, out: &mut Vec<u8>, ts: SystemTime) {
        let since = ts.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        if self.secs != Some(since.as_secs()) {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs());
            self.prefix = humantime::format_rfc3339_seconds(whole).to_string();
            self.prefix.truncate(19); // drop the `Z`
            self.secs = Some(since.as_secs());
        }
        out.extend_from_slice(self.prefix.as_bytes());
        let ms = since.subsec_millis();
        out.extend_from_slice(&[
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    }
}

/// A JSON string, escaped as serde_json escapes it (`"`, `\\`, and control characters; the
/// short forms where JSON has them, else `\u00xx`).
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A float as serde_json writes it (its exponent form differs from other shortest-form
/// formatters'; non-finite values are `null`).
fn json_f64(out: &mut Vec<u8>, v: f64) {
    if serde_json::to_writer(&mut *out, &v).is_err() {
        out.extend_from_slice(b"null");
    }
}

fn json_int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

impl Record {
    /// The record as one JSON object (no newline), the same bytes serde_json writes for it.
    fn write_json(&self, out: &mut Vec<u8>, clock: &mut Clock) {
        out.extend_from_slice(b"{\"ts\":\"");
        clock.write(out, self.ts);
        out.extend_from_slice(b"\",\"listener\":");
        json_str(out, &self.listener);
        out.extend_from_slice(b",\"client\":\"");
        match self.client {
            IpAddr::V4(ip) => {
                let [a, b, c, d] = ip.octets();
                for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    json_int(out, octet);
                }
            }
            IpAddr::V6(ip) => {
                let _ = write!(out, "{ip}");
            }
        }
        out.extend_from_slice(b"\",\"method\":");
        json_str(out, self.method.as_str());
        out.extend_from_slice(b",\"host\":");
        json_opt_str(out, self.host.as_ref().and_then(|h| h.to_str().ok()));
        out.extend_from_slice(b",\"path\":");
        json_str(out, &self.path);
        out.extend_from_slice(b",\"protocol\":");
        json_str(out, self.protocol);
        out.extend_from_slice(b",\"status\":");
        json_int(out, self.status);
        out.extend_from_slice(b",\"route\":");
        json_opt_str(out, self.route.as_deref().map(String::as_str));
        out.extend_from_slice(b",\"upstream\":");
        json_opt_str(out, self.upstream.as_deref().map(String::as_str));
        out.extend_from_slice(b",\"endpoint\":");
        json_opt_str(out, self.endpoint.as_deref().map(String::as_str));
        out.extend_from_slice(b",\"attempts\":");
        json_int(out, self.attempts);
        out.extend_from_slice(b",\"duration_ms\":");
        json_f64(out, self.duration_ms);
        out.extend_from_slice(b",\"upstream_ms\":");
        match self.upstream_ms {
            Some(v) => json_f64(out, v),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"bytes_in\":");
        json_int(out, self.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        json_int(out, self.bytes_out);
        out.extend_from_slice(b",\"request_id\":");
        json_str(out, self.request_id.to_str().unwrap_or_default());
        out.extend_from_slice(b",\"trace_id\":");
        json_str(out, self.trace_id.as_str());
        out.extend_from_slice(b",\"error\":");
        json_opt_str(out, self.error);
        out.push(b'}');
    }
}

// The fields below are kept as the request had them (an address, a method, header values:
// copies or reference-count bumps) and turned into text here, on the writer thread.

fn ser_display<S: serde::Serializer>(v: &IpAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_method<S: serde::Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

fn ser_host<S: serde::Serializer>(h: &Option<HeaderValue>, s: S) -> Result<S::Ok, S::Error> {
    match h.as_ref().and_then(|h| h.to_str().ok()) {
        Some(h) => s.serialize_some(h),
        None => s.serialize_none(),
    }
}

fn ser_value<S: serde::Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.to_str().unwrap_or_default())
}

fn ser_trace_id<S: serde::Serializer>(v: &TraceId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
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
    progress: Arc<Progress>,
}

/// How far the writer got: records queued, and records written and flushed (or dropped), so
/// that [`AccessLog::flush`] can wait for what was queued before it.
#[derive(Debug, Default)]
struct Progress {
    queued: AtomicU64,
    done: std::sync::Mutex<u64>,
    advanced: std::sync::Condvar,
}

impl Progress {
    fn finished(&self, n: u64) {
        if n > 0 {
            *self.done.lock().unwrap_or_else(|p| p.into_inner()) += n;
            self.advanced.notify_all();
        }
    }
}

impl AccessLog {
    /// A log that writes nothing.
    pub fn disabled() -> Self {
        AccessLog { tx: None, dropped: Arc::default(), reopen: Arc::default(), progress: Arc::default() }
    }

    /// Start the writer thread for `cfg`. Fails if the file cannot be opened.
    pub fn start(cfg: &AccessLogConfig) -> io::Result<Self> {
        if !cfg.enabled {
            return Ok(Self::disabled());
        }
        let sink = Sink::open(cfg.path.clone())?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let log = AccessLog {
            tx: Some(tx),
            dropped: Arc::default(),
            reopen: Arc::default(),
            progress: Arc::default(),
        };
        let (dropped, reopen, progress) =
            (Arc::clone(&log.dropped), Arc::clone(&log.reopen), Arc::clone(&log.progress));
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, sink, dropped, reopen, progress))?;
        Ok(log)
    }

    /// Whether records are wanted (callers skip building them otherwise).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queue a record; never blocks.
    pub fn log(&self, rec: Record) {
        if let Some(tx) = &self.tx {
            match tx.try_send(rec) {
                Ok(()) => {
                    self.progress.queued.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Wait, at most `timeout`, until every record queued so far is written and flushed: the
    /// end of a drain, so that the process does not exit with lines still in the queue.
    /// Returns whether everything was written in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        let target = self.progress.queued.load(Ordering::Relaxed);
        let deadline = std::time::Instant::now() + timeout;
        let mut done = self.progress.done.lock().unwrap_or_else(|p| p.into_inner());
        while *done < target {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            done = match self.progress.advanced.wait_timeout(done, left) {
                Ok((d, _)) => d,
                Err(p) => p.into_inner().0,
            };
        }
        true
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

/// While records keep coming, the writer sleeps this long between drains of the queue instead
/// of blocking on it: a request thread then never has to wake it (no futex call per record),
/// and each drain is written with one `write`. Lines appear at most this late; when a drain
/// finds nothing the writer blocks until the next record, so an idle gateway never polls.
const BATCH: Duration = Duration::from_millis(10);

fn writer(
    rx: Receiver<Record>,
    mut sink: Sink,
    dropped: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
    progress: Arc<Progress>,
) {
    let mut line = Vec::with_capacity(512);
    let mut clock = Clock::default();
    let mut busy = false;
    let mut last_warn: Option<std::time::Instant> = None;
    loop {
        let first = if busy {
            std::thread::sleep(BATCH);
            rx.try_recv().ok()
        } else {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        if reopen.swap(false, Ordering::Relaxed) {
            let _ = sink.out.flush();
            match Sink::open(sink.path.clone()) {
                Ok(s) => sink = s,
                Err(e) => tracing::error!(error = %e, "cannot reopen the access log; keeping the old file"),
            }
        }
        // What was dropped since the last warning, at most once a second.
        if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            let n = dropped.swap(0, Ordering::Relaxed);
            if n > 0 {
                tracing::warn!(dropped = n, "access log writer fell behind; records were dropped");
                last_warn = Some(std::time::Instant::now());
            }
        }
        busy = first.is_some();
        let mut next = first;
        let mut written = 0;
        while let Some(rec) = next {
            written += 1;
            line.clear();
            rec.write_json(&mut line, &mut clock);
            line.push(b'\n');
            if let Err(e) = sink.out.write_all(&line) {
                tracing::error!(error = %e, "writing the access log failed");
            }
            next = match rx.try_recv() {
                Ok(r) => Some(r),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    let _ = sink.out.flush();
                    progress.finished(written);
                    return;
                }
            };
        }
        // The queue ran dry: what was drained goes out now.
        let _ = sink.out.flush();
        progress.finished(written);
    }
    let _ = sink.out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace_headers() -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        h
    }

    fn record(host: Option<HeaderValue>) -> Record {
        Record {
            ts: SystemTime::UNIX_EPOCH + Duration::from_millis(1_500),
            listener: Arc::new("web".into()),
            client: "2001:db8::1".parse().unwrap(),
            method: Method::PATCH,
            host,
            path: "/a?b".into(),
            protocol: "HTTP/1.1",
            status: 200,
            route: None,
            upstream: None,
            endpoint: None,
            attempts: 0,
            duration_ms: 1.25,
            upstream_ms: None,
            bytes_in: 3,
            bytes_out: 4,
            request_id: HeaderValue::from_static("req-1"),
            trace_id: crate::trace_context::TraceContext::from_headers(&trace_headers()).trace_id,
            error: None,
        }
    }

    #[test]
    fn a_record_is_written_as_text_on_the_writer_side() {
        let line = serde_json::to_string(&record(Some(HeaderValue::from_static("example.com")))).unwrap();
        assert_eq!(
            line,
            r#"{"ts":"1970-01-01T00:00:01.500Z","listener":"web","client":"2001:db8::1","method":"PATCH","host":"example.com","path":"/a?b","protocol":"HTTP/1.1","status":200,"route":null,"upstream":null,"endpoint":null,"attempts":0,"duration_ms":1.25,"upstream_ms":null,"bytes_in":3,"bytes_out":4,"request_id":"req-1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","error":null}"#
        );
        // A host that is not visible ASCII is logged as null, as before.
        let odd = HeaderValue::from_bytes(b"caf\xe9.example").unwrap();
        let line = serde_json::to_string(&record(Some(odd))).unwrap();
        assert!(line.contains(r#""host":null"#), "{line}");
        assert!(serde_json::to_string(&record(None)).unwrap().contains(r#""host":null"#));
    }

    #[test]
    fn the_hand_written_line_is_the_bytes_serde_json_writes() {
        let mut clock = Clock::default();
        let odd = [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "tab\tnl\ncr\r",
            "\u{1}\u{8}\u{c}\u{1f}\u{7f}",
            "café ✓",
            "/a b?c=%22",
        ];
        let mut n = 0;
        for (i, text) in odd.iter().enumerate() {
            for client in ["10.0.0.255", "0.0.0.0", "::1", "2001:db8::ff00:42:8329"] {
                let mut r = record(if i % 3 == 0 { None } else { HeaderValue::from_str(text).ok() });
                r.ts = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + 7 * n + i as u64);
                r.client = client.parse().unwrap();
                r.path = (*text).into();
                r.listener = Arc::new(text.to_string());
                r.route = (i % 2 == 0).then(|| Arc::new(text.to_string()));
                r.upstream = Some(Arc::new("u".into()));
                r.endpoint = (i % 2 == 1).then(|| Arc::new(format!("{text}:80")));
                r.upstream_ms = (i % 2 == 0).then_some(0.1 + 0.2);
                r.duration_ms = [1.0, 0.5, 1e-7, 123456.789, 1e21][i % 5];
                r.status = [200, 404, 503][i % 3];
                r.bytes_out = u64::MAX - i as u64;
                r.error = (i % 2 == 1).then_some("upstream_reset");
                r.trace_id = crate::trace_context::TraceContext::new_root().trace_id;
                let mut line = Vec::new();
                r.write_json(&mut line, &mut clock);
                assert_eq!(String::from_utf8(line).unwrap(), serde_json::to_string(&r).unwrap());
                n += 1;
            }
        }
    }

    #[test]
    fn the_writer_writes_every_record_in_order_in_bursts_and_alone() {
        let dir = std::env::temp_dir().join(format!("switchyard-access-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let sink = Sink::open(Some(path.clone())).unwrap();
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let writer =
            std::thread::spawn(move || writer(rx, sink, Arc::default(), Arc::default(), Arc::default()));
        let send = |n: u64| {
            let mut r = record(None);
            r.bytes_in = n;
            tx.send(r).unwrap();
        };
        // A burst (drained while the writer is busy), then one record on its own after the
        // writer went back to blocking, then another burst.
        (0..500).for_each(send);
        let wait_for = |n: usize| {
            for _ in 0..2_000 {
                if std::fs::read_to_string(&path).unwrap_or_default().lines().count() >= n {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("{n} lines were not written within 10 s");
        };
        wait_for(500);
        send(500);
        wait_for(501);
        (501..1000).for_each(send);
        drop(tx);
        writer.join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let got: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["bytes_in"].as_u64().unwrap())
            .collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flush_returns_once_every_queued_line_is_on_disk() {
        let dir = std::env::temp_dir().join(format!("switchyard-access-flush-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let log = AccessLog::start(&AccessLogConfig { enabled: true, path: Some(path.clone()) }).unwrap();
        for round in 0..3 {
            for _ in 0..300 {
                log.log(record(None));
            }
            // No waiting of our own: flush alone must make the lines readable.
            assert!(log.flush(Duration::from_secs(10)));
            let lines = std::fs::read_to_string(&path).unwrap().lines().count();
            assert_eq!(lines, 300 * (round + 1));
        }
        assert!(AccessLog::disabled().flush(Duration::ZERO), "nothing queued, nothing to wait for");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
