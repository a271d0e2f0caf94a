//! One request from a tunnel stream to an internal app and back.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gatehouse_core::api::{AppRoute, ConnectorConfig, IdentityHeaderNames};
use gatehouse_core::links::LinkRules;
use gatehouse_core::translate::{self, Mapping, Origin};
use gatehouse_http1::rt::{idle_and_open, Conn, ConnError, TlsStream, Transport};
use gatehouse_http1::{BodyDecoder, BodyKind, Fields, Limits, RequestMethod};
use gatehouse_tunnel::frame::{
    BodyLength, Identity, IdentityCache, Open, ResponseParts, IDENTITY_CACHE_MAX,
};
use gatehouse_tunnel::rt::{relay, StreamEvent, StreamHandle};
use gatehouse_tunnel::Code;
use monoio::net::TcpStream;

use crate::body::{self, BodyTranslator, BodyType};
use crate::run::Shared;
use crate::{connect, tls};

/// Time to connect (and finish TLS) to a back end.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle back-end connections kept per app and thread: as many as a busy thread has requests
/// in flight, so that a steady load never closes and reopens back-end connections (nginx's
/// `keepalive` cache plays the same part).
const POOL_PER_APP: usize = 256;

/// A connection to a back end.
enum Backend {
    Plain(Conn<TcpStream>),
    Tls(Box<Conn<TlsStream<TcpStream>>>),
}

impl Backend {
    /// Whether this pooled connection can take a request: nothing buffered, nothing to read
    /// and no end of stream on its socket (see [`idle_and_open`]).
    fn idle_and_open(&self) -> bool {
        match self {
            Backend::Plain(conn) => conn.buffered().is_empty() && idle_and_open(conn.io()),
            Backend::Tls(conn) => conn.buffered().is_empty() && idle_and_open(conn.io().get_ref()),
        }
    }
}

/// Idle back-end connections of one app and host, the most recently used last, each with the
/// time it went idle.
type Idle = Vec<(Backend, Instant)>;

/// What one connector thread keeps: the configuration in force, pooled back-end connections,
/// back-end TLS settings.
pub(crate) struct ThreadCtx {
    pub(crate) shared: Arc<Shared>,
    config: RefCell<Arc<ConnectorConfig>>,
    generation: Cell<u64>,
    pool: RefCell<HashMap<String, Idle>>,
    backend_tls: RefCell<HashMap<String, Arc<rustls::ClientConfig>>>,
    /// Tunnels this thread serves: on SIGTERM the thread waits for them to drain.
    pub(crate) live_tunnels: Cell<u32>,
}

impl ThreadCtx {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ThreadCtx {
            config: RefCell::new(shared.config()),
            generation: Cell::new(shared.config_generation.load(Ordering::Acquire)),
            shared,
            pool: RefCell::new(HashMap::new()),
            backend_tls: RefCell::new(HashMap::new()),
            live_tunnels: Cell::new(0),
        }
    }

    fn config(&self) -> Arc<ConnectorConfig> {
        let generation = self.shared.config_generation.load(Ordering::Acquire);
        if generation != self.generation.get() {
            self.generation.set(generation);
            *self.config.borrow_mut() = self.shared.config();
            // Settings may have changed: start afresh with back ends.
            self.pool.borrow_mut().clear();
            self.backend_tls.borrow_mut().clear();
        }
        self.config.borrow().clone()
    }
}

/// A signed-in user's identity as the back end receives it: values checked once (a value
/// with a control character is left out rather than sent broken), groups joined.
#[derive(Debug, Default)]
pub(crate) struct KeptIdentity {
    user: String,
    email: String,
    name: String,
    groups: String,
    assertion: String,
}

impl KeptIdentity {
    fn new(identity: &Identity<'_>) -> Self {
        let clean = |v: &str| {
            if v.bytes().any(|b| b < 0x20 || b == 0x7f) {
                String::new()
            } else {
                v.to_owned()
            }
        };
        let mut groups = String::new();
        for group in identity.groups().filter(|g| !clean(g).is_empty()) {
            if !groups.is_empty() {
                groups.push(',');
            }
            groups.push_str(group);
        }
        KeptIdentity {
            user: clean(identity.user),
            email: clean(identity.email),
            name: clean(identity.name),
            groups,
            assertion: clean(identity.assertion),
        }
    }
}

