//! `GET /stats`: requests, errors and latency per route and per upstream in 10-second buckets
//! over the last 5 minutes, for the dashboard (docs/admin-api.md).
//!
//! Nothing here runs on the request path. A sampler task wakes at every wall-clock multiple of
//! [`BUCKET_SECS`] and reads the cumulative values the request path keeps anyway:
//! `switchyard_requests_total` (requests and errors by status class, per route),
//! `switchyard_request_duration_seconds` (latency, per route) and
//! `switchyard_upstream_requests_total` (attempts by outcome, per upstream). The difference from
//! its previous reading becomes the newest bucket of a fixed ring of [`BUCKETS`] per route and
//! per upstream.
//!
//! prometheus-client has no read access to a histogram's buckets, nor a way to list a family's
//! series, so the sampler reads them as a Prometheus server does: it encodes the three families
//! (through a registry of its own holding clones of them) as text and parses the samples, once
//! per bucket. That is the work of a `/metrics` scrape of three families; the request path keeps
//! doing exactly what it did before.
//!
//! p50 and p99 of a bucket come from that bucket's histogram deltas, interpolated linearly
//! within the histogram bucket that holds the rank, as Prometheus' `histogram_quantile` does.
//!
//! Memory: one ring per route and upstream of the live snapshot (those of routes and upstreams
//! a reload removed are dropped at the next tick), plus the previous reading: one small entry
//! per route and upstream name the three metric families hold series for.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::balance::OUTCOMES;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// The width of one bucket, in seconds.
pub(crate) const BUCKET_SECS: u64 = 10;

/// The buckets kept per route and upstream: 5 minutes.
pub(crate) const BUCKETS: usize = 30;

/// Where the sampler's wall-clock time comes from (a test's own clock, or `SystemTime::now`).
pub(crate) type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The last [`BUCKETS`] values, in a fixed array: a push overwrites the oldest.
#[derive(Clone, Debug)]
struct Ring<T> {
    slots: [T; BUCKETS],
    /// Where the next push goes: the oldest value.
    next: usize,
}

impl<T: Copy + Default> Default for Ring<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default> Ring<T> {
    fn new() -> Self {
        Ring { slots: [T::default(); BUCKETS], next: 0 }
    }

    fn push(&mut self, v: T) {
        self.slots[self.next] = v;
        self.next = (self.next + 1) % BUCKETS;
    }

    fn newest_mut(&mut self) -> &mut T {
        &mut self.slots[(self.next + BUCKETS - 1) % BUCKETS]
    }

    /// Every value, oldest first.
    fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        (0..BUCKETS).map(move |i| &self.slots[(self.next + i) % BUCKETS])
    }
}

/// One route's bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct RouteBucket {
    requests: u64,
    e4xx: u64,
    e5xx: u64,
    /// Seconds; `None` without requests.
    p50: Option<f64>,
    p99: Option<f64>,
}

/// One upstream's bucket: attempts by outcome, in the order of [`OUTCOMES`].
type UpstreamBucket = [u64; OUTCOMES.len()];

/// A route's cumulative counts at one reading.
#[derive(Clone, Debug, Default, PartialEq)]
struct RouteTotals {
    requests: u64,
    e4xx: u64,
    e5xx: u64,
    /// Cumulative histogram counts, one per upper bound of [`Reading::bounds`].
    hist: Vec<u64>,
}

