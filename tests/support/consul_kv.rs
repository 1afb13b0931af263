//! The KV store, transactions and sessions of the Consul double (consul_double.rs), written
//! from Consul's API documentation (KV Store, Transactions, Session, Blocking Queries) and,
//! where the documentation leaves a detail open, from how Consul's server behaves:
//!
//! - `GET /v1/kv/<key>`: `[{CreateIndex, ModifyIndex, LockIndex, Key, Flags, Value, Session}]`
//!   (`Value` base64, null when empty; `Session` only while the key is locked), 404 when
//!   missing. `?recurse`: the key is a prefix (an empty one lists everything), entries in key
//!   order. `?keys`: key names only (implies recurse); with `separator`, each name is cut after
//!   the first separator past the prefix and de-duplicated; 404 for a non-empty prefix without
//!   keys, `[]` for the empty one. `?raw`: the value alone, `text/plain`. Every answer, a 404
//!   too, carries `X-Consul-Index` computed as Consul's server does:
//!   - one key: its `ModifyIndex`; a missing key: the KV table's index (the last KV write or
//!     delete anywhere), at least 1 (so a client can block on a key that does not exist yet);
//!   - a prefix (`recurse`, `keys`): the highest `ModifyIndex` or tombstone (a deleted key)
//!     within it, else the table's index, at least 1.
//!
//!   With `index` (and `wait`: default 5 m, at most 10 m; bad ones are 400), a read whose index
//!   is not above the one asked for is held until the result of *that* read may have changed
//!   (a write or delete of that key, or within that prefix) or `wait` passes. A write elsewhere
//!   does not answer it, though it moves a missing key's index. (Consul documents that a
//!   blocking answer is "no guarantee of a change": it may answer earlier, never later.)
//! - `PUT /v1/kv/<key>` (the body is the value, at most 512 KiB, else 413) answers `true` or
//!   `false`: `?flags`; `?cas=<index>` (0: only if absent, else only at that `ModifyIndex`);
//!   `?acquire=<session>` (the lock: `LockIndex` + 1 and `Session` set, unless that session
//!   holds it already; `false` while another session holds it or within the key's lock-delay;
//!   a missing or unknown session is an error, 500 as Consul relays it); `?release=<session>`
//!   (`false` unless that session holds it; `LockIndex` kept; the body replaces the value, as
//!   in Consul). At most one of cas, acquire and release (else 400). A plain write keeps the
//!   `Session` of a locked key and, as Consul's server does, not its `LockIndex`. A write that
//!   changes nothing keeps the `ModifyIndex`.
//! - `DELETE /v1/kv/<key>` answers `true`: `?recurse` (the prefix); `?cas=<index>` answers
//!   `true` if the key was deleted at that `ModifyIndex` or is gone already, else `false` (0
//!   never deletes a key). A deleted key leaves a tombstone (never reaped here: a prefix's index
//!   does not go backwards).
//! - `PUT /v1/txn`: a JSON array of at most [`TXN_MAX_OPS`] `{"KV": {Verb, Key, Value (base64),
//!   Flags, Index, Session}}` (more: 413; bad JSON or base64: 400; a value over 512 KiB: 413).
//!   Verbs: `set`, `cas`, `lock`, `unlock`, `get`, `get-or-empty`, `get-tree`, `check-index`,
//!   `check-session`, `check-not-exists`, `delete`, `delete-tree`, `delete-cas`. The ops run in
//!   order at one index, each seeing the ones before it. If any fails nothing is applied: 409
//!   `{"Results": null, "Errors": [{"OpIndex", "What"}]}`, every failed op listed. Else 200
//!   `{"Results": [{"KV": {...}}...], "Errors": null}`: one result per op, none for deletes and
//!   `check-not-exists`, one per key for `get-tree`; `Value` only for `get`, `get-or-empty` and
//!   `get-tree` (null for the others). A transaction without writes takes no index. Node,
//!   Service and Check operations are not served (400: a limit of the double).
//! - Sessions: `PUT /v1/session/create` with an optional body (`Name`; `Node`: only this
//!   agent's, "double"; `Behavior` release or delete; `TTL` between 10s and 86400s unless
//!   [`ConsulDouble::allow_short_ttl`], "" or 0 for none; `LockDelay`, default 15s, a plain
//!   number below 1000 taken as seconds, applied capped at 60s; `Checks`, `NodeChecks`,
//!   `ServiceChecks` are echoed back but not watched: a session ends here only by destroy, its
//!   TTL or a control) answers `{"ID": "<uuid>"}`. Errors Consul's server makes (TTL, Behavior,
//!   Node) are 500 with its message, as the agent relays them. `PUT /v1/session/renew/<id>`:
//!   `[session]`, 404 when unknown or invalidated. `PUT /v1/session/destroy/<id>`: `true`, also
//!   for an unknown session. `GET /v1/session/info/<id>` (`[session]` or `[]`),
//!   `/v1/session/list`, `/v1/session/node/<node>`: blocking on the sessions' index.
//! - A session with a TTL that is not renewed is invalidated the way Consul's server does it:
//!   after [`SESSION_TTL_MULTIPLIER`] times the TTL from its creation or last renewal (Consul's
//!   documented contract is only that a session is not invalidated before its TTL, and that
//!   it may live up to twice as long), timed on tokio's clock, so a test's paused clock moves
//!   it. Invalidating a session (TTL, destroy or a control) takes an index, applies its
//!   Behavior to every key it holds (release: `Session` cleared, `LockIndex` kept; delete: the
//!   key deleted), which wakes the blocking queries on them, and starts the lock-delay of those
//!   keys.
//!
//! Not served: key-name validation (any non-empty key is taken; Consul 1.21.5 began refusing
//! keys outside `a-zA-Z0-9,-_./` and later releases loosened that again, so a client should
//! keep to that set), tombstone reaping, session health checks, Node/Service/Check txn ops.
//!
//! Test controls on [`ConsulDouble`]: read a key or the keys under a prefix, list the live
//! sessions, count KV, txn and session requests and the KV/session queries held now, the
//! current index, allow short TTLs, invalidate one or every session now (a gateway killed with
//! SIGKILL never destroys its session). `stop()`/`restart()` keep the KV store and the sessions,
//! and TTL clocks run through an outage, as on a server that stayed up behind an unreachable
//! agent.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::consul_double::{go_duration, hold, max_wait, query, reply, ConsulDouble, DoubleState};