/// The identities one tunnel's OPEN frames stored (see [`IdentityCache`]): the same rule as
/// the service's side, so that the two stay in step.
#[derive(Default)]
pub(crate) struct TunnelIdentities {
    kept: HashMap<[u8; 16], Rc<KeptIdentity>>,
}

impl TunnelIdentities {
    /// The identity of a new stream, read in the order the OPEN frames arrived. `Err(())`:
    /// the frame names a kept identity this tunnel does not have (the stream is refused, and
    /// the service tries again with the identity in full).
    pub(crate) fn resolve(&mut self, open: &Open) -> Result<Option<Rc<KeptIdentity>>, ()> {
        match open.identity_cache() {
            IdentityCache::None => Ok(open.identity().map(|i| Rc::new(KeptIdentity::new(&i)))),
            IdentityCache::Store(key) => {
                let Some(identity) = open.identity() else {
                    return Err(());
                };
                let kept = Rc::new(KeptIdentity::new(&identity));
                if !self.kept.contains_key(&key) && self.kept.len() >= IDENTITY_CACHE_MAX {
                    self.kept.clear();
                }
                self.kept.insert(key, kept.clone());
                Ok(Some(kept))
            }
            IdentityCache::Use(key) => self.kept.get(&key).cloned().map(Some).ok_or(()),
        }
    }
}

/// Buffers a request handler reuses for every request it serves (none is allocated per
/// request once they have grown to fit).
#[derive(Default)]
pub(crate) struct RequestBuffers {
    /// The back-end connection pool key: app and internal host.
    key: String,
    /// The request head for the back end.
    head: Vec<u8>,
    /// The response fields for the tunnel.
    fields: ResponseFields,
}

/// Response fields, names and values back to back in one buffer.
#[derive(Default)]
struct ResponseFields {
    bytes: Vec<u8>,
    /// Name and value of each field, as ranges of `bytes`.
    spans: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl ResponseFields {
    fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }

    /// Adds a field whose value `write_value` appends to the buffer it is given.
    fn push(&mut self, name: &[u8], write_value: impl FnOnce(&mut Vec<u8>)) {
        let name_start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        let value_start = self.bytes.len();
        write_value(&mut self.bytes);
        self.spans
            .push((name_start..value_start, value_start..self.bytes.len()));
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|(n, v)| (&self.bytes[n.clone()], &self.bytes[v.clone()]))
    }
}

/// Serves one stream: the request in `open`, its body from `stream`.
pub(crate) async fn handle(
    open: Open,
    stream: StreamHandle,
    ctx: Rc<ThreadCtx>,
    identity: Option<Rc<KeptIdentity>>,
    buffers: &mut RequestBuffers,
) {
    let config = ctx.config();
    let Some(app) = config.apps.iter().find(|a| a.name == open.app()) else {
        stream.reset(Code::UPSTREAM_UNREACHABLE);
        return;
    };
    let client_host = open
        .fields()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"host"))
        .map_or(&b""[..], |(_, v)| v);
    // The hosts of this request, worked out once: the target comes only from configuration.
    let Some(parts) = mapping_parts(app, client_host) else {
        stream.reset(Code::UPSTREAM_UNREACHABLE);
        return;
    };
    let RequestBuffers { key, head, fields } = buffers;
    key.clear();
    key.push_str(&app.name);
    key.push('|');
    key.push_str(&parts.internal_host);
    let key = &*key;
    head.clear();
    if !write_request_head(head, &open, app, &parts, client_host, identity.as_deref()) {
        stream.reset(Code::PROTOCOL_ERROR);
        return;
    }
    // A request with a body must not go out on a connection the back end has closed: the
    // body cannot be sent again once taken from the tunnel; nor may any request the service
    // would not send again. A body-less GET, HEAD or OPTIONS may (if the connection turns out
    // closed, the service sends it again), which spares the busiest requests the check.
    let check = !(open.end && matches!(open.method(), b"GET" | b"HEAD" | b"OPTIONS"));
    let keepalive = Duration::from_millis(app.backend_keepalive_ms);
    let mut pooled = take_pooled(ctx.pool.borrow_mut().get_mut(key), keepalive, check);
    loop {
        let fresh = pooled.is_none();
        let backend = match pooled.take() {
            Some(b) => b,
            // Boxed, like the TLS exchange and upgrades below: rare or per-connection paths
            // whose futures would otherwise size every request's task.
            None => match Box::pin(dial(app, &parts.internal_host, &ctx)).await {
                Ok(b) => b,
                Err(code) => {
                    stream.reset(code);
                    return;
                }
            },
        };
        let outcome = match backend {
            Backend::Plain(conn) => {
                exchange(
                    conn,
                    &open,
                    &stream,
                    (app, &parts),
                    (head, fields),
                    fresh,
                    &ctx,
                    key,
                    Backend::Plain,
                )
                .await
            }
            Backend::Tls(conn) => {
                Box::pin(exchange(
                    *conn,
                    &open,
                    &stream,
                    (app, &parts),
                    (head, fields),
                    fresh,
                    &ctx,
                    key,
                    |c| Backend::Tls(Box::new(c)),
                ))
                .await
            }
        };
        // Nothing of the request reached the pooled connection: once more on a new one.
        if outcome != Exchange::Stale {
            return;
        }
    }
}

