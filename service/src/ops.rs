//! Operations: request and sign-in events, metrics, and the admin listener
//! (`/healthz`, `/metrics`, `/api/events?since=`, `/status`).
//!
//! Workers count into thread-local tables and queue event lines locally on the request path
//! (no lock, no thread hop); every housekeeping tick (200 ms) a worker publishes its tables
//! and hands its new event lines to the shared sink and ring. Only the admin thread and that
//! once-a-tick publication touch the mutexes here.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gatehouse_http1::rt::{Conn, ConnError};
use gatehouse_http1::Limits;
use monoio::net::{TcpListener, TcpStream};
use serde::Serialize;

use crate::events::rfc3339_into;
use crate::{unix_now, Shared};

/// Upper bounds (seconds) of the request latency histogram.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Lower-case hex digits.
const HEX: &[u8; 16] = b"0123456789abcdef";
/// Events kept in memory for `GET /api/events` (per worker).
const EVENT_RING: usize = 10_000;

/// One worker's counters.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    /// (app, status) → requests.
    requests: HashMap<(String, u16), u64>,
    /// app → (bucket counts, count, sum of seconds).
    latency: HashMap<String, ([u64; LATENCY_BUCKETS.len()], u64, f64)>,
    /// (decision, reason) → sign-ins.
    sign_ins: HashMap<(&'static str, String), u64>,
    rate_limited: u64,
    /// Tasks (client connections, tunnels) ended by a panic that was caught.
    panics: u64,
    /// group → (tunnels, connectors), as of the last publication.
    tunnels: BTreeMap<String, (usize, usize)>,
}

/// Looks up `(String, u16)` keys with a borrowed `(&str, u16)` (no allocation).
trait RequestKey {
    fn key(&self) -> (&str, u16);
}

impl RequestKey for (String, u16) {
    fn key(&self) -> (&str, u16) {
        (&self.0, self.1)
    }
}

impl RequestKey for (&str, u16) {
    fn key(&self) -> (&str, u16) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn RequestKey + 'a> for (String, u16) {
    fn borrow(&self) -> &(dyn RequestKey + 'a) {
        self
    }
}

impl PartialEq for dyn RequestKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn RequestKey + '_ {}

impl std::hash::Hash for dyn RequestKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// What a worker publishes.
#[derive(Default)]
pub(crate) struct Published {
    counters: Mutex<Counters>,
    /// The latest events.
    events: Mutex<EventRing>,
    /// Batch buffers (lines, stamps) that left the ring, for the worker to fill again: they
    /// stay allocated and faulted in, instead of a fresh megabyte of pages every tick.
    spares: Mutex<Vec<(Vec<u8>, Vec<u64>)>>,
}

/// Bytes of event lines per write of the events thread.
const WRITE_PIECE: usize = 64 * 1024;

/// Spare batch buffers kept per worker.
const SPARES: usize = 2;

/// The latest events of one worker: the batches the events thread was handed, kept whole (no
/// copy or allocation per line), oldest first. Holds at least the latest [`EVENT_RING`]
/// events, and at most one batch more.
#[derive(Default)]
struct EventRing {
    /// (Unix millisecond stamp of each line, the lines, each ending in a newline).
    batches: VecDeque<(Vec<u64>, Vec<u8>)>,
    /// Lines in `batches`.
    count: usize,
}

impl EventRing {
    /// Adds a batch; returns the batches that fell out, (lines, stamps).
    fn push(&mut self, stamps: Vec<u64>, lines: Vec<u8>) -> Vec<(Vec<u8>, Vec<u64>)> {
        self.count += stamps.len();
        self.batches.push_back((stamps, lines));
        let mut evicted = Vec::new();
        while let Some((oldest, _)) = self.batches.front() {
            if self.count - oldest.len() < EVENT_RING {
                break;
            }
            self.count -= oldest.len();
            if let Some((stamps, lines)) = self.batches.pop_front() {
                evicted.push((lines, stamps));
            }
        }
        evicted
    }

    /// (stamp, line) of every event, oldest first.
    fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.batches.iter().flat_map(|(stamps, lines)| {
            let lines = lines.split(|&b| b == b'\n').filter(|l| !l.is_empty());
            stamps.iter().copied().zip(lines)
        })
    }
}