/// Operations per transaction. The Transaction endpoint's documentation says "Up to 128
/// operations may be present in a single transaction", as the server's `maxTxnOps` does
/// (older versions, and the KV page still, say 64); more are refused with 413.
pub const TXN_MAX_OPS: usize = 128;
/// "Values in the KV store cannot be larger than 512kb" (`kv_max_value_size`); the default
/// `txn_max_req_len` is the same.
pub const KV_MAX_VALUE_SIZE: usize = 512 * 1024;
/// The documented bounds of a session's TTL.
pub const SESSION_TTL_MIN: Duration = Duration::from_secs(10);
pub const SESSION_TTL_MAX: Duration = Duration::from_secs(86400);
/// Consul's server invalidates a session TTL × this after its last renewal, not after the TTL
/// itself (`SessionTTLMultiplier`: a grace period for clients and network delays).
pub const SESSION_TTL_MULTIPLIER: u32 = 2;
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
/// The longest lock-delay Consul applies (`MaxLockDelay`).
const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
/// The node of every session: the double's one node, as in its health answers.
const NODE: &str = "double";

/// A KV entry as a test control shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvEntry {
    pub value: Vec<u8>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    /// The session holding the lock.
    pub session: Option<String>,
}

/// A live session as a test control shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub id: String,
    pub name: String,
    /// "release" or "delete".
    pub behavior: String,
    /// As given at creation ("" for none).
    pub ttl: String,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    value: Vec<u8>,
    flags: u64,
    /// "" when unlocked.
    session: String,
    lock_index: u64,
    create_index: u64,
    modify_index: u64,
}

impl Entry {
    fn new(value: &[u8], flags: u64) -> Entry {
        Entry { value: value.to_vec(), flags, ..Entry::default() }
    }

    /// What Consul compares to skip a write that changes nothing (indexes aside).
    fn same(&self, o: &Entry) -> bool {
        self.value == o.value
            && self.flags == o.flags
            && self.session == o.session
            && self.lock_index == o.lock_index
    }

    fn json(&self, key: &str, with_value: bool) -> Value {
        let value = if with_value && !self.value.is_empty() {
            json!(BASE64.encode(&self.value))
        } else {
            Value::Null
        };
        let mut v = json!({
            "LockIndex": self.lock_index, "Key": key, "Flags": self.flags, "Value": value,
            "CreateIndex": self.create_index, "ModifyIndex": self.modify_index,
        });
        if !self.session.is_empty() {
            v["Session"] = json!(self.session);
        }
        v
    }
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    name: String,
    behavior: String,
    /// As given ("30s"), shown back as given.
    ttl: String,
    lock_delay: Duration,
    node_checks: Value,
    service_checks: Value,
    create_index: u64,
    /// TTL × SESSION_TTL_MULTIPLIER, and when that runs out unless renewed.
    expiry: Option<(Duration, Instant)>,
}

impl Session {
    fn json(&self) -> Value {
        json!({
            "ID": self.id, "Name": self.name, "Node": NODE,
            "LockDelay": self.lock_delay.as_nanos() as u64, "Behavior": self.behavior, "TTL": self.ttl,
            "NodeChecks": self.node_checks, "ServiceChecks": self.service_checks,
            "CreateIndex": self.create_index, "ModifyIndex": self.create_index,
        })
    }
}

/// KV entries, tombstones, sessions and lock-delays: the double's part of a server's state
/// store. Every write takes its index from the caller, which holds the double's lock.
#[derive(Debug, Clone, Default)]
pub(super) struct Store {
    entries: BTreeMap<String, Entry>,
    /// Deleted keys and the index they were deleted at.
    tombstones: BTreeMap<String, u64>,
    /// The KV table's index: the last write or delete of any key.
    kv_index: u64,
    sessions: BTreeMap<String, Session>,
    /// The sessions table's index: the last session created or invalidated.
    sessions_index: u64,
    /// Keys whose lock may not be acquired before the instant (lock-delay).
    lock_delays: HashMap<String, Instant>,
    short_ttl: bool,
}

/// The entries of `map` whose key starts with `prefix`, in key order.
fn prefixed<'a, T>(
    map: &'a BTreeMap<String, T>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a T)> {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

impl Store {
    /// The last index at which that key, or a key in that prefix, was written or deleted: the
    /// result of a read of it may have changed only when this moves.
    fn touched(&self, key: &str, prefix: bool) -> u64 {
        if prefix {
            let written = prefixed(&self.entries, key).map(|(_, e)| e.modify_index).max().unwrap_or(0);
            written.max(prefixed(&self.tombstones, key).map(|(_, i)| *i).max().unwrap_or(0))
        } else {
            let written = self.entries.get(key).map_or(0, |e| e.modify_index);
            written.max(self.tombstones.get(key).copied().unwrap_or(0))
        }
    }