/// The most recently used idle connection that is still fit for a request: idle for less than
/// `keepalive` and, with `check`, still open ([`Backend::idle_and_open`]). Those that are not
/// are closed on the way.
fn take_pooled(idle: Option<&mut Idle>, keepalive: Duration, check: bool) -> Option<Backend> {
    let idle = idle?;
    let now = Instant::now();
    while let Some((backend, since)) = idle.pop() {
        if now.duration_since(since) < keepalive && (!check || backend.idle_and_open()) {
            return Some(backend);
        }
    }
    None
}

/// How one exchange with a back end ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exchange {
    /// The response went to the tunnel in full; the connection went back to the pool.
    Pooled,
    /// The exchange is over (answered, reset, or upgraded) and the connection closed.
    Closed,
    /// The pooled connection failed before any byte of the request reached the back end and
    /// nothing was taken from the tunnel: the request may go out on a new connection.
    Stale,
}

/// The request/response exchange over one back-end connection (plain or TLS). A pooled
/// connection the back end had closed is replaced once, for requests without a body.
#[allow(clippy::too_many_arguments)]
async fn exchange<T: Transport + Splittable + 'static>(
    mut conn: Conn<T>,
    open: &Open,
    stream: &StreamHandle,
    (app, mapping_parts): (&AppRoute, &MappingParts<'_>),
    (head, fields_out): (&mut Vec<u8>, &mut ResponseFields),
    fresh: bool,
    ctx: &ThreadCtx,
    key: &str,
    wrap: fn(Conn<T>) -> Backend,
) -> Exchange {
    let method = RequestMethod {
        head: open.method() == b"HEAD",
        connect: false,
    };
    let (res, written) = conn.write_vec(std::mem::take(head)).await;
    *head = written;
    if res.is_err() {
        if !fresh {
            // A pooled connection the back end had closed: the head did not get through and
            // the body, if any, is still in the tunnel.
            return Exchange::Stale;
        }
        stream.reset(Code::UPSTREAM_UNREACHABLE);
        return Exchange::Closed;
    }
    // Request body from the tunnel to the back end.
    let chunked = open.body == BodyLength::Streamed;
    // An upgrade request has no body but keeps its stream open for the new protocol.
    let mut request_done = open.end || open.body == BodyLength::Empty;
    let idle = Duration::from_millis(app.idle_timeout_ms);
    let mut size_line = [0u8; 20];
    while !request_done {
        let event = match monoio::time::timeout(idle, stream.next()).await {
            Ok(e) => e,
            Err(_) => {
                stream.reset(Code::UPSTREAM_TIMEOUT);
                return Exchange::Closed;
            }
        };
        match event {
            StreamEvent::Data(data) => {
                let len = data.len();
                let written = match chunked {
                    true => {
                        let line = gatehouse_http1::chunk_size_line(len, &mut size_line);
                        conn.io_mut().write_framed(line, data, b"\r\n").await
                    }
                    false => conn.io_mut().write_bytes(data).await,
                };
                if written.is_err() {
                    stream.reset(Code::UPSTREAM_UNREACHABLE);
                    return Exchange::Closed;
                }
                stream.consume(len);
            }
            StreamEvent::End => {
                if chunked
                    && conn
                        .write_bytes(Bytes::from_static(b"0\r\n\r\n"))
                        .await
                        .is_err()
                {
                    stream.reset(Code::UPSTREAM_UNREACHABLE);
                    return Exchange::Closed;
                }
                request_done = true;
            }
            _ => return Exchange::Closed,
        }
    }

    // Response head.
    let deadline = Instant::now() + Duration::from_millis(app.response_timeout_ms);
    let (status, body_kind, reusable, body_type) = loop {
        fields_out.clear();
        let head = conn
            .read_response_head(Some(deadline), |h| {
                let body_type = translated_body(app, &h.fields);
                for f in h.fields.as_slice() {
                    if is_response_hop(f.name) {
                        continue;
                    }
                    // A translated body's bytes are not the back end's: its validator can
                    // only be weak (still good for If-None-Match, never for If-Match). A 304
                    // may not name its type: with translation on, it is weakened too, as
                    // the 200 it revalidates was.
                    let translated = body_type.is_some() || app.translate_body && h.status == 304;
                    let weaken = translated
                        && f.name.eq_ignore_ascii_case(b"etag")
                        && !f.value.starts_with(b"W/");
                    fields_out.push(f.name, |out| {
                        if weaken {
                            out.extend_from_slice(b"W/");
                        }
                        translate_field(f.name, f.value, app, mapping_parts, out)
                    });
                }
                let upgrade = h.status == 101;
                if upgrade {
                    if let Some(v) = h.fields.get("upgrade") {
                        fields_out.push(b"Upgrade", |out| out.extend_from_slice(v));
                    }
                }
                (h.status, h.body(method), h.reusable(method), body_type)
            })
            .await;
        match head {
            Ok((status, _, _, _)) if (100..200).contains(&status) && status != 101 => continue,
            Ok((status, Ok(kind), reusable, body_type)) => {
                break (status, kind, reusable, body_type)
            }
            Ok((_, Err(_), _, _)) | Err(ConnError::Http(_)) => {
                stream.reset(Code::UPSTREAM_PROTOCOL);
                return Exchange::Closed;
            }
            Err(ConnError::Timeout) => {
                stream.reset(Code::UPSTREAM_TIMEOUT);
                return Exchange::Closed;
            }
            Err(ConnError::Closed) if !fresh && open.end => {
                // The pooled connection was closed by the back end before we used it: the
                // request never reached it, so the service may send it again.
                stream.reset(Code::REFUSED_STREAM);
                return Exchange::Closed;
            }
            Err(_) => {
                stream.reset(Code::UPSTREAM_UNREACHABLE);
                return Exchange::Closed;
            }
        }
    };
    let body = match (status, body_kind) {
        (101, _) => BodyLength::Streamed,
        (_, BodyKind::Empty) => BodyLength::Empty,
        // A translated body's length changes.
        (_, BodyKind::Length(_)) if body_type.is_some() => BodyLength::Streamed,
        (_, BodyKind::Length(n)) => BodyLength::Known(n),
        (_, BodyKind::Chunked | BodyKind::CloseDelimited) => BodyLength::Streamed,
    };
    // HEAD and 304 answers carry the length the back end announced, with no body; not for a
    // translated body, whose length is known only once it has been translated.
    let announced = (body_type.is_none() && (method.head || status == 304))
        .then(|| {
            fields_out
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(b"content-length"))
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
        })
        .flatten();
    let no_body = status != 101 && body_kind == BodyKind::Empty;
    let responded = stream.respond(ResponseParts {
        stream: stream.id(),
        end: no_body,
        status,
        body: match announced {
            Some(n) => BodyLength::Known(n),
            None => body,
        },
        fields: fields_out
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(b"content-length")),
    });
    if responded.is_err() {
        return Exchange::Closed;
    }
    if status == 101 {
        Box::pin(upgraded(conn, stream)).await;
        return Exchange::Closed;
    }
    if no_body {
        return finish(
            conn,
            reusable && request_done,
            ctx,
            (key, Duration::from_millis(app.backend_keepalive_ms)),
            wrap,
        );
    }
    // Response body: each piece leaves the read buffer as `Bytes` and goes into the tunnel
    // as it is (or translated, for `translate_body`); credit from the service paces the back
    // end.
    let mut decoder = BodyDecoder::new(body_kind, &Limits::default());
    let mut translator = body_type
        .map(|kind| BodyTranslator::new(kind, Rc::new(link_rules(app, mapping_parts, ctx))));
    loop {
        let next = conn
            .next_body_chunk(&mut decoder, Some(Instant::now() + idle))
            .await;
        match next {
            Ok(Some(chunk)) => {
                let chunk = match translator.as_mut().map(|t| t.write(&chunk)) {
                    None => chunk,
                    Some(Ok(translated)) if translated.is_empty() => continue,
                    Some(Ok(translated)) => translated,
                    Some(Err(e)) => {
                        eprintln!("gatehouse connector: app {}: {e}", app.name);
                        stream.reset(Code::UPSTREAM_PROTOCOL);
                        return Exchange::Closed;
                    }
                };
                if !matches!(stream.send(chunk, false).await, Ok(true)) {
                    return Exchange::Closed;
                }
            }
            Ok(None) => {
                let rest = match translator.take().map(BodyTranslator::end) {
                    None => Bytes::new(),
                    Some(Ok(rest)) => rest,
                    Some(Err(e)) => {
                        eprintln!("gatehouse connector: app {}: {e}", app.name);
                        stream.reset(Code::UPSTREAM_PROTOCOL);
                        return Exchange::Closed;
                    }
                };
                let _ = stream.send(rest, true).await;
                return finish(
                    conn,
                    reusable && request_done,
                    ctx,
                    (key, Duration::from_millis(app.backend_keepalive_ms)),
                    wrap,
                );
            }
            Err(_) => {
                // Cut mid-body: the client must see an error, never a short success.
                stream.reset(Code::UPSTREAM_PROTOCOL);
                return Exchange::Closed;
            }
        }
    }
}