/// Where event lines go: workers hand over each tick's lines, and a thread of their own
/// writes them to standard output or the events file and keeps the latest in each worker's
/// ring for `/api/events`. So no worker blocks on a file write, copies lines into the ring,
/// or shares the sink's lock with another worker.
pub(crate) struct EventsOut {
    batches: mpsc::Sender<Batch>,
}

/// What the events thread is handed.
enum Batch {
    /// One worker's lines of one tick, each ending in a newline, and their stamps.
    Lines {
        worker: usize,
        lines: Vec<u8>,
        stamps: Vec<u64>,
    },
    /// Everything before this is written: say so.
    Flush(mpsc::Sender<()>),
}

impl EventsOut {
    /// Opens the sink (standard output, or a file appended to) and starts the thread that
    /// writes to it and fills `rings`.
    pub(crate) fn start(
        path: Option<&std::path::Path>,
        rings: Arc<Vec<Published>>,
    ) -> std::io::Result<EventsOut> {
        let mut sink: Box<dyn std::io::Write + Send> = match path {
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => Box::new(std::io::stdout()),
        };
        let (tx, rx) = mpsc::channel::<Batch>();
        std::thread::Builder::new()
            .name("gatehouse-events".into())
            .spawn(move || {
                for batch in rx {
                    match batch {
                        Batch::Lines {
                            worker,
                            lines,
                            stamps,
                        } => {
                            // In pieces, stepping aside between them: one write of a
                            // tick's lines (megabytes at full load) is one long system call
                            // that kept a worker on the same core waiting 6–9 ms every tick,
                            // the p99 of every request caught behind it.
                            for piece in lines.chunks(WRITE_PIECE) {
                                let _ = sink.write_all(piece);
                                std::thread::yield_now();
                            }
                            let _ = sink.flush();
                            if let Some(published) = rings.get(worker) {
                                published.remember(lines, stamps);
                            }
                        }
                        Batch::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(EventsOut { batches: tx })
    }

    fn send(&self, batch: Batch) {
        let _ = self.batches.send(batch);
    }

    /// Waits (at most `timeout`) until every line handed over so far is written: at exit.
    pub(crate) fn flush(&self, timeout: std::time::Duration) {
        let (tx, rx) = mpsc::channel();
        self.send(Batch::Flush(tx));
        let _ = rx.recv_timeout(timeout);
    }
}

impl Published {
    /// Keeps `lines` (one event per line) with their stamps in the ring of latest events.
    fn remember(&self, lines: Vec<u8>, stamps: Vec<u64>) {
        let evicted = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stamps, lines);
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        for (mut lines, mut stamps) in evicted {
            if spares.len() < SPARES {
                lines.clear();
                stamps.clear();
                spares.push((lines, stamps));
            }
        }
    }

    /// A spare batch buffer pair (empty), if one came back from the ring.
    fn take_spare(&self) -> Option<(Vec<u8>, Vec<u64>)> {
        self.spares.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }
}

/// A worker's side: local tables and pending lines.
#[derive(Default)]
pub(crate) struct WorkerOps {
    counters: RefCell<Counters>,
    /// Event lines not yet published, each ending in a newline (reused buffer).
    pending: RefCell<Vec<u8>>,
    /// The Unix millisecond stamp of each pending line.
    pending_ms: RefCell<Vec<u64>>,
}

/// One finished request, for its event and the metrics.
pub(crate) struct RequestRecord<'a> {
    pub(crate) request_id: &'a [u8; 16],
    pub(crate) app: &'a str,
    pub(crate) user: &'a str,
    pub(crate) client: IpAddr,
    pub(crate) method: &'a str,
    /// The host the request was routed by ("" before routing).
    pub(crate) host: &'a str,
    /// Its path, without the query (which may carry secrets).
    pub(crate) path: &'a str,
    /// Answered by Gatehouse itself (a page, a redirect to sign in, robots.txt), not by the
    /// back end.
    pub(crate) local: bool,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) started: Instant,
}

/// Most bytes of a host, a path and a user name in an event: an event line stays bounded
/// (about 2 KiB) whatever a client sends.
const EVENT_HOST_MAX: usize = 256;
const EVENT_PATH_MAX: usize = 1024;
const EVENT_USER_MAX: usize = 256;

#[derive(Serialize)]
struct PanicEvent<'a> {
    time: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    task: &'static str,
    message: &'a str,
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate_at_char(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Serialize)]
struct RequestEvent<'a> {
    time: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    request_id: &'a str,
    app: &'a str,
    user: &'a str,
    client: IpAddr,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    decision: &'static str,
    status: u16,
    bytes: u64,
    latency_ms: f64,
}