    /// The `X-Consul-Index` of a read of that key or prefix, as Consul's server computes it.
    fn read_index(&self, key: &str, prefix: bool) -> u64 {
        let index = match (prefix, self.entries.get(key)) {
            (true, _) => Some(self.touched(key, true)).filter(|i| *i != 0).unwrap_or(self.kv_index),
            (false, Some(e)) => e.modify_index,
            (false, None) => self.kv_index,
        };
        index.max(1)
    }

    /// Write `e` (value, flags, lock index; its session too if `with_session`, else the key
    /// keeps its own) at `idx`; a write that changes nothing keeps the entry as it is. Returns
    /// the entry as stored.
    fn set(&mut self, idx: u64, key: &str, mut e: Entry, with_session: bool) -> Entry {
        let existing = self.entries.get(key);
        e.create_index = existing.map_or(idx, |x| x.create_index);
        if !with_session {
            e.session = existing.map(|x| x.session.clone()).unwrap_or_default();
        }
        if let Some(x) = existing.filter(|x| x.same(&e)) {
            return x.clone();
        }
        e.modify_index = idx;
        self.entries.insert(key.to_owned(), e.clone());
        self.kv_index = idx;
        e
    }

    /// `None` when the index does not match (0: the key exists).
    fn cas(&mut self, idx: u64, key: &str, e: Entry, cas: u64) -> Option<Entry> {
        match self.entries.get(key) {
            Some(x) if cas == 0 || x.modify_index != cas => None,
            None if cas != 0 => None,
            _ => Some(self.set(idx, key, e, false)),
        }
    }

    /// Acquire with `e.session`: `Ok(None)` when another session holds the lock, `Err` for a
    /// missing or unknown session.
    fn lock(&mut self, idx: u64, key: &str, mut e: Entry) -> Result<Option<Entry>, String> {
        if e.session.is_empty() {
            return Err("missing session".into());
        }
        if !self.sessions.contains_key(&e.session) {
            return Err(format!("invalid session {:?}", e.session));
        }
        match self.entries.get(key) {
            Some(x) if x.session == e.session => e.lock_index = x.lock_index,
            Some(x) if !x.session.is_empty() => return Ok(None),
            Some(x) => e.lock_index = x.lock_index + 1,
            None => e.lock_index = 1,
        }
        Ok(Some(self.set(idx, key, e, true)))
    }

    /// Release with `e.session`: `Ok(None)` unless that session holds the lock.
    fn unlock(&mut self, idx: u64, key: &str, mut e: Entry) -> Result<Option<Entry>, String> {
        if e.session.is_empty() {
            return Err("missing session".into());
        }
        match self.entries.get(key) {
            Some(x) if x.session == e.session => {
                e.lock_index = x.lock_index;
                e.session.clear();
                Ok(Some(self.set(idx, key, e, true)))
            }
            _ => Ok(None),
        }
    }

    fn delete(&mut self, idx: u64, key: &str) {
        if self.entries.remove(key).is_some() {
            self.tombstones.insert(key.to_owned(), idx);
            self.kv_index = idx;
        }
    }

    /// `false` when the key exists at another index.
    fn delete_cas(&mut self, idx: u64, key: &str, cas: u64) -> bool {
        match self.entries.get(key) {
            Some(x) if x.modify_index != cas => false,
            _ => {
                self.delete(idx, key);
                true
            }
        }
    }

    fn delete_tree(&mut self, idx: u64, prefix: &str) {
        let keys: Vec<String> = prefixed(&self.entries, prefix).map(|(k, _)| k.clone()).collect();
        for k in keys {
            self.delete(idx, &k);
        }
    }

    fn lock_delayed(&self, key: &str, now: Instant) -> bool {
        self.lock_delays.get(key).is_some_and(|until| *until > now)
    }

    /// `?keys`: the names under `prefix`, cut after the first `separator` past it.
    fn keys(&self, prefix: &str, separator: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (k, _) in prefixed(&self.entries, prefix) {
            let name = match k[prefix.len()..].find(separator).filter(|_| !separator.is_empty()) {
                Some(i) => &k[..prefix.len() + i + separator.len()],
                None => k.as_str(),
            };
            // Keys come in order, so a cut name repeats only right after itself.
            if out.last().map(String::as_str) != Some(name) {
                out.push(name.to_owned());
            }
        }
        out
    }

    /// Invalidate a session at `idx` as Consul does: its Behavior applied to every key it holds,
    /// and the lock-delay of those keys started. `false` if there is no such session.
    fn invalidate(&mut self, idx: u64, id: &str, now: Instant) -> bool {
        let Some(s) = self.sessions.remove(id) else { return false };
        self.sessions_index = idx;
        let held: Vec<String> =
            self.entries.iter().filter(|(_, e)| e.session == id).map(|(k, _)| k.clone()).collect();
        let delay = s.lock_delay.min(MAX_LOCK_DELAY);
        for key in held {
            if s.behavior == "delete" {
                self.delete(idx, &key);
            } else {
                let mut e = self.entries[&key].clone();
                e.session.clear();
                self.set(idx, &key, e, true);
            }
            if !delay.is_zero() {
                self.lock_delays.insert(key, now + delay);
            }
        }
        true
    }