fn finish<T>(
    conn: Conn<T>,
    reusable: bool,
    ctx: &ThreadCtx,
    (key, keepalive): (&str, Duration),
    wrap: fn(Conn<T>) -> Backend,
) -> Exchange {
    // backend_keepalive = 0: a connection per request.
    if !reusable || keepalive.is_zero() {
        return Exchange::Closed;
    }
    let now = Instant::now();
    let mut pool = ctx.pool.borrow_mut();
    match pool.get_mut(key) {
        Some(idle) => {
            // Those idle too long go now, not only when reached: their descriptors are not
            // held for a back end that closed its side long ago. The oldest are at the front.
            let expired = idle
                .iter()
                .take_while(|(_, since)| now.duration_since(*since) >= keepalive)
                .count();
            idle.drain(..expired);
            if idle.len() < POOL_PER_APP {
                idle.push((wrap(conn), now));
            }
        }
        None => {
            pool.insert(key.to_owned(), vec![(wrap(conn), now)]);
        }
    }
    Exchange::Pooled
}

/// A back-end stream that can be split into read and write halves for an upgraded connection.
pub(crate) trait Splittable: Sized {
    /// Copies bytes both ways between `self` (with `leftover` already read) and the stream.
    fn pump(
        self,
        leftover: BytesMut,
        stream: &StreamHandle,
    ) -> impl std::future::Future<Output = ()>;
}