impl WorkerOps {
    /// Counts a request and queues its event.
    pub(crate) fn request(&self, r: &RequestRecord<'_>) {
        let seconds = r.started.elapsed().as_secs_f64();
        {
            let mut c = self.counters.borrow_mut();
            // Keys are allocated once per app and status, not per request.
            match c.requests.get_mut(&(r.app, r.status) as &dyn RequestKey) {
                Some(n) => *n += 1,
                None => {
                    c.requests.insert((r.app.to_owned(), r.status), 1);
                }
            }
            if !c.latency.contains_key(r.app) {
                c.latency.insert(r.app.to_owned(), Default::default());
            }
            let Some(entry) = c.latency.get_mut(r.app) else {
                return;
            };
            for (bucket, bound) in entry.0.iter_mut().zip(LATENCY_BUCKETS) {
                if seconds <= bound {
                    *bucket += 1;
                }
            }
            entry.1 += 1;
            entry.2 += seconds;
        }
        // Time and id go through stack buffers, the line straight into the pending buffer:
        // nothing is allocated per request once the buffers have grown.
        let mut time = [0u8; 20];
        let mut id = [0u8; 32];
        for (pair, b) in id.chunks_exact_mut(2).zip(r.request_id) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        // One clock read for the event's time and its stamp.
        let stamp = now_ms();
        let event = RequestEvent {
            time: rfc3339_into(stamp / 1000, &mut time),
            kind: "request",
            request_id: std::str::from_utf8(&id).unwrap_or(""),
            app: r.app,
            user: truncate_at_char(r.user, EVENT_USER_MAX),
            client: r.client,
            method: r.method,
            host: truncate_at_char(r.host, EVENT_HOST_MAX),
            path: truncate_at_char(r.path, EVENT_PATH_MAX),
            // A redirect of Gatehouse's own (to sign in, to sign out) lets nothing through.
            decision: match (r.local, r.status) {
                (_, 400..) | (_, 0) => "deny",
                (true, 300..=399) => "redirect",
                (true, _) => "local",
                (false, _) => "allow",
            },
            status: r.status,
            bytes: r.bytes,
            latency_ms: (seconds * 1e6).round() / 1e3,
        };
        self.queue(&event, stamp);
    }

    /// Counts a sign-in decision (its event line is `line`).
    pub(crate) fn sign_in(&self, decision: &'static str, reason: &str, line: String) {
        *self
            .counters
            .borrow_mut()
            .sign_ins
            .entry((decision, reason.to_owned()))
            .or_default() += 1;
        let mut pending = self.pending.borrow_mut();
        pending.extend_from_slice(line.as_bytes());
        pending.push(b'\n');
        self.pending_ms.borrow_mut().push(now_ms());
    }

    /// Counts a request turned away by the rate limit.
    pub(crate) fn rate_limited(&self) {
        self.counters.borrow_mut().rate_limited += 1;
    }

    /// Counts a task that panicked (the panic was contained: only that task ended) and queues
    /// its event; `task` says what it served.
    pub(crate) fn task_panicked(&self, task: &'static str, message: &str) {
        self.counters.borrow_mut().panics += 1;
        let stamp = now_ms();
        let mut time = [0u8; 20];
        let event = PanicEvent {
            time: rfc3339_into(stamp / 1000, &mut time),
            kind: "panic",
            task,
            // Bounded: a panic message may quote data.
            message: truncate_at_char(message, 512),
        };
        self.queue(&event, stamp);
    }