    /// Run a transaction's ops in order at `idx` (on a copy of the store: the caller keeps it
    /// only if every op succeeded).
    fn txn(&mut self, idx: u64, ops: &[Option<TxnOp>]) -> Result<Vec<Value>, Vec<(usize, String)>> {
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op
                .as_ref()
                .ok_or_else(|| "no operation specified".to_owned())
                .and_then(|op| self.txn_op(idx, op))
            {
                Ok(r) => results.extend(r),
                Err(what) => errors.push((i, what)),
            }
        }
        if errors.is_empty() {
            Ok(results)
        } else {
            Err(errors)
        }
    }

    fn txn_op(&mut self, idx: u64, op: &TxnOp) -> Result<Vec<Value>, String> {
        let key = op.key.as_str();
        let result = |k: &str, e: &Entry, with_value: bool| json!({ "KV": e.json(k, with_value) });
        let new = || Entry::new(&op.value, op.flags);
        let with_session = || Entry { session: op.session.clone(), ..new() };
        let done = match op.verb.as_str() {
            "set" => Some(self.set(idx, key, new(), false)),
            "cas" => Some(
                self.cas(idx, key, new(), op.index)
                    .ok_or(format!("failed to set key {key:?}, index is stale"))?,
            ),
            "lock" => Some(
                self.lock(idx, key, with_session())?
                    .ok_or(format!("failed to lock key {key:?}, lock is already held"))?,
            ),
            "unlock" => Some(self.unlock(idx, key, with_session())?.ok_or(format!(
                "failed to unlock key {key:?}, lock isn't held, or is held by another session"
            ))?),
            "get" => {
                let e = self.entries.get(key).ok_or(format!("key {key:?} doesn't exist"))?;
                return Ok(vec![result(key, e, true)]);
            }
            "get-or-empty" => {
                // Consul answers a missing key with the op itself, without its value.
                let missing = Entry { modify_index: op.index, value: Vec::new(), ..with_session() };
                return Ok(vec![result(key, self.entries.get(key).unwrap_or(&missing), true)]);
            }
            "get-tree" => return Ok(prefixed(&self.entries, key).map(|(k, e)| result(k, e, true)).collect()),
            "check-index" => {
                let e = self
                    .entries
                    .get(key)
                    .ok_or(format!("failed to check index, key {key:?} doesn't exist"))?;
                if e.modify_index != op.index {
                    return Err(format!(
                        "failed index check for key {key:?}, current modify index {} != {}",
                        e.modify_index, op.index
                    ));
                }
                Some(e.clone())
            }
            "check-session" => {
                let e = self
                    .entries
                    .get(key)
                    .ok_or(format!("failed to check session, key {key:?} doesn't exist"))?;
                if e.session != op.session {
                    return Err(format!(
                        "failed session check for key {key:?}, current session {:?} != {:?}",
                        e.session, op.session
                    ));
                }
                Some(e.clone())
            }
            "check-not-exists" => {
                if self.entries.contains_key(key) {
                    return Err(format!("key {key:?} exists"));
                }
                None
            }
            "delete" => {
                self.delete(idx, key);
                None
            }
            "delete-cas" => {
                if !self.delete_cas(idx, key, op.index) {
                    return Err(format!("failed to delete key {key:?}, index is stale"));
                }
                None
            }
            "delete-tree" => {
                self.delete_tree(idx, key);
                None
            }
            other => return Err(format!("unknown KV verb {other:?}")),
        };
        Ok(done.map(|e| vec![result(key, &e, false)]).unwrap_or_default())
    }
}

/// One `{"KV": {...}}` operation of a transaction.
#[derive(Debug)]
struct TxnOp {
    verb: String,
    key: String,
    value: Vec<u8>,
    flags: u64,
    index: u64,
    session: String,
}

impl TxnOp {
    fn writes(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "set" | "cas" | "lock" | "unlock" | "delete" | "delete-cas" | "delete-tree"
        )
    }
}

/// A member of a JSON object by name, any case (Consul decodes bodies case-insensitively).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let m = v.as_object()?;
    m.get(name)
        .or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
        .filter(|v| !v.is_null())
}

fn json_reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut r = reply(status, serde_json::to_vec(v).unwrap());
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

/// What Consul sets on the answer of a read (`setMeta`).
fn set_meta(r: &mut Response<Full<Bytes>>, index: u64) {
    let h = r.headers_mut();
    h.insert("x-consul-index", index.to_string().parse().unwrap());
    h.insert("x-consul-knownleader", "true".parse().unwrap());
    h.insert("x-consul-lastcontact", "0".parse().unwrap());
}

fn not_allowed(method: &Method) -> Response<Full<Bytes>> {
    reply(StatusCode::METHOD_NOT_ALLOWED, format!("method {method} not allowed"))
}

async fn body(req: Request<Incoming>) -> Bytes {
    req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default()
}

/// A request refused: the status, and Consul's message.
type Refusal = (StatusCode, String);

fn refuse((status, msg): Refusal) -> Response<Full<Bytes>> {
    reply(status, msg)
}

/// `index` and `wait`, refused as Consul refuses them.
fn blocking(q: &BTreeMap<String, String>) -> Result<(u64, Duration), Refusal> {
    let wait = match q.get("wait").filter(|w| !w.is_empty()) {
        Some(w) => Some(go_duration(w).ok_or((StatusCode::BAD_REQUEST, "Invalid wait time".to_owned()))?),
        None => None,
    };
    let index = match q.get("index").filter(|i| !i.is_empty()) {
        Some(i) => i.parse().map_err(|_| (StatusCode::BAD_REQUEST, "Invalid index".to_owned()))?,
        None => 0,
    };
    Ok((index, max_wait(wait)))
}