impl Splittable for TcpStream {
    async fn pump(self, leftover: BytesMut, stream: &StreamHandle) {
        let (reader, writer) = monoio::io::Splitable::into_split(self);
        relay(reader, writer, leftover, stream).await;
    }
}

impl Splittable for TlsStream<TcpStream> {
    async fn pump(self, leftover: BytesMut, stream: &StreamHandle) {
        let (reader, writer) = self.into_split();
        relay(reader, writer, leftover, stream).await;
    }
}

async fn upgraded<T: Splittable + Transport>(conn: Conn<T>, stream: &StreamHandle) {
    let (io, leftover) = conn.into_parts();
    io.pump(leftover, stream).await;
}

/// Connects to the app's back end (TLS for https).
async fn dial(app: &AppRoute, host: &str, ctx: &ThreadCtx) -> Result<Backend, Code> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let address = if host.contains(':') {
        format!("[{host}]:{}", app.internal_port)
    } else {
        format!("{host}:{}", app.internal_port)
    };
    let tcp = connect(&address, deadline)
        .await
        .map_err(|_| Code::UPSTREAM_UNREACHABLE)?;
    let buf = BytesMut::with_capacity(16 * 1024);
    if !app.internal_https {
        return Ok(Backend::Plain(Conn::new(tcp, buf, Limits::default())));
    }
    let config = {
        let mut cache = ctx.backend_tls.borrow_mut();
        match cache.get(&app.name) {
            Some(c) => c.clone(),
            None => {
                let pin = app.backend_pin.as_deref().and_then(parse_pin);
                let c = tls::backend_config(app.backend_ca_pem.as_deref(), pin)
                    .map_err(|_| Code::UPSTREAM_UNREACHABLE)?;
                cache.insert(app.name.clone(), c.clone());
                c
            }
        }
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| Code::UPSTREAM_UNREACHABLE)?;
    let tls = TlsStream::connect(tcp, config, name, Some(deadline))
        .await
        .map_err(|_| Code::UPSTREAM_UNREACHABLE)?;
    Ok(Backend::Tls(Box::new(Conn::new(
        tls,
        buf,
        Limits::default(),
    ))))
}