impl RouteTotals {
    /// What was counted after `prev` up to `self`, as totals (`hist` stays cumulative over the
    /// histogram's buckets).
    fn since(&self, prev: Option<&RouteTotals>) -> RouteTotals {
        let Some(p) = prev else { return self.clone() };
        RouteTotals {
            requests: self.requests.saturating_sub(p.requests),
            e4xx: self.e4xx.saturating_sub(p.e4xx),
            e5xx: self.e5xx.saturating_sub(p.e5xx),
            hist: self
                .hist
                .iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(p.hist.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }
}

/// The cumulative counts of every route and upstream name at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
struct Reading {
    /// The latency histogram's upper bounds in seconds, `+Inf` last.
    bounds: Vec<f64>,
    routes: HashMap<String, RouteTotals>,
    upstreams: HashMap<String, UpstreamBucket>,
}

/// One route's buckets.
#[derive(Clone, Debug, Default)]
struct RouteSeries {
    ring: Ring<RouteBucket>,
    /// The newest bucket's histogram deltas (cumulative over the histogram's buckets), kept so
    /// that a second reading for the same bucket can be added to it.
    newest_hist: Vec<u64>,
}

impl RouteSeries {
    /// Move on by `shift` buckets (0: add to the newest) and count `d` in the newest.
    fn add(&mut self, shift: usize, d: RouteTotals, bounds: &[f64]) {
        if shift == 0 {
            if self.newest_hist.len() == d.hist.len() {
                self.newest_hist.iter_mut().zip(&d.hist).for_each(|(a, b)| *a += b);
            } else {
                self.newest_hist = d.hist;
            }
            let b = self.ring.newest_mut();
            b.requests += d.requests;
            b.e4xx += d.e4xx;
            b.e5xx += d.e5xx;
        } else {
            for _ in 1..shift {
                self.ring.push(RouteBucket::default());
            }
            self.newest_hist = d.hist;
            self.ring.push(RouteBucket {
                requests: d.requests,
                e4xx: d.e4xx,
                e5xx: d.e5xx,
                ..Default::default()
            });
        }
        let b = self.ring.newest_mut();
        b.p50 = quantile(0.5, bounds, &self.newest_hist);
        b.p99 = quantile(0.99, bounds, &self.newest_hist);
    }

    fn view(&self, name: &str) -> Value {
        let col = |f: fn(&RouteBucket) -> u64| self.ring.iter().map(f).collect::<Vec<_>>();
        let ms = |f: fn(&RouteBucket) -> Option<f64>| {
            self.ring.iter().map(|b| f(b).map(|s| (s * 1e6).round() / 1e3)).collect::<Vec<_>>()
        };
        json!({
            "name": name,
            "requests": col(|b| b.requests),
            "errors": { "4xx": col(|b| b.e4xx), "5xx": col(|b| b.e5xx) },
            "p50_ms": ms(|b| b.p50),
            "p99_ms": ms(|b| b.p99),
        })
    }
}

fn upstream_view(name: &str, ring: &Ring<UpstreamBucket>) -> Value {
    let col = |i: usize| ring.iter().map(|b| b[i]).collect::<Vec<_>>();
    let errors: serde_json::Map<String, Value> =
        (1..OUTCOMES.len()).map(|i| (OUTCOMES[i].to_owned(), json!(col(i)))).collect();
    json!({
        "name": name,
        "requests": ring.iter().map(|b| b.iter().sum::<u64>()).collect::<Vec<_>>(),
        "errors": errors,
    })
}

/// The q-quantile (0 < q < 1), in seconds, of the observations counted in `cum` (cumulative
/// counts per upper bound of `bounds`, `+Inf` last): found in the first histogram bucket whose
/// cumulative count reaches the rank `q × total`, and interpolated linearly between that
/// bucket's bounds (the first bucket starts at 0), as Prometheus' `histogram_quantile` does.
/// A rank in the `+Inf` bucket gives the highest finite bound. `None` without observations.
fn quantile(q: f64, bounds: &[f64], cum: &[u64]) -> Option<f64> {
    let total = *cum.last()?;
    if total == 0 || bounds.len() != cum.len() {
        return None;
    }
    let rank = q * total as f64;
    let i = cum.iter().position(|&c| c as f64 >= rank)?;
    let (lower, below) = if i == 0 { (0.0, 0) } else { (bounds[i - 1], cum[i - 1]) };
    if bounds[i].is_infinite() {
        return Some(lower);
    }
    let inside = (cum[i] - below) as f64;
    Some(lower + (bounds[i] - lower) * (rank - below as f64) / inside)
}

/// Everything the sampler keeps.
#[derive(Debug)]
struct State {
    /// Unix seconds at the end of the newest bucket.
    end: u64,
    last: Reading,
    routes: HashMap<String, RouteSeries>,
    upstreams: HashMap<String, Ring<UpstreamBucket>>,
}

impl State {
    fn new(end: u64, baseline: Reading) -> Self {
        State { end, last: baseline, routes: HashMap::new(), upstreams: HashMap::new() }
    }

    /// Count what changed from the previous reading to `now` in the bucket ending at `end`
    /// (Unix seconds). A later `end` moves the rings on (with empty buckets for any missed);
    /// the same `end` adds to the newest bucket; an earlier one (the wall clock stepped back)
    /// moves them on by one. Only the routes and upstreams named are kept: those a reload
    /// removed vanish, new ones start with empty buckets.
    fn record(&mut self, end: u64, routes: &[&str], upstreams: &[&str], now: Reading) {
        let shift = match end.checked_sub(self.end) {
            Some(0) => 0,
            Some(d) => usize::try_from(d.div_ceil(BUCKET_SECS)).unwrap_or(BUCKETS).min(BUCKETS),
            None => 1,
        };
        let keep: HashSet<&str> = routes.iter().copied().collect();
        self.routes.retain(|n, _| keep.contains(n.as_str()));
        for &name in routes {
            let d = match now.routes.get(name) {
                Some(t) => t.since(self.last.routes.get(name)),
                None => RouteTotals::default(),
            };
            entry(&mut self.routes, name).add(shift, d, &now.bounds);
        }
        let keep: HashSet<&str> = upstreams.iter().copied().collect();
        self.upstreams.retain(|n, _| keep.contains(n.as_str()));
        for &name in upstreams {
            let cur = now.upstreams.get(name).copied().unwrap_or_default();
            let prev = self.last.upstreams.get(name).copied().unwrap_or_default();
            let d: UpstreamBucket = std::array::from_fn(|i| cur[i].saturating_sub(prev[i]));
            let ring = entry(&mut self.upstreams, name);
            if shift == 0 {
                ring.newest_mut().iter_mut().zip(d).for_each(|(a, b)| *a += b);
            } else {
                for _ in 1..shift {
                    ring.push(UpstreamBucket::default());
                }
                ring.push(d);
            }
        }
        self.end = end;
        self.last = now;
    }
}

/// The `/stats` sampler and its buckets.
pub(crate) struct Stats {
    /// The three families it reads, registered under short names of its own.
    source: Registry,
    /// The live snapshot (which routes and upstreams exist, and their order); the sampler
    /// stops once the gateway is gone.
    snapshot: Weak<ArcSwap<Snapshot>>,
    clock: Clock,
    state: Mutex<State>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").finish_non_exhaustive()
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Stats {
    /// Buckets for the routes and upstreams of `snapshot`, read from `metrics`, on `clock`'s
    /// time. The first reading is taken now; the newest (empty) bucket ends at the last
    /// multiple of [`BUCKET_SECS`].
    pub(crate) fn new(metrics: &Metrics, snapshot: Weak<ArcSwap<Snapshot>>, clock: Clock) -> Self {
        let mut source = Registry::default();
        source.register("requests", "", metrics.requests.clone());
        source.register("duration", "", metrics.request_duration.clone());
        source.register("upstream", "", metrics.upstream_requests.clone());
        let end = unix_ms(clock()) / 1000 / BUCKET_SECS * BUCKET_SECS;
        let baseline = read(&source);
        Stats { source, snapshot, clock, state: Mutex::new(State::new(end, baseline)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read the metrics now and count the change since the last reading in the bucket ending
    /// at `end` (see [`State::record`]). False once the gateway is gone.
    pub(crate) fn tick(&self, end: u64) -> bool {
        let Some(cell) = self.snapshot.upgrade() else { return false };
        let snap = cell.load();
        let routes: Vec<&str> = snap.routes.iter().map(|r| r.name.as_str()).collect();
        let upstreams: Vec<&str> = snap.upstreams.iter().map(|u| u.name.as_str()).collect();
        // Read under the lock, so that two ticks cannot record their readings out of order.
        let mut st = self.lock();
        let now = read(&self.source);
        st.record(end, &routes, &upstreams, now);
        true
    }

    /// [`Stats::tick`] for the bucket ending at the multiple of [`BUCKET_SECS`] nearest the
    /// clock (within half a second: a timer that fires a little early still closes the bucket
    /// it was set for).
    pub(crate) fn tick_now(&self) -> bool {
        let ms = unix_ms((self.clock)());
        self.tick((ms + 500) / (BUCKET_SECS * 1000) * BUCKET_SECS)
    }

    /// How long until the next wall-clock multiple of [`BUCKET_SECS`] (at most one bucket).
    fn until_next(&self) -> Duration {
        let period = BUCKET_SECS * 1000;
        let now = unix_ms((self.clock)());
        let end = self.lock().end * 1000;
        // Just before the boundary already closed (an early timer): the one after it.
        let from = if end > now && end - now < 1000 { end } else { now };
        Duration::from_millis((from / period + 1) * period - now).min(Duration::from_millis(period))
    }

    /// The `GET /stats` answer: routes in `snap`'s precedence order, upstreams in its order.
    pub(crate) fn view(&self, snap: &Snapshot) -> Value {
        let st = self.lock();
        let empty = RouteSeries::default();
        let routes: Vec<Value> = snap
            .router
            .precedence_order()
            .into_iter()
            .map(|i| {
                let name = snap.routes[i].name.as_str();
                st.routes.get(name).unwrap_or(&empty).view(name)
            })
            .collect();
        let no_upstream = Ring::new();
        let upstreams: Vec<Value> = snap
            .upstreams
            .iter()
            .map(|u| upstream_view(&u.name, st.upstreams.get(u.name.as_str()).unwrap_or(&no_upstream)))
            .collect();
        json!({
            "bucket_seconds": BUCKET_SECS,
            "buckets": BUCKETS,
            "end": st.end,
            "routes": routes,
            "upstreams": upstreams,
        })
    }
}

/// Run the sampler until `stop` (or until the gateway is gone): a tick at every wall-clock
/// multiple of [`BUCKET_SECS`].
pub(crate) fn spawn(stats: Arc<Stats>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(stats.until_next()) => {}
                () = stop.cancelled() => return,
            }
            if !stats.tick_now() {
                return;
            }
        }
    })
}

/// The cumulative counts in `source` now.
fn read(source: &Registry) -> Reading {
    let mut text = String::with_capacity(4096);
    // Writing to a String cannot fail.
    let _ = encode(&mut text, source);
    parse(&text)
}

/// The counts of a text exposition of the sampler's registry.
fn parse(text: &str) -> Reading {
    let mut r = Reading::default();
    let mut hist: HashMap<String, Vec<(f64, u64)>> = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, labels, value)) = sample(line) else { continue };
        let Some(v) = count(value) else { continue };
        let label = |k: &str| labels.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_ref());
        match name {
            "requests_total" => {
                // Requests no route matched have an empty route.
                let Some(route) = label("route").filter(|r| !r.is_empty()) else { continue };
                let t = entry(&mut r.routes, route);
                t.requests += v;
                match label("code").and_then(|c| c.parse::<u16>().ok()) {
                    Some(400..=499) => t.e4xx += v,
                    Some(500..=599) => t.e5xx += v,
                    _ => {}
                }
            }
            "duration_bucket" => {
                let (Some(route), Some(le)) = (label("route"), label("le")) else { continue };
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
                if !le.is_nan() {
                    entry(&mut hist, route).push((le, v));
                }
            }
            "upstream_total" => {
                let Some(up) = label("upstream") else { continue };
                let Some(i) = label("outcome").and_then(|o| OUTCOMES.iter().position(|x| *x == o)) else {
                    continue;
                };
                entry(&mut r.upstreams, up)[i] += v;
            }
            _ => {}
        }
    }
    for (route, mut buckets) in hist {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let bounds: Vec<f64> = buckets.iter().map(|b| b.0).collect();
        if r.bounds.is_empty() {
            r.bounds = bounds.clone();
        }
        // Every route's histogram has the same buckets; one that did not would be skipped.
        if bounds == r.bounds {
            entry(&mut r.routes, &route).hist = buckets.iter().map(|b| b.1).collect();
        }
    }
    r
}