/// A u64 query parameter; Consul answers a bad one with strconv's error, as a 500.
fn u64_param(q: &BTreeMap<String, String>, name: &str) -> Result<Option<u64>, Refusal> {
    q.get(name)
        .map(|v| {
            v.parse().map_err(|_| {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("strconv.ParseUint: parsing {v:?}: invalid syntax"),
                )
            })
        })
        .transpose()
}

/// Consul's 400 for flags that do not go together.
fn conflicting(q: &BTreeMap<String, String>, flags: &[&str]) -> Option<Response<Full<Bytes>>> {
    (flags.iter().filter(|f| q.contains_key(**f)).count() > 1).then(|| {
        let params: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        reply(StatusCode::BAD_REQUEST, format!("Conflicting flags: {}\n", params.join("&")))
    })
}

/// `/v1/kv/<key>` (the key decoded).
pub(super) async fn kv(state: &DoubleState, req: Request<Incoming>, key: String) -> Response<Full<Bytes>> {
    state.kv_requests.fetch_add(1, Ordering::SeqCst);
    let q = query(&req);
    let method = req.method().clone();
    match method {
        Method::GET => kv_read(state, &q, &key).await,
        Method::PUT => {
            let value = body(req).await;
            kv_write(state, &q, &key, &value)
        }
        Method::DELETE => kv_delete(state, &q, &key),
        _ => not_allowed(&method),
    }
}

async fn kv_read(state: &DoubleState, q: &BTreeMap<String, String>, key: &str) -> Response<Full<Bytes>> {
    let keys = q.contains_key("keys");
    let prefix = keys || q.contains_key("recurse");
    if !prefix && key.is_empty() {
        return reply(StatusCode::BAD_REQUEST, "Missing key name");
    }
    let (min, wait) = match blocking(q) {
        Ok(b) => b,
        Err(r) => return refuse(r),
    };
    if min > 0 && state.inner.lock().unwrap().kv.read_index(key, prefix) <= min {
        hold(state, wait, &state.kv_held, |inner| inner.kv.touched(key, prefix) > min).await;
    }
    let inner = state.inner.lock().unwrap();
    let store = &inner.kv;
    let mut r = if keys {
        // Consul reads both spellings (once documented as "seperator").
        let sep = q.get("separator").or_else(|| q.get("seperator")).map_or("", String::as_str);
        let names = store.keys(key, sep);
        if names.is_empty() && !key.is_empty() {
            reply(StatusCode::NOT_FOUND, "")
        } else {
            json_reply(StatusCode::OK, &json!(names))
        }
    } else if prefix {
        let entries: Vec<Value> = prefixed(&store.entries, key).map(|(k, e)| e.json(k, true)).collect();
        if entries.is_empty() {
            reply(StatusCode::NOT_FOUND, "")
        } else {
            json_reply(StatusCode::OK, &Value::Array(entries))
        }
    } else {
        match store.entries.get(key) {
            None => reply(StatusCode::NOT_FOUND, ""),
            Some(e) if q.contains_key("raw") => {
                let mut r = reply(StatusCode::OK, e.value.clone());
                let h = r.headers_mut();
                h.insert("content-type", "text/plain".parse().unwrap());
                h.insert("x-content-type-options", "nosniff".parse().unwrap());
                h.insert("content-security-policy", "sandbox".parse().unwrap());
                r
            }
            Some(e) => json_reply(StatusCode::OK, &json!([e.json(key, true)])),
        }
    };
    set_meta(&mut r, store.read_index(key, prefix));
    r
}

fn kv_write(
    state: &DoubleState,
    q: &BTreeMap<String, String>,
    key: &str,
    value: &[u8],
) -> Response<Full<Bytes>> {
    if key.is_empty() {
        return reply(StatusCode::BAD_REQUEST, "Missing key name");
    }
    if let Some(r) = conflicting(q, &["cas", "acquire", "release"]) {
        return r;
    }
    let (flags, cas) = match (u64_param(q, "flags"), u64_param(q, "cas")) {
        (Ok(f), Ok(c)) => (f.unwrap_or(0), c),
        (Err(r), _) | (_, Err(r)) => return refuse(r),
    };
    if value.len() > KV_MAX_VALUE_SIZE {
        let msg = format!(
            "Request body({} bytes) too large, max size: {KV_MAX_VALUE_SIZE} bytes. See \
             https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.",
            value.len()
        );
        return reply(StatusCode::PAYLOAD_TOO_LARGE, msg);
    }
    let e = Entry::new(value, flags);
    let now = Instant::now();
    let mut inner = state.inner.lock().unwrap();
    // The lock-delay is checked before the write is applied (and takes no index).
    if q.contains_key("acquire") && inner.kv.lock_delayed(key, now) {
        return json_reply(StatusCode::OK, &json!(false));
    }
    let idx = state.next_index(&mut inner);
    let done = if let Some(s) = q.get("acquire") {
        inner.kv.lock(idx, key, Entry { session: s.clone(), ..e })
    } else if let Some(s) = q.get("release") {
        inner.kv.unlock(idx, key, Entry { session: s.clone(), ..e })
    } else if let Some(cas) = cas {
        Ok(inner.kv.cas(idx, key, e, cas))
    } else {
        Ok(Some(inner.kv.set(idx, key, e, false)))
    };
    match done {
        Ok(done) => json_reply(StatusCode::OK, &json!(done.is_some())),
        Err(msg) => reply(StatusCode::INTERNAL_SERVER_ERROR, msg),
    }
}