fn parse_pin(text: &str) -> Option<[u8; 32]> {
    gatehouse_core::hex::decode_array(text.strip_prefix("sha256:").unwrap_or(text))
}

/// The internal host for this request: the configured one, with `*` replaced by the label
/// the client's host matched for wildcard apps. The client never chooses anything else.
fn internal_host<'a>(app: &'a AppRoute, client_host: &[u8]) -> Option<Cow<'a, str>> {
    let Some(suffix) = app.internal_host.strip_prefix('*') else {
        return Some(Cow::Borrowed(&app.internal_host));
    };
    let host = std::str::from_utf8(client_host).ok()?;
    let host = host
        .rsplit_once(':')
        .map_or(host, |(h, _)| h)
        .to_ascii_lowercase();
    let external_suffix = app.external_host.strip_prefix('*')?;
    let label = host.strip_suffix(external_suffix)?;
    let valid = !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    valid.then(|| Cow::Owned(format!("{label}{suffix}")))
}

/// The pieces of the app's URL mapping (hosts resolved for this request; owned only for
/// wildcard apps, whose hosts depend on the request).
struct MappingParts<'a> {
    external_host: Cow<'a, str>,
    internal_host: Cow<'a, str>,
}

/// The external and internal host of a request whose Host field is `client_host`; `None`
/// when a wildcard app's label is not a valid one.
fn mapping_parts<'a>(app: &'a AppRoute, client_host: &[u8]) -> Option<MappingParts<'a>> {
    let internal_host = internal_host(app, client_host)?;
    let external_host = if app.external_host.starts_with('*') {
        let host = String::from_utf8_lossy(client_host);
        Cow::Owned(
            host.rsplit_once(':')
                .map_or(host.as_ref(), |(h, _)| h)
                .to_ascii_lowercase(),
        )
    } else {
        Cow::Borrowed(app.external_host.as_str())
    };
    Some(MappingParts {
        external_host,
        internal_host,
    })
}

/// The body type to translate a response with `fields` as, if any: only for apps with
/// `translate_body`, for HTML, CSS and JavaScript, and never for an encoded body (the request
/// asked for identity; a back end that compressed anyway is passed on as is). Responses
/// without a body (1xx, 204, 304, HEAD) never reach the translator.
fn translated_body(app: &AppRoute, fields: &Fields<'_, '_>) -> Option<BodyType> {
    if !app.translate_body {
        return None;
    }
    if let Some(coding) = fields.get("content-encoding") {
        if !coding.trim_ascii().eq_ignore_ascii_case(b"identity") {
            return None;
        }
    }
    body::body_type(fields.get("content-type")?)
}