    fn queue<T: Serialize>(&self, event: &T, stamp: u64) {
        let mut pending = self.pending.borrow_mut();
        let start = pending.len();
        if serde_json::to_writer(&mut *pending, event).is_ok() {
            pending.push(b'\n');
            self.pending_ms.borrow_mut().push(stamp);
        } else {
            pending.truncate(start);
        }
    }

    /// Publishes the tables and hands the pending lines to the sink and the ring.
    pub(crate) fn publish(
        &self,
        worker: usize,
        published: &Published,
        events: &EventsOut,
        tunnels: BTreeMap<String, (usize, usize)>,
    ) {
        {
            let mut c = self.counters.borrow_mut();
            c.tunnels = tunnels;
            *published.counters.lock().unwrap_or_else(|e| e.into_inner()) = c.clone();
        }
        let mut pending = self.pending.borrow_mut();
        let mut stamps = self.pending_ms.borrow_mut();
        if pending.is_empty() {
            return;
        }
        // The next tick fills buffers that came back from the ring; until there are some,
        // new ones of this tick's size. None is allocated per request.
        let (next_lines, next_stamps) = published.take_spare().unwrap_or_else(|| {
            (
                Vec::with_capacity(pending.capacity()),
                Vec::with_capacity(stamps.capacity()),
            )
        });
        let lines = std::mem::replace(&mut *pending, next_lines);
        let stamps = std::mem::replace(&mut *stamps, next_stamps);
        events.send(Batch::Lines {
            worker,
            lines,
            stamps,
        });
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The admin listener: serves until the service stops.
pub(crate) fn run_admin(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let Ok(mut runtime) = gatehouse_http1::rt::runtime() else {
        return;
    };
    runtime.block_on(async move {
        let Ok(listener) = TcpListener::from_std(listener) else {
            return;
        };
        loop {
            let accepted =
                monoio::time::timeout(Duration::from_millis(200), listener.accept()).await;
            if shared.stop.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            if let Ok(Ok((tcp, _))) = accepted {
                monoio::spawn(admin_connection(tcp, shared.clone()));
            }
        }
    });
}

async fn admin_connection(tcp: TcpStream, shared: Arc<Shared>) {
    let mut conn = Conn::new(tcp, BytesMut::with_capacity(4096), Limits::default());
    loop {
        let deadline = Instant::now() + Duration::from_secs(30);
        let request = conn
            .read_request_head(Some(deadline), |head| {
                let token = head
                    .fields
                    .get("authorization")
                    .and_then(|v| v.strip_prefix(b"Bearer "))
                    .map(|t| String::from_utf8_lossy(t).trim().to_owned());
                (
                    String::from_utf8_lossy(head.method).into_owned(),
                    String::from_utf8_lossy(head.target).into_owned(),
                    token,
                    head.keep_alive,
                )
            })
            .await;
        let (method, target, token, keep_alive) = match request {
            Ok(r) => r,
            Err(ConnError::Http(_)) | Err(_) => return,
        };
        let (status, content_type, body) = answer(&shared, &method, &target, token.as_deref());
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\n{}\r\n",
            crate::pages::reason(status),
            body.len(),
            if keep_alive {
                ""
            } else {
                "Connection: close\r\n"
            }
        )
        .into_bytes();
        out.extend_from_slice(&body);
        if conn.write_vec(out).await.0.is_err() || !keep_alive {
            return;
        }
    }
}

/// Answers one admin request: (status, content type, body).
fn answer(
    shared: &Shared,
    method: &str,
    target: &str,
    token: Option<&str>,
) -> (u16, &'static str, Vec<u8>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" {
        return (405, "text/plain", b"GET only\n".to_vec());
    }
    if path == "/healthz" {
        return (200, "text/plain", b"ok\n".to_vec());
    }
    let authorized = token.is_some_and(|t| shared.control.token_role(t, unix_now()).is_ok());
    if !authorized {
        return (
            401,
            "text/plain",
            b"an admin or viewer token is required (Authorization: Bearer)\n".to_vec(),
        );
    }
    match path {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4",
            metrics(shared).into_bytes(),
        ),
        "/api/events" => {
            let since = query
                .split('&')
                .find_map(|p| p.strip_prefix("since="))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            (200, "application/json", events_since(shared, since))
        }
        "/status" | "/" => (
            200,
            "text/html; charset=utf-8",
            status_page(shared).into_bytes(),
        ),
        _ => (404, "text/plain", b"not found\n".to_vec()),
    }
}