fn kv_delete(state: &DoubleState, q: &BTreeMap<String, String>, key: &str) -> Response<Full<Bytes>> {
    if let Some(r) = conflicting(q, &["recurse", "cas"]) {
        return r;
    }
    let recurse = q.contains_key("recurse");
    if !recurse && key.is_empty() {
        return reply(StatusCode::BAD_REQUEST, "Missing key name");
    }
    let cas = match u64_param(q, "cas") {
        Ok(c) => c,
        Err(r) => return refuse(r),
    };
    let mut inner = state.inner.lock().unwrap();
    let idx = state.next_index(&mut inner);
    let done = match cas {
        _ if recurse => {
            inner.kv.delete_tree(idx, key);
            true
        }
        Some(cas) => inner.kv.delete_cas(idx, key, cas),
        None => {
            inner.kv.delete(idx, key);
            true
        }
    };
    json_reply(StatusCode::OK, &json!(done))
}

/// The ops of a transaction body: `None` for an op that names no operation (which fails in
/// the transaction, as in Consul).
fn txn_ops(body: &[u8]) -> Result<Vec<Option<TxnOp>>, Refusal> {
    let bad = |why: String| (StatusCode::BAD_REQUEST, format!("Failed to parse body: {why}"));
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let Value::Array(items) = v else { return Err(bad("expected a JSON array of operations".into())) };
    let mut ops = Vec::with_capacity(items.len());
    for item in &items {
        let Some(kv) = field(item, "KV") else {
            if ["Node", "Service", "Check"].iter().any(|k| field(item, k).is_some()) {
                let msg = "the Consul double serves only KV operations in /v1/txn \
                           (Node, Service and Check operations are not implemented)";
                return Err((StatusCode::BAD_REQUEST, msg.to_owned()));
            }
            ops.push(None);
            continue;
        };
        let string = |name: &str| -> Result<String, Refusal> {
            match field(kv, name) {
                None => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(bad(format!("{name}: expected a string, got {other}"))),
            }
        };
        let number = |name: &str| -> Result<u64, Refusal> {
            match field(kv, name) {
                None => Ok(0),
                Some(v) => {
                    v.as_u64().ok_or_else(|| bad(format!("{name}: expected an unsigned integer, got {v}")))
                }
            }
        };
        let value =
            BASE64.decode(string("Value")?).map_err(|e| bad(format!("failed to decode value: {e}")))?;
        ops.push(Some(TxnOp {
            verb: string("Verb")?,
            key: string("Key")?,
            value,
            flags: number("Flags")?,
            index: number("Index")?,
            session: string("Session")?,
        }));
    }
    if ops.len() > TXN_MAX_OPS {
        let msg = format!("Transaction contains too many operations ({} > {TXN_MAX_OPS})", ops.len());
        return Err((StatusCode::PAYLOAD_TOO_LARGE, msg));
    }
    if let Some(op) = ops.iter().flatten().find(|op| op.value.len() > KV_MAX_VALUE_SIZE) {
        let msg = format!(
            "Value for key {:?} is too large ({} > {KV_MAX_VALUE_SIZE} bytes)",
            op.key,
            op.value.len()
        );
        return Err((StatusCode::PAYLOAD_TOO_LARGE, msg));
    }
    Ok(ops)
}

fn txn_conflict(errors: Vec<(usize, String)>) -> Response<Full<Bytes>> {
    let errors: Vec<Value> =
        errors.into_iter().map(|(i, what)| json!({ "OpIndex": i, "What": what })).collect();
    json_reply(StatusCode::CONFLICT, &json!({ "Results": null, "Errors": errors }))
}

/// `PUT /v1/txn`.
pub(super) async fn txn(state: &DoubleState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    state.txn_requests.fetch_add(1, Ordering::SeqCst);
    if req.method() != Method::PUT {
        return not_allowed(req.method());
    }
    let body = body(req).await;
    if body.len() > KV_MAX_VALUE_SIZE {
        let msg = format!(
            "Request body({} bytes) too large, max size: {KV_MAX_VALUE_SIZE} bytes. See \
             https://developer.hashicorp.com/docs/agent/config/config-files#txn_max_req_len.",
            body.len()
        );
        return reply(StatusCode::PAYLOAD_TOO_LARGE, msg);
    }
    let ops = match txn_ops(&body) {
        Ok(ops) => ops,
        Err(r) => return refuse(r),
    };
    let writes = ops.iter().flatten().any(TxnOp::writes);
    let now = Instant::now();
    let mut inner = state.inner.lock().unwrap();
    // Consul checks every op before running any: keys, and the lock-delay of a lock.
    let mut refused = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let Some(op) = op else { continue };
        if op.key.is_empty() && op.verb != "delete-tree" {
            refused.push((i, "Must provide key".to_owned()));
        } else if op.verb == "lock" && inner.kv.lock_delayed(&op.key, now) {
            refused.push((i, format!("failed to lock key {:?} due to lock delay", op.key)));
        }
    }
    if !refused.is_empty() {
        return txn_conflict(refused);
    }
    // All or nothing: the ops run on a copy, kept only if every one succeeded. Writes take
    // the next index (all writers hold the lock, so it is still free when committed).
    let idx = if writes { state.index.borrow().0 + 1 } else { 0 };
    let mut store = inner.kv.clone();
    match store.txn(idx, &ops) {
        Err(errors) => txn_conflict(errors),
        Ok(results) => {
            if writes {
                let committed = state.next_index(&mut inner);
                debug_assert_eq!(committed, idx);
                inner.kv = store;
            }
            let mut r = json_reply(StatusCode::OK, &json!({ "Results": results, "Errors": null }));
            if !writes {
                // A read-only transaction is served like a read (without blocking).
                r.headers_mut().insert("x-consul-knownleader", "true".parse().unwrap());
                r.headers_mut().insert("x-consul-lastcontact", "0".parse().unwrap());
            }
            r
        }
    }
}