/// The rewrites of a translated body: the app's own internal origin first, then those of
/// the other apps this connector publishes (wildcard apps only for their own requests, whose
/// host is known).
fn link_rules(app: &AppRoute, parts: &MappingParts<'_>, ctx: &ThreadCtx) -> LinkRules {
    let config = ctx.config();
    // The other apps' hosts are fixed (no wildcard), so their parts borrow them.
    let others: Vec<(&AppRoute, MappingParts<'_>)> = config
        .apps
        .iter()
        .filter(|other| {
            other.name != app.name
                && !other.internal_host.starts_with('*')
                && !other.external_host.starts_with('*')
        })
        .map(|other| {
            let parts = MappingParts {
                external_host: Cow::Borrowed(other.external_host.as_str()),
                internal_host: Cow::Borrowed(other.internal_host.as_str()),
            };
            (other, parts)
        })
        .collect();
    let mut maps = vec![mapping(app, parts)];
    maps.extend(others.iter().map(|(other, parts)| mapping(other, parts)));
    LinkRules::new(&maps)
}

fn mapping<'a>(app: &'a AppRoute, parts: &'a MappingParts<'_>) -> Mapping<'a> {
    Mapping {
        external: Origin {
            https: true,
            host: &parts.external_host,
            port: app.external_port.unwrap_or(443),
            path_prefix: &app.external_prefix,
        },
        internal: Origin {
            https: app.internal_https,
            host: &parts.internal_host,
            port: app.internal_port,
            path_prefix: &app.internal_prefix,
        },
    }
}

/// Appends a response field's value to `out`, translated from internal to external URLs
/// where it names one.
fn translate_field(
    name: &[u8],
    value: &[u8],
    app: &AppRoute,
    parts: &MappingParts<'_>,
    out: &mut Vec<u8>,
) {
    if !app.translate_urls {
        out.extend_from_slice(value);
        return;
    }
    let map = mapping(app, parts);
    // Each translation appends its result, or leaves `out` untouched and says so.
    let changed = if name.eq_ignore_ascii_case(b"location")
        || name.eq_ignore_ascii_case(b"content-location")
    {
        translate::translate_location(value, &map, out)
    } else if name.eq_ignore_ascii_case(b"refresh") {
        translate::translate_refresh(value, &map, out)
    } else if name.eq_ignore_ascii_case(b"set-cookie") {
        translate::translate_set_cookie(value, &map, out)
    } else {
        false
    };
    if !changed {
        out.extend_from_slice(value);
    }
}

/// Whether `name` is one of the app's identity fields, in any case and with '_' for '-'
/// (the service drops them too; a connector does not rely on that).
fn is_identity_field(app: &AppRoute, name: &[u8]) -> bool {
    let Some(names) = &app.identity_headers else {
        return false;
    };
    names.names().any(|configured| {
        name.len() == configured.len()
            && name.iter().zip(configured.bytes()).all(|(&a, b)| {
                let a = if a == b'_' { b'-' } else { a };
                a.eq_ignore_ascii_case(&b)
            })
    })
}