/// `map[key]`, inserted as the default when missing (allocating the key only then).
fn entry<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// A sample's value as a count (counters and histogram buckets are whole numbers).
fn count(v: &str) -> Option<u64> {
    v.parse::<u64>()
        .ok()
        .or_else(|| v.parse::<f64>().ok().filter(|f| *f >= 0.0 && f.is_finite()).map(|f| f as u64))
}

/// A sample's labels: name and (unescaped) value.
type Labels<'a> = Vec<(&'a str, Cow<'a, str>)>;

/// One sample line: `name{label="value",...} value`, label values unescaped.
fn sample(line: &str) -> Option<(&str, Labels<'_>, &str)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = r.split_once("=\"")?;
            let (value, after) = quoted(after)?;
            labels.push((key, value));
            r = after.strip_prefix(',').unwrap_or(after);
        }
    }
    let value = rest.split_ascii_whitespace().next()?;
    Some((name, labels, value))
}

/// A label value up to its closing quote, with `\\`, `\"` and `\n` unescaped; and the rest of
/// the line after the quote.
fn quoted(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let mut owned: Option<String> = None;
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let value = owned.map_or(Cow::Borrowed(&s[..i]), Cow::Owned);
                return Some((value, &s[i + 1..]));
            }
            '\\' => {
                let o = owned.get_or_insert_with(|| s[..i].to_owned());
                match chars.next()?.1 {
                    'n' => o.push('\n'),
                    other => o.push(other),
                }
            }
            c => {
                if let Some(o) = owned.as_mut() {
                    o.push(c);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_routes_from_sources, Limits};
    use crate::metrics::{Name, RequestLabels, RouteLabel, UpstreamRequestLabels};

    const ROUTES: &str = "[[upstream]]\nname = \"users\"\nendpoints = [\"127.0.0.1:9\"]\n\
        [[upstream]]\nname = \"orders\"\nendpoints = [\"127.0.0.1:9\"]\n\
        [[route]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"users\"\n\
        [[route]]\nname = \"web\"\nrespond = { status = 200 }\n";

    const SMALLER: &str = "[[upstream]]\nname = \"users\"\nendpoints = [\"127.0.0.1:9\"]\n\
        [[route]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"users\"\n";

    fn snapshot(text: &str, metrics: &Arc<Metrics>) -> Snapshot {
        let set = load_routes_from_sources(vec![("t.toml".into(), text.to_owned())]).unwrap();
        let registry = crate::discovery::Registry::new(Arc::clone(metrics));
        Snapshot::build(set, None, 1, &Limits::default(), metrics, &registry).unwrap()
    }

    fn name(s: &str) -> Name {
        Arc::new(s.to_owned())
    }

    /// `n` requests answered `code` on `route` through upstream `users`, each taking `secs`.
    fn hit(m: &Metrics, route: &str, code: u16, n: u64, secs: f64) {
        let labels =
            RequestLabels { listener: name("http"), route: name(route), upstream: name("users"), code };
        m.requests.get_or_create(&labels).inc_by(n);
        let h = m.request_duration.get_or_create(&RouteLabel { route: name(route) });
        for _ in 0..n {
            h.observe(secs);
        }
    }

    fn attempt(m: &Metrics, upstream: &str, endpoint: &str, outcome: &'static str, n: u64) {
        let labels = UpstreamRequestLabels { upstream: name(upstream), endpoint: name(endpoint), outcome };
        m.upstream_requests.get_or_create(&labels).inc_by(n);
    }

    fn totals(requests: u64, e4xx: u64, e5xx: u64) -> RouteTotals {
        RouteTotals { requests, e4xx, e5xx, hist: Vec::new() }
    }

    fn reading(routes: &[(&str, RouteTotals)]) -> Reading {
        Reading {
            bounds: Vec::new(),
            routes: routes.iter().map(|(n, t)| (n.to_string(), t.clone())).collect(),
            upstreams: HashMap::new(),
        }
    }

    fn requests(st: &State, route: &str) -> Vec<u64> {
        st.routes[route].ring.iter().map(|b| b.requests).collect()
    }

    fn u64s(v: &Value) -> Vec<u64> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
    }

    #[test]
    fn a_ring_keeps_the_last_30_values_oldest_first() {
        let mut r: Ring<u64> = Ring::new();
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![0; BUCKETS]);
        for v in 1..=35 {
            r.push(v);
        }
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), (6..=35).collect::<Vec<_>>());
        *r.newest_mut() += 100;
        assert_eq!(r.iter().last(), Some(&135));
    }

    #[test]
    fn each_bucket_holds_the_change_since_the_previous_reading() {
        let mut st = State::new(1000, reading(&[("api", totals(2, 0, 0))]));
        st.record(1010, &["api"], &[], reading(&[("api", totals(7, 1, 2))]));
        st.record(1020, &["api"], &[], reading(&[("api", totals(10, 1, 3))]));
        let newest = *st.routes["api"].ring.iter().last().unwrap();
        assert_eq!((newest.requests, newest.e4xx, newest.e5xx), (3, 0, 1));
        assert_eq!(requests(&st, "api")[BUCKETS - 2..], [5, 3]);
        assert_eq!(st.end, 1020);
        // Two ticks missed: empty buckets for them, the change in the newest.
        st.record(1050, &["api"], &[], reading(&[("api", totals(14, 1, 3))]));
        assert_eq!(requests(&st, "api")[BUCKETS - 5..], [5, 3, 0, 0, 4]);
        // A second reading for the same bucket adds to it.
        st.record(1050, &["api"], &[], reading(&[("api", totals(15, 2, 3))]));
        assert_eq!(requests(&st, "api")[BUCKETS - 2..], [0, 5]);
        assert_eq!(st.routes["api"].ring.iter().last().unwrap().e4xx, 1);
        // The wall clock stepped back: one bucket on, labelled from the new time.
        st.record(1030, &["api"], &[], reading(&[("api", totals(16, 2, 3))]));
        assert_eq!((requests(&st, "api")[BUCKETS - 2..].to_vec(), st.end), (vec![5, 1], 1030));
        // Longer than the whole window: every bucket empty but the newest.
        st.record(5000, &["api"], &[], reading(&[("api", totals(19, 2, 3))]));
        let mut want = vec![0; BUCKETS];
        want[BUCKETS - 1] = 3;
        assert_eq!(requests(&st, "api"), want);
    }

    #[test]
    fn after_31_ticks_the_30_newest_buckets_are_kept_oldest_first() {
        let mut st = State::new(0, Reading::default());
        let mut total = 0;
        for i in 1..=35u64 {
            total += i;
            st.record(i * BUCKET_SECS, &["api"], &[], reading(&[("api", totals(total, 0, 0))]));
        }
        assert_eq!(requests(&st, "api"), (6..=35).collect::<Vec<_>>());
        assert_eq!(st.end, 350);
    }

    #[test]
    fn quantiles_are_interpolated_within_the_histogram_bucket() {
        let bounds = [1.0, 2.0, 4.0, f64::INFINITY];
        // 10 in (0,1], 20 in (1,2], 10 in (2,4].
        let cum = [10, 30, 40, 40];
        // Rank 20 is the 10th of 20 in (1,2]: halfway.
        assert_eq!(quantile(0.5, &bounds, &cum), Some(1.5));
        // Rank 39.6 is the 9.6th of 10 in (2,4].
        assert!((quantile(0.99, &bounds, &cum).unwrap() - 3.92).abs() < 1e-9);
        // The first bucket starts at 0.
        assert_eq!(quantile(0.5, &bounds, &[4, 4, 4, 4]), Some(0.5));
        // A rank past the last finite bound gives that bound.
        assert_eq!(quantile(0.5, &bounds, &[0, 0, 1, 5]), Some(4.0));
        // No observations, no quantile.
        assert_eq!(quantile(0.5, &bounds, &[0, 0, 0, 0]), None);
        assert_eq!(quantile(0.5, &bounds, &[]), None);
    }

    #[tokio::test]
    async fn a_bucket_without_requests_has_null_quantiles() {
        let m = Arc::new(Metrics::new());
        let cell = Arc::new(ArcSwap::from_pointee(snapshot(ROUTES, &m)));
        let stats =
            Stats::new(&m, Arc::downgrade(&cell), Arc::new(|| UNIX_EPOCH + Duration::from_secs(1005)));
        // 3 requests of 3 ms: all in (2 ms, 4 ms]; p50 is the 1.5th of 3 there.
        hit(&m, "api", 200, 3, 0.003);
        assert!(stats.tick(1010));
        assert!(stats.tick(1020));
        let v = stats.view(&cell.load());
        let api = v["routes"].as_array().unwrap().iter().find(|r| r["name"] == "api").unwrap();
        assert_eq!(api["p50_ms"][BUCKETS - 2], json!(3.0));
        assert_eq!(api["p99_ms"][BUCKETS - 2], json!(3.98));
        assert_eq!(api["p50_ms"][BUCKETS - 1], Value::Null);
        assert_eq!(api["p99_ms"][0], Value::Null);
        let web = v["routes"].as_array().unwrap().iter().find(|r| r["name"] == "web").unwrap();
        assert_eq!(web["p50_ms"].as_array().unwrap(), &vec![Value::Null; BUCKETS]);
    }

    #[test]
    fn the_metrics_text_is_read_back_exactly() {
        let m = Metrics::new();
        hit(&m, "api", 200, 3, 0.0004);
        hit(&m, "api", 404, 1, 0.0004);
        hit(&m, "api", 502, 2, 0.0004);
        hit(&m, "a \"quoted\\\" name", 503, 1, 100.0);
        // Requests no route matched are nobody's.
        let unrouted =
            RequestLabels { listener: name("http"), route: name(""), upstream: name(""), code: 404 };
        m.requests.get_or_create(&unrouted).inc();
        attempt(&m, "users", "10.0.0.1:80", "ok", 4);
        attempt(&m, "users", "10.0.0.2:80", "ok", 1);
        attempt(&m, "users", "10.0.0.2:80", "connect_failed", 2);
        attempt(&m, "users", "10.0.0.1:80", "timeout", 1);
        let mut source = Registry::default();
        source.register("requests", "", m.requests.clone());
        source.register("duration", "", m.request_duration.clone());
        source.register("upstream", "", m.upstream_requests.clone());
        let r = read(&source);
        assert_eq!(r.bounds.len(), 19);
        assert_eq!((r.bounds[0], r.bounds[17], r.bounds[18]), (0.0005, 0.0005 * 131072.0, f64::INFINITY));
        let api = &r.routes["api"];
        assert_eq!((api.requests, api.e4xx, api.e5xx), (6, 1, 2));
        assert_eq!(api.hist, vec![6; 19]);
        let odd = &r.routes["a \"quoted\\\" name"];
        assert_eq!((odd.requests, odd.e5xx), (1, 1));
        assert_eq!(odd.hist.iter().filter(|&&c| c == 0).count(), 18, "100 s is past every finite bound");
        assert_eq!(r.routes.len(), 2);
        assert_eq!(r.upstreams["users"], [5, 0, 2, 0, 1]);
    }

    #[tokio::test]
    async fn routes_and_upstreams_a_reload_removed_vanish_and_new_ones_start_empty() {
        let m = Arc::new(Metrics::new());
        let cell = Arc::new(ArcSwap::from_pointee(snapshot(ROUTES, &m)));
        let stats =
            Stats::new(&m, Arc::downgrade(&cell), Arc::new(|| UNIX_EPOCH + Duration::from_secs(2000)));
        hit(&m, "web", 200, 2, 0.001);
        attempt(&m, "orders", "127.0.0.1:9", "5xx", 1);
        assert!(stats.tick(2010));
        let names = |v: &Value, key: &str| {
            v[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        let v = stats.view(&cell.load());
        let order: Vec<String> = cell
            .load()
            .router
            .precedence_order()
            .iter()
            .map(|&i| cell.load().routes[i].name.to_string())
            .collect();
        assert_eq!(names(&v, "routes"), order, "routes in precedence order");
        assert_eq!(names(&v, "upstreams"), ["users", "orders"]);
        for r in v["routes"].as_array().unwrap().iter().chain(v["upstreams"].as_array().unwrap()) {
            assert_eq!(r["requests"].as_array().unwrap().len(), BUCKETS);
        }

        cell.store(Arc::new(snapshot(SMALLER, &m)));
        assert!(stats.tick(2020));
        let v = stats.view(&cell.load());
        assert_eq!((names(&v, "routes"), names(&v, "upstreams")), (vec!["api".into()], vec!["users".into()]));
        assert!(!stats.lock().routes.contains_key("web"));
        assert!(!stats.lock().upstreams.contains_key("orders"));

        // Back again: empty buckets before it returned, and only what came since.
        hit(&m, "web", 200, 5, 0.001);
        attempt(&m, "orders", "127.0.0.1:9", "5xx", 3);
        cell.store(Arc::new(snapshot(ROUTES, &m)));
        assert!(stats.tick(2030));
        let v = stats.view(&cell.load());
        let web = v["routes"].as_array().unwrap().iter().find(|r| r["name"] == "web").unwrap();
        let mut want = vec![0; BUCKETS];
        want[BUCKETS - 1] = 5;
        assert_eq!(u64s(&web["requests"]), want);
        let orders = &v["upstreams"][1];
        want[BUCKETS - 1] = 3;
        assert_eq!((u64s(&orders["requests"]), u64s(&orders["errors"]["5xx"])), (want.clone(), want));

        // The gateway is gone: the sampler is told to stop.
        drop(cell);
        assert!(!stats.tick(2040));
    }

    /// Let the sampler task run after the clock moved.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_sampler_closes_a_bucket_at_each_multiple_of_10_s_and_stops_when_told() {
        let m = Arc::new(Metrics::new());
        let cell = Arc::new(ArcSwap::from_pointee(snapshot(ROUTES, &m)));
        let base = UNIX_EPOCH + Duration::from_millis(1_764_499_994_500);
        let start = tokio::time::Instant::now();
        let clock: Clock = Arc::new(move || base + start.elapsed());
        let stats = Arc::new(Stats::new(&m, Arc::downgrade(&cell), clock));
        let api = |v: &Value| {
            u64s(&v["routes"].as_array().unwrap().iter().find(|r| r["name"] == "api").unwrap()["requests"])
        };
        assert_eq!(stats.view(&cell.load())["end"], 1_764_499_990);
        let stop = CancellationToken::new();
        let task = spawn(Arc::clone(&stats), stop.clone());

        hit(&m, "api", 200, 3, 0.001);
        tokio::time::advance(Duration::from_millis(5_400)).await;
        settle().await;
        assert_eq!(stats.view(&cell.load())["end"], 1_764_499_990, "not yet at the boundary");
        tokio::time::advance(Duration::from_millis(200)).await;
        settle().await;
        let v = stats.view(&cell.load());
        assert_eq!(v["end"], 1_764_500_000);
        assert_eq!(api(&v)[BUCKETS - 1], 3);

        hit(&m, "api", 500, 2, 0.001);
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
        let v = stats.view(&cell.load());
        assert_eq!(v["end"], 1_764_500_010);
        assert_eq!(api(&v)[BUCKETS - 2..], [3, 2]);

        stop.cancel();
        settle().await;
        assert!(task.is_finished(), "the sampler stops with the gateway");
    }
}