/// The published counters of all workers, summed.
fn totals(shared: &Shared) -> Counters {
    let mut sum = Counters::default();
    for worker in shared.ops.iter() {
        let c = worker.counters.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in &c.requests {
            *sum.requests.entry(k.clone()).or_default() += v;
        }
        for (app, (buckets, count, seconds)) in &c.latency {
            let e = sum.latency.entry(app.clone()).or_default();
            for (a, b) in e.0.iter_mut().zip(buckets) {
                *a += b;
            }
            e.1 += count;
            e.2 += seconds;
        }
        for (k, v) in &c.sign_ins {
            *sum.sign_ins.entry(k.clone()).or_default() += v;
        }
        sum.rate_limited += c.rate_limited;
        sum.panics += c.panics;
        for (group, (tunnels, connectors)) in &c.tunnels {
            let e = sum.tunnels.entry(group.clone()).or_default();
            e.0 += tunnels;
            e.1 = e.1.max(*connectors);
        }
    }
    sum
}

/// Prometheus text exposition.
fn metrics(shared: &Shared) -> String {
    let c = totals(shared);
    let mut out = String::new();
    let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    out.push_str("# HELP gatehouse_requests_total Requests answered, by app and status.\n");
    out.push_str("# TYPE gatehouse_requests_total counter\n");
    let mut requests: Vec<_> = c.requests.iter().collect();
    requests.sort();
    for ((app, status), n) in requests {
        let _ = writeln!(
            out,
            "gatehouse_requests_total{{app=\"{}\",status=\"{status}\"}} {n}",
            label(app)
        );
    }
    out.push_str(
        "# HELP gatehouse_request_duration_seconds Time from request head to response end.\n",
    );
    out.push_str("# TYPE gatehouse_request_duration_seconds histogram\n");
    let mut latency: Vec<_> = c.latency.iter().collect();
    latency.sort_by(|a, b| a.0.cmp(b.0));
    for (app, (buckets, count, seconds)) in latency {
        let app = label(app);
        for (bound, n) in LATENCY_BUCKETS.iter().zip(buckets) {
            let _ = writeln!(
                out,
                "gatehouse_request_duration_seconds_bucket{{app=\"{app}\",le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "gatehouse_request_duration_seconds_bucket{{app=\"{app}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "gatehouse_request_duration_seconds_sum{{app=\"{app}\"}} {seconds}"
        );
        let _ = writeln!(
            out,
            "gatehouse_request_duration_seconds_count{{app=\"{app}\"}} {count}"
        );
    }
    out.push_str("# HELP gatehouse_tunnels Open tunnels, by connector group.\n");
    out.push_str("# TYPE gatehouse_tunnels gauge\n");
    for (group, (tunnels, _)) in &c.tunnels {
        let _ = writeln!(
            out,
            "gatehouse_tunnels{{group=\"{}\"}} {tunnels}",
            label(group)
        );
    }
    out.push_str("# HELP gatehouse_connectors Connectors with open tunnels, by group.\n");
    out.push_str("# TYPE gatehouse_connectors gauge\n");
    for (group, (_, connectors)) in &c.tunnels {
        let _ = writeln!(
            out,
            "gatehouse_connectors{{group=\"{}\"}} {connectors}",
            label(group)
        );
    }
    out.push_str("# HELP gatehouse_sign_ins_total Sign-in decisions, by decision and reason.\n");
    out.push_str("# TYPE gatehouse_sign_ins_total counter\n");
    let mut sign_ins: Vec<_> = c.sign_ins.iter().collect();
    sign_ins.sort();
    for ((decision, reason), n) in sign_ins {
        let _ = writeln!(
            out,
            "gatehouse_sign_ins_total{{decision=\"{decision}\",reason=\"{}\"}} {n}",
            label(reason)
        );
    }
    out.push_str("# HELP gatehouse_rate_limited_total Requests answered 429 by the rate limit.\n");
    out.push_str("# TYPE gatehouse_rate_limited_total counter\n");
    let _ = writeln!(out, "gatehouse_rate_limited_total {}", c.rate_limited);
    out.push_str(
        "# HELP gatehouse_task_panics_total Connections and tunnels ended by a contained panic.\n",
    );
    out.push_str("# TYPE gatehouse_task_panics_total counter\n");
    let _ = writeln!(out, "gatehouse_task_panics_total {}", c.panics);
    out
}

/// Events after `since` (Unix milliseconds), oldest first, at most 1000: a JSON array.
fn events_since(shared: &Shared, since: u64) -> Vec<u8> {
    let mut events: Vec<(u64, String)> = Vec::new();
    for worker in shared.ops.iter() {
        let ring = worker.events.lock().unwrap_or_else(|e| e.into_inner());
        // The lines are our own JSON, so UTF-8; one that were not would be left out.
        events.extend(
            ring.iter()
                .filter(|(t, _)| *t > since)
                .filter_map(|(t, line)| Some((t, std::str::from_utf8(line).ok()?.to_owned()))),
        );
    }
    events.sort_by_key(|(t, _)| *t);
    events.truncate(1000);
    let mut out = String::from("[");
    for (i, (t, line)) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Each event carries its millisecond stamp, the `since` of the next poll.
        let _ = write!(out, "{{\"ms\":{t},\"event\":{line}}}");
    }
    out.push(']');
    out.into_bytes()
}

/// A small HTML page of connectors, groups and apps.
fn status_page(shared: &Shared) -> String {
    let c = totals(shared);
    let snapshot = shared.snapshot();
    let esc = crate::pages::escape;
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Gatehouse status</title>\
         <style>body{font-family:sans-serif;margin:2rem}td,th{padding:.2rem .8rem;text-align:left}\
         </style></head><body><h1>Gatehouse status</h1>",
    );
    page.push_str("<h2>Connectors</h2><table id=\"connectors\"><tr><th>id</th><th>group</th><th>state</th></tr>");
    for record in shared.control.connectors() {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&record.id),
            esc(&record.group),
            if record.revoked {
                "revoked"
            } else {
                "registered"
            }
        );
    }
    page.push_str("</table><h2>Groups</h2><table id=\"groups\"><tr><th>group</th><th>tunnels</th><th>connectors online</th></tr>");
    for (group, (tunnels, connectors)) in &c.tunnels {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{tunnels}</td><td>{connectors}</td></tr>",
            esc(group)
        );
    }
    page.push_str("</table><h2>Apps</h2><table id=\"apps\"><tr><th>app</th><th>external URL</th><th>mode</th><th>group</th><th>requests</th></tr>");
    for app in &snapshot.config.apps {
        let requests: u64 = c
            .requests
            .iter()
            .filter(|((a, _), _)| a == &app.name)
            .map(|(_, n)| n)
            .sum();
        let _ =
            write!(
            page,
            "<tr><td>{}</td><td>https://{}{}</td><td>{}</td><td>{}</td><td>{requests}</td></tr>",
            esc(&app.name),
            esc(&app.external.host.to_string()),
            esc(&app.external.path_prefix),
            if app.preauth.is_some() { "preauth" } else { "passthrough" },
            esc(&app.group)
        );
    }
    page.push_str("</table></body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_ring_keeps_the_latest_events_in_order_and_drops_whole_old_batches() {
        let mut ring = EventRing::default();
        let batch = |first: u64, n: u64| {
            let stamps: Vec<u64> = (first..first + n).collect();
            let lines: Vec<u8> = stamps
                .iter()
                .flat_map(|t| format!("{{\"n\":{t}}}\n").into_bytes())
                .collect();
            (stamps, lines)
        };
        let mut next = 0;
        for n in [4000, 4000, 4000, 3000] {
            let (stamps, lines) = batch(next, n);
            let evicted = ring.push(stamps, lines);
            assert_eq!(evicted.len(), usize::from(next == 12_000));
            next += n;
        }
        // 15,000 pushed: the first batch (4,000) went, since 11,000 remain without it.
        assert_eq!(ring.count, 11_000);
        let kept: Vec<(u64, Vec<u8>)> = ring.iter().map(|(t, l)| (t, l.to_vec())).collect();
        assert_eq!(kept.len(), 11_000);
        assert_eq!(kept[0], (4000, b"{\"n\":4000}".to_vec()));
        assert_eq!(kept.last().map(|k| k.0), Some(14_999));
        assert!(kept.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn requests_are_counted_by_app_and_status_and_queued_as_events() {
        let ops = WorkerOps::default();
        let record = |app: &'static str, status: u16| RequestRecord {
            request_id: &[1; 16],
            app,
            user: "alice",
            client: IpAddr::from([192, 0, 2, 1]),
            method: "GET",
            host: "wiki.example.com",
            path: "/page",
            local: false,
            status,
            bytes: 10,
            started: Instant::now(),
        };
        ops.request(&record("wiki", 200));
        ops.request(&record("wiki", 200));
        ops.request(&record("wiki", 404));
        ops.request(&record("mail", 200));
        let c = ops.counters.borrow();
        assert_eq!(c.requests[&("wiki".to_owned(), 200)], 2);
        assert_eq!(c.requests[&("wiki".to_owned(), 404)], 1);
        assert_eq!(c.requests[&("mail".to_owned(), 200)], 1);
        assert_eq!(c.latency["wiki"].1, 3);
        let pending = ops.pending.borrow();
        let lines: Vec<&[u8]> = pending
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(ops.pending_ms.borrow().len(), 4);
        let event: serde_json::Value = serde_json::from_slice(lines[2]).unwrap();
        assert_eq!(event["request_id"], "01".repeat(16));
        assert_eq!(event["type"], "request");
        assert_eq!(event["status"], 404);
        assert_eq!(event["decision"], "deny");
        assert_eq!(event["user"], "alice");
        assert_eq!(event["host"], "wiki.example.com");
        assert_eq!(event["path"], "/page");
    }

    /// Gatehouse's own answers are not "allow": a redirect (to sign in) is "redirect", a page
    /// of its own "local". Host, path and user are cut to a bound, so an event stays small
    /// whatever the client sent.
    #[test]
    fn local_answers_are_not_allowed_through_and_events_are_bounded() {
        let ops = WorkerOps::default();
        let long_path = format!("/{}", "p".repeat(10_000));
        let long_user = "u".repeat(10_000);
        for (status, local) in [(302, true), (200, true), (200, false), (503, true)] {
            ops.request(&RequestRecord {
                request_id: &[2; 16],
                app: "wiki",
                user: &long_user,
                client: IpAddr::from([192, 0, 2, 1]),
                method: "GET",
                host: "wiki.example.com",
                path: &long_path,
                local,
                status,
                bytes: 0,
                started: Instant::now(),
            });
        }
        let pending = ops.pending.borrow();
        let events: Vec<serde_json::Value> = pending
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                assert!(l.len() < 2048, "{} bytes", l.len());
                serde_json::from_slice(l).unwrap()
            })
            .collect();
        let decisions: Vec<&str> = events
            .iter()
            .map(|e| e["decision"].as_str().unwrap())
            .collect();
        assert_eq!(decisions, ["redirect", "local", "allow", "deny"]);
        assert_eq!(events[0]["app"], "wiki");
        assert_eq!(events[0]["path"].as_str().unwrap().len(), EVENT_PATH_MAX);
    }

    /// A contained panic is counted for /metrics and queued as a `panic` event whose message
    /// is bounded (it may quote data).
    #[test]
    fn a_contained_panic_is_counted_and_queued_as_an_event() {
        let ops = WorkerOps::default();
        let long = "é".repeat(1000);
        ops.task_panicked("client connection", &long);
        ops.task_panicked("tunnel", "index out of bounds");
        assert_eq!(ops.counters.borrow().panics, 2);
        let pending = ops.pending.borrow();
        let lines: Vec<serde_json::Value> = pending
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines[0]["type"], "panic");
        assert_eq!(lines[0]["task"], "client connection");
        assert!(lines[0]["message"].as_str().unwrap().len() <= 512);
        assert_eq!(lines[1]["message"], "index out of bounds");
    }
}