/// Writes the identity fields of a signed-in user (empty values are left out).
fn write_identity(out: &mut Vec<u8>, names: &IdentityHeaderNames, identity: &KeptIdentity) {
    let fields = [
        (&names.user, &identity.user),
        (&names.email, &identity.email),
        (&names.name, &identity.name),
        (&names.groups, &identity.groups),
        (&names.assertion, &identity.assertion),
    ];
    for (name, value) in fields {
        if let (Some(name), false) = (name, value.is_empty()) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

fn is_response_hop(name: &[u8]) -> bool {
    [
        &b"connection"[..],
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Writes the back-end request head: method, translated target, the client's end-to-end
/// fields (checked again here), Host per the app, forwarding fields, framing.
fn write_request_head(
    out: &mut Vec<u8>,
    open: &Open,
    app: &AppRoute,
    parts: &MappingParts,
    client_host: &[u8],
    identity: Option<&KeptIdentity>,
) -> bool {
    let map = mapping(app, parts);
    out.extend_from_slice(open.method());
    out.push(b' ');
    let target = open.target();
    if app.external_prefix == app.internal_prefix {
        out.extend_from_slice(target);
    } else if !translate::translate_target(target, &map, out) {
        return false;
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in open.fields() {
        let bad = name.is_empty()
            || !name.iter().all(|&b| b.is_ascii_graphic() && b != b':')
            || value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0);
        if bad {
            return false;
        }
        if name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || translate::is_proxy_controlled(name)
            || is_identity_field(app, name)
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"connection") && !value.eq_ignore_ascii_case(b"upgrade") {
            continue;
        }
        // A translated body must arrive readable: identity is asked for below.
        if app.translate_body && name.eq_ignore_ascii_case(b"accept-encoding") {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let (Some(names), Some(identity)) = (&app.identity_headers, identity) {
        write_identity(out, names, identity);
    }
    if app.translate_body {
        out.extend_from_slice(b"Accept-Encoding: identity\r\n");
    }
    out.extend_from_slice(b"Host: ");
    if app.rewrite_host {
        translate::host_value(&map.internal, out);
    } else {
        out.extend_from_slice(client_host);
    }
    out.extend_from_slice(b"\r\nX-Forwarded-For: ");
    translate::forwarded_for(open.client, out);
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: ");
    out.extend_from_slice(client_host);
    out.extend_from_slice(b"\r\nForwarded: ");
    translate::forwarded(open.client, client_host, open.https, out);
    out.extend_from_slice(b"\r\nX-Request-Id: ");
    for b in open.request_id {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]);
    }
    out.extend_from_slice(b"\r\n");
    match open.body {
        BodyLength::Empty => {
            if matches!(open.method(), b"POST" | b"PUT" | b"PATCH") {
                out.extend_from_slice(b"Content-Length: 0\r\n");
            }
        }
        BodyLength::Known(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(gatehouse_http1::decimal(n, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        BodyLength::Streamed => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    true
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use gatehouse_tunnel::frame::{Frame, IdentityParts, OpenParts};
    use gatehouse_tunnel::StreamId;

    use super::*;

    fn open(cache: IdentityCache, user: &str) -> Open {
        let groups = ["staff", "bad\ngroup"];
        let mut wire = Vec::new();
        OpenParts {
            stream: StreamId(1),
            end: true,
            request_id: [0; 16],
            client: "192.0.2.1:1".parse().unwrap(),
            https: true,
            app: "wiki",
            method: b"GET",
            target: b"/",
            http11: true,
            body: BodyLength::Empty,
            identity: (!user.is_empty() || matches!(cache, IdentityCache::Use(_))).then_some(
                IdentityParts {
                    user,
                    email: "jane@example.test",
                    name: "Jane\r\nX-Evil: 1",
                    mfa: true,
                    groups: &groups,
                    assertion: "a.b.c",
                    cache,
                },
            ),
            fields: std::iter::empty(),
        }
        .encode(&mut wire)
        .unwrap();
        let mut buf = BytesMut::from(&wire[..]);
        match Frame::decode(&mut buf, 1 << 20).unwrap().unwrap() {
            Frame::Open(open) => open,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kept_identities_follow_the_frames_and_fail_closed() {
        let mut kept = TunnelIdentities::default();
        // Naming a key this tunnel never stored: refused, never forwarded anonymous.
        assert!(kept
            .resolve(&open(IdentityCache::Use([1; 16]), ""))
            .is_err());
        let stored = kept
            .resolve(&open(IdentityCache::Store([1; 16]), "jane"))
            .unwrap()
            .unwrap();
        assert_eq!(stored.user, "jane");
        // A value with a control character is left out; so is a group with one.
        assert_eq!(stored.name, "");
        assert_eq!(stored.groups, "staff");
        let reused = kept
            .resolve(&open(IdentityCache::Use([1; 16]), ""))
            .unwrap()
            .unwrap();
        assert!(Rc::ptr_eq(&stored, &reused));
        let once = kept
            .resolve(&open(IdentityCache::None, "bob"))
            .unwrap()
            .unwrap();
        assert_eq!(once.user, "bob");
        assert!(kept
            .resolve(&open(IdentityCache::None, ""))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_full_cache_is_emptied_before_a_new_key() {
        let mut kept = TunnelIdentities::default();
        for i in 0..IDENTITY_CACHE_MAX {
            let key = (i as u128).to_be_bytes();
            kept.resolve(&open(IdentityCache::Store(key), "u")).unwrap();
        }
        let first = 0u128.to_be_bytes();
        assert!(kept.resolve(&open(IdentityCache::Use(first), "")).is_ok());
        // Storing a key already kept does not empty it; a new one does.
        kept.resolve(&open(IdentityCache::Store(first), "u"))
            .unwrap();
        assert!(kept.resolve(&open(IdentityCache::Use(first), "")).is_ok());
        let new = u128::MAX.to_be_bytes();
        kept.resolve(&open(IdentityCache::Store(new), "u")).unwrap();
        assert!(kept.resolve(&open(IdentityCache::Use(first), "")).is_err());
        assert!(kept.resolve(&open(IdentityCache::Use(new), "")).is_ok());
    }
}