/// A new session from a `/v1/session/create` body, or Consul's error.
fn new_session(body: &[u8], short_ttl: bool) -> Result<Session, Refusal> {
    let bad = |why: String| (StatusCode::BAD_REQUEST, format!("Request decode failed: {why}"));
    let server = |msg: String| (StatusCode::INTERNAL_SERVER_ERROR, msg);
    let v: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?
    };
    if !v.is_object() {
        return Err(bad(format!("expected a JSON object, got {v}")));
    }
    let string = |name: &str| field(&v, name).and_then(Value::as_str).unwrap_or("").to_owned();
    let node = string("Node");
    if !node.is_empty() && node != NODE {
        return Err(server("Missing node registration".into()));
    }
    let behavior = match string("Behavior").as_str() {
        "" | "release" => "release",
        "delete" => "delete",
        other => return Err(server(format!("Invalid Behavior setting '{other}'"))),
    };
    // A duration string or a number of nanoseconds; below 1000 it was meant as seconds.
    let lock_delay = match field(&v, "LockDelay") {
        None => DEFAULT_LOCK_DELAY,
        Some(Value::String(s)) => {
            go_duration(s).ok_or_else(|| bad(format!("time: invalid duration {s:?}")))?
        }
        Some(Value::Number(n)) => Duration::from_nanos(n.as_f64().unwrap_or(0.0).max(0.0) as u64),
        Some(other) => return Err(bad(format!("LockDelay: unexpected {other}"))),
    };
    let lock_delay =
        if lock_delay < Duration::from_nanos(1000) { lock_delay * 1_000_000_000 } else { lock_delay };
    let ttl = string("TTL");
    let mut expiry = None;
    if !ttl.is_empty() {
        let d = go_duration(&ttl)
            .ok_or_else(|| server(format!("Session TTL '{ttl}' invalid: time: invalid duration {ttl:?}")))?;
        let (min, min_text) = if short_ttl { (Duration::ZERO, "0s") } else { (SESSION_TTL_MIN, "10s") };
        if !d.is_zero() && (d < min || d > SESSION_TTL_MAX) {
            let msg = format!("Invalid Session TTL '{}', must be between [{min_text}=24h0m0s]", d.as_nanos());
            return Err(server(msg));
        }
        if !d.is_zero() {
            expiry = Some((d * SESSION_TTL_MULTIPLIER, Instant::now()));
        }
    }
    let node_checks = field(&v, "NodeChecks").or_else(|| field(&v, "Checks")).cloned();
    Ok(Session {
        id: String::new(),
        name: string("Name"),
        behavior: behavior.to_owned(),
        ttl,
        lock_delay,
        node_checks: node_checks.unwrap_or_else(|| json!(["serfHealth"])),
        service_checks: field(&v, "ServiceChecks").cloned().unwrap_or(Value::Null),
        create_index: 0,
        expiry,
    })
}

/// A random UUID in the form Consul's server makes them.
fn uuid() -> String {
    let hex =
        |n: usize| (0..n).map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap()).collect::<String>();
    format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12))
}

/// `/v1/session/<rest>` (decoded).
pub(super) async fn session(
    state: &DoubleState,
    req: Request<Incoming>,
    rest: String,
) -> Response<Full<Bytes>> {
    state.session_requests.fetch_add(1, Ordering::SeqCst);
    let q = query(&req);
    let method = req.method().clone();
    let (op, arg) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
    let write = matches!(op, "create" | "destroy" | "renew");
    if !matches!(op, "create" | "destroy" | "renew" | "info" | "list" | "node") {
        return reply(StatusCode::NOT_FOUND, "not found");
    }
    let allowed = if write { Method::PUT } else { Method::GET };
    if method != allowed {
        return not_allowed(&method);
    }
    if matches!(op, "destroy" | "renew" | "info") && arg.is_empty() {
        return reply(StatusCode::BAD_REQUEST, "Missing session");
    }
    if op == "node" && arg.is_empty() {
        return reply(StatusCode::BAD_REQUEST, "Missing node name");
    }
    let now = Instant::now();
    match op {
        "create" => {
            let body = body(req).await;
            let mut inner = state.inner.lock().unwrap();
            let mut s = match new_session(&body, inner.kv.short_ttl) {
                Ok(s) => s,
                Err(r) => return refuse(r),
            };
            let idx = state.next_index(&mut inner);
            s.id = std::iter::repeat_with(uuid).find(|id| !inner.kv.sessions.contains_key(id)).unwrap();
            s.create_index = idx;
            s.expiry = s.expiry.map(|(grace, _)| (grace, now + grace));
            let (id, timed) = (s.id.clone(), s.expiry.is_some());
            inner.kv.sessions.insert(id.clone(), s);
            inner.kv.sessions_index = idx;
            drop(inner);
            if timed {
                state.sessions_changed.notify_one();
            }
            json_reply(StatusCode::OK, &json!({ "ID": id }))
        }
        "destroy" => {
            let mut inner = state.inner.lock().unwrap();
            if inner.kv.sessions.contains_key(arg) {
                let idx = state.next_index(&mut inner);
                inner.kv.invalidate(idx, arg, now);
            }
            json_reply(StatusCode::OK, &json!(true))
        }
        "renew" => {
            let mut inner = state.inner.lock().unwrap();
            match inner.kv.sessions.get_mut(arg) {
                None => reply(StatusCode::NOT_FOUND, format!("Session id '{arg}' not found")),
                Some(s) => {
                    s.expiry = s.expiry.map(|(grace, _)| (grace, now + grace));
                    json_reply(StatusCode::OK, &json!([s.json()]))
                }
            }
        }
        _ => {
            let (min, wait) = match blocking(&q) {
                Ok(b) => b,
                Err(r) => return refuse(r),
            };
            if min > 0 && state.inner.lock().unwrap().kv.sessions_index.max(1) <= min {
                hold(state, wait, &state.kv_held, |inner| inner.kv.sessions_index > min).await;
            }
            let inner = state.inner.lock().unwrap();
            let list: Vec<Value> = inner
                .kv
                .sessions
                .values()
                .filter(|s| match op {
                    "info" => s.id == arg,
                    "node" => arg == NODE,
                    _ => true,
                })
                .map(Session::json)
                .collect();
            let mut r = json_reply(StatusCode::OK, &Value::Array(list));
            set_meta(&mut r, inner.kv.sessions_index.max(1));
            r
        }
    }
}

/// Invalidate sessions whose TTL ran out, each at its own index, for the double's whole life.
pub(super) async fn reap_sessions(state: Arc<DoubleState>) {
    loop {
        let next = {
            let mut inner = state.inner.lock().unwrap();
            let now = Instant::now();
            let due: Vec<String> = inner
                .kv
                .sessions
                .values()
                .filter(|s| s.expiry.is_some_and(|(_, at)| at <= now))
                .map(|s| s.id.clone())
                .collect();
            for id in due {
                let idx = state.next_index(&mut inner);
                inner.kv.invalidate(idx, &id, now);
            }
            inner.kv.sessions.values().filter_map(|s| s.expiry.map(|(_, at)| at)).min()
        };
        // A renewal only moves an expiry later: waking at the old one just looks again.
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = state.sessions_changed.notified() => {}
                }
            }
            None => state.sessions_changed.notified().await,
        }
    }
}

// === test controls ===

impl ConsulDouble {
    /// The entry at `key`, if any.
    pub fn kv(&self, key: &str) -> Option<KvEntry> {
        let inner = self.state.inner.lock().unwrap();
        inner.kv.entries.get(key).map(|e| KvEntry {
            value: e.value.clone(),
            flags: e.flags,
            create_index: e.create_index,
            modify_index: e.modify_index,
            lock_index: e.lock_index,
            session: Some(e.session.clone()).filter(|s| !s.is_empty()),
        })
    }

    /// The keys under `prefix` ("" for all), in order.
    pub fn kv_keys(&self, prefix: &str) -> Vec<String> {
        let inner = self.state.inner.lock().unwrap();
        prefixed(&inner.kv.entries, prefix).map(|(k, _)| k.clone()).collect()
    }

    /// The sessions alive now, by ID.
    pub fn sessions(&self) -> Vec<LiveSession> {
        let inner = self.state.inner.lock().unwrap();
        inner
            .kv
            .sessions
            .values()
            .map(|s| LiveSession {
                id: s.id.clone(),
                name: s.name.clone(),
                behavior: s.behavior.clone(),
                ttl: s.ttl.clone(),
            })
            .collect()
    }

    /// `/v1/kv` requests received so far (past the token check, as for the other counters).
    pub fn kv_requests(&self) -> usize {
        self.state.kv_requests.load(Ordering::SeqCst)
    }

    /// `/v1/txn` requests received so far.
    pub fn txn_requests(&self) -> usize {
        self.state.txn_requests.load(Ordering::SeqCst)
    }

    /// `/v1/session` requests received so far.
    pub fn session_requests(&self) -> usize {
        self.state.session_requests.load(Ordering::SeqCst)
    }

    /// KV and session blocking queries being held right now.
    pub fn kv_held(&self) -> usize {
        self.state.kv_held.load(Ordering::SeqCst)
    }

    /// The raft index: the index of the last write of any kind.
    pub fn index(&self) -> u64 {
        self.state.index.borrow().0
    }

    /// Accept session TTLs below the documented 10 s minimum (tests cannot wait that long).
    pub fn allow_short_ttl(&self) {
        self.state.inner.lock().unwrap().kv.short_ttl = true;
    }

    /// Invalidate session `id` now, as its TTL running out would; `false` if there is none.
    pub fn expire_session(&self, id: &str) -> bool {
        let mut inner = self.state.inner.lock().unwrap();
        if !inner.kv.sessions.contains_key(id) {
            return false;
        }
        let idx = self.state.next_index(&mut inner);
        inner.kv.invalidate(idx, id, Instant::now())
    }

    /// Invalidate every session now; returns how many there were.
    pub fn expire_all_sessions(&self) -> usize {
        let ids: Vec<String> = self.sessions().into_iter().map(|s| s.id).collect();
        ids.iter().filter(|id| self.expire_session(id)).count()
    }
}
