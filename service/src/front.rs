//! The public HTTPS front: one task per client connection. Parse, route by Host, open a
//! stream on a tunnel of this worker, stream the body up and the response down.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gatehouse_core::hex::encode as hex;
use gatehouse_core::translate::is_proxy_controlled;
use gatehouse_http1::rt::{Conn, ConnError, TlsStream};
use gatehouse_http1::{
    is_hop_by_hop, parse_request, BodyDecoder, BodyKind, Field, Limits, RequestHead, Status,
    TargetForm, Version, CONTINUE_100,
};
use gatehouse_tunnel::frame::{BodyLength, OpenParts, Response};
use gatehouse_tunnel::rt::{StreamEvent, StreamHandle};
use gatehouse_tunnel::{Code, StreamId};
use monoio::net::TcpStream;

use crate::config::{App, Mode};
use crate::pages;
use crate::routes;
use crate::worker::{Tunnel, Worker};

/// Time a client gets to send a complete request head (also the keep-alive idle time).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a request refused by a connector (never processed) is tried on another tunnel.
const RETRIES: usize = 2;

type Client = Conn<TlsStream<TcpStream>>;

/// What the head told us to do.
enum Start {
    /// Answer from the edge with a page (or robots.txt) and go on if `keep_alive`.
    Local { response: Vec<u8>, keep_alive: bool },
    /// Forward on a tunnel stream.
    Proxy(Box<Proxied>),
}

/// A request on its way through a tunnel.
struct Proxied {
    stream: StreamHandle,
    tunnel: Rc<Tunnel>,
    request_id: [u8; 16],
    group: String,
    response_timeout: Duration,
    idle_timeout: Duration,
    hsts: Option<String>,
    head_request: bool,
    http11: bool,
    keep_alive: bool,
    expect_continue: bool,
    body: BodyKind,
    upgrade: bool,
    /// A refused or lost attempt may go to another tunnel: nothing of it reached a back end
    /// (refused), or it is idempotent and had no body (lost before any answer).
    idempotent: bool,
}

/// Serves one client connection until it closes, errs or times out.
pub(crate) async fn serve(tls: TlsStream<TcpStream>, peer: SocketAddr, worker: Rc<Worker>) {
    let mut conn = Conn::new(tls, BytesMut::with_capacity(16 * 1024), Limits::default());
    let mut out: Vec<u8> = Vec::with_capacity(2048);
    let mut saved: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let snapshot = worker.snapshot();
        let deadline = Instant::now() + HEAD_TIMEOUT;
        let start = conn
            .read_request_head_raw(Some(deadline), |head, raw| {
                saved.clear();
                saved.extend_from_slice(raw);
                start(
                    &worker,
                    &snapshot.config.apps,
                    &snapshot.config.hsts,
                    head,
                    peer,
                )
            })
            .await;
        let keep_alive = match start {
            Ok(Start::Local {
                response,
                keep_alive,
            }) => {
                let (res, _) = conn.write_vec(response).await;
                res.is_ok() && keep_alive
            }
            Ok(Start::Proxy(proxied)) => {
                match proxy(&mut conn, *proxied, &worker, peer, &saved, &mut out).await {
                    After::KeepAlive => true,
                    After::Close => false,
                    After::Upgraded(stream) => {
                        tunnel_upgrade(conn, stream).await;
                        return;
                    }
                }
            }
            Err(ConnError::Http(e)) => {
                // RFC 9112 6.1: after a framing error the connection must close.
                let mut page = Vec::new();
                let id = hex(&worker.request_id());
                pages::error_page(
                    &mut page,
                    e.status(),
                    e.reason(),
                    "The request was malformed and was not forwarded.",
                    &id,
                    true,
                );
                let _ = conn.write_vec(page).await;
                false
            }
            Err(_) => false,
        };
        if !keep_alive {
            break;
        }
    }
    let _ = conn.shutdown().await;
}

/// Decides what to do with a request head, and opens its stream (synchronously, with the
/// head still borrowed from the read buffer: nothing is copied on the way into the tunnel).
fn start(
    worker: &Worker,
    apps: &[App],
    hsts: &Option<String>,
    head: &RequestHead<'_, '_>,
    peer: SocketAddr,
) -> Start {
    let request_id = worker.request_id();
    let has_body = head.body != BodyKind::Empty;
    let local = |status: u16, title: &str, detail: &str| {
        let mut response = Vec::with_capacity(1024);
        let keep_alive = head.keep_alive && !has_body;
        pages::error_page(
            &mut response,
            status,
            title,
            detail,
            &hex(&request_id),
            !keep_alive,
        );
        Start::Local {
            response,
            keep_alive,
        }
    };
    let Some((host, path)) = host_and_path(head) else {
        return local(400, "Bad request", "The request names no host.");
    };
    if head.is_connect() {
        return local(405, "Method not allowed", "CONNECT is not offered here.");
    }
    if path == b"/robots.txt" || path.starts_with(b"/robots.txt?") {
        let mut response = Vec::with_capacity(256);
        pages::robots(&mut response, !head.is_head());
        return Start::Local {
            response,
            keep_alive: head.keep_alive && !has_body,
        };
    }
    let Some(app) = routes::find(apps, host, path) else {
        return local(
            404,
            "No application here",
            "No application is published at this address.",
        );
    };
    if app.mode == Mode::Preauth {
        // Fail closed until pre-authentication is configured for this service.
        return local(
            503,
            "Sign-in unavailable",
            "This application requires sign-in, which is not available on this service.",
        );
    }
    let Some(tunnel) = worker.pick(&app.group, None) else {
        return local(
            502,
            "No connector online",
            &format!(
                "No connector of group \"{}\" is connected, so the application cannot be reached.",
                app.group
            ),
        );
    };
    let stream = match open(&tunnel, head, app, peer, request_id, path) {
        Ok(stream) => stream,
        Err(_) => {
            return local(
                502,
                "No connector online",
                &format!(
                    "The connectors of group \"{}\" take no new requests.",
                    app.group
                ),
            );
        }
    };
    Start::Proxy(Box::new(Proxied {
        stream,
        tunnel,
        request_id,
        group: app.group.clone(),
        response_timeout: app.response_timeout,
        idle_timeout: app.idle_timeout,
        hsts: hsts.clone(),
        head_request: head.is_head(),
        http11: head.version == Version::Http11,
        keep_alive: head.keep_alive,
        expect_continue: head.expect_continue,
        body: head.body,
        upgrade: head.upgrade,
        idempotent: !has_body && matches!(head.method, b"GET" | b"HEAD" | b"OPTIONS"),
    }))
}

/// Opens the request's stream on `tunnel`. Fields that only concern this hop, that the proxy
/// sets itself, or that back ends might trust (identity, forwarding) are not forwarded.
fn open(
    tunnel: &Tunnel,
    head: &RequestHead<'_, '_>,
    app: &App,
    peer: SocketAddr,
    request_id: [u8; 16],
    path: &[u8],
) -> Result<StreamHandle, gatehouse_tunnel::StreamError> {
    let all = head.fields.as_slice();
    let upgrade_value = head.upgrade.then(|| head.fields.get("upgrade")).flatten();
    let forwarded = all
        .iter()
        .filter(|f| forwardable(f, all))
        .map(|f| (f.name, f.value))
        .chain(upgrade_value.map(|_| (&b"Connection"[..], &b"Upgrade"[..])))
        .chain(upgrade_value.map(|v| (&b"Upgrade"[..], v)));
    tunnel.mux.open(OpenParts {
        stream: StreamId(0),
        // An upgrade keeps the stream open upwards: the new protocol's bytes follow a 101.
        end: head.body == BodyKind::Empty && !head.upgrade,
        request_id,
        client: peer,
        https: true,
        app: &app.name,
        method: head.method,
        target: path,
        http11: head.version == Version::Http11,
        body: match head.body {
            BodyKind::Empty => BodyLength::Empty,
            BodyKind::Length(n) => BodyLength::Known(n),
            BodyKind::Chunked | BodyKind::CloseDelimited => BodyLength::Streamed,
        },
        identity: None,
        fields: forwarded,
    })
}

fn forwardable(field: &Field<'_>, all: &[Field<'_>]) -> bool {
    !is_hop_by_hop(field.name, all)
        && !field.is("content-length")
        && !field.is("expect")
        // Names with '_' are dropped (as nginx does): back ends that fold '_' into '-' must
        // not be handed a second spelling of a header the proxy controls.
        && !field.name.contains(&b'_')
        && !is_proxy_controlled(field.name)
}

/// The host (Host field, or the authority of an absolute-form target) and the origin-form
/// path of a request.
fn host_and_path<'b>(head: &RequestHead<'b, '_>) -> Option<(&'b [u8], &'b [u8])> {
    match head.form {
        TargetForm::Absolute => {
            let rest = head
                .target
                .iter()
                .position(|&b| b == b':')
                .map(|i| &head.target[i + 1..])?
                .strip_prefix(b"//")?;
            let end = rest
                .iter()
                .position(|&b| matches!(b, b'/' | b'?'))
                .unwrap_or(rest.len());
            let path = &rest[end..];
            Some((&rest[..end], if path.is_empty() { b"/" } else { path }))
        }
        _ => Some((head.host?, head.target)),
    }
}

/// What a client connection does after a response.
enum After {
    KeepAlive,
    Close,
    /// The back end switched protocols: the connection carries raw bytes on this stream now.
    Upgraded(StreamHandle),
}

impl From<bool> for After {
    fn from(keep_alive: bool) -> Self {
        match keep_alive {
            true => After::KeepAlive,
            false => After::Close,
        }
    }
}

/// Streams the request body up and the response down.
async fn proxy(
    conn: &mut Client,
    mut p: Proxied,
    worker: &Worker,
    peer: SocketAddr,
    saved: &[u8],
    out: &mut Vec<u8>,
) -> After {
    let mut keep_alive = p.keep_alive;
    // Request body, with backpressure from the tunnel's credit.
    if p.body != BodyKind::Empty {
        if p.expect_continue
            && conn
                .write_bytes(Bytes::from_static(CONTINUE_100))
                .await
                .is_err()
        {
            return After::Close;
        }
        let mut decoder = BodyDecoder::new(p.body, &Limits::default());
        loop {
            let idle = Instant::now() + p.idle_timeout;
            match conn.next_body_chunk(&mut decoder, Some(idle)).await {
                Ok(Some(chunk)) => match p.stream.send(chunk, false).await {
                    Ok(true) => {}
                    // The back end answered (or failed) before taking the whole body: the rest
                    // of it is still on the client connection, which cannot be reused.
                    Ok(false) | Err(_) => {
                        keep_alive = false;
                        break;
                    }
                },
                Ok(None) => {
                    let _ = p.stream.send(Bytes::new(), true).await;
                    break;
                }
                Err(e) => {
                    p.stream.reset(Code::CANCEL);
                    let (status, title) = match e {
                        ConnError::Http(e) => (e.status(), e.reason()),
                        ConnError::Timeout => (408, "Request body timed out"),
                        _ => return After::Close,
                    };
                    page(
                        conn,
                        status,
                        title,
                        "The request body could not be read.",
                        &p.request_id,
                    )
                    .await;
                    return After::Close;
                }
            }
        }
    }

    // Response head, waiting at most the app's response timeout.
    let deadline = Instant::now() + p.response_timeout;
    let mut attempts = 0;
    let response: Response = loop {
        let event = match monoio::time::timeout_at(deadline.into(), p.stream.next()).await {
            Ok(event) => event,
            Err(_) => {
                p.stream.reset(Code::CANCEL);
                page(
                    conn,
                    504,
                    "The application did not answer in time",
                    "The internal application did not send a response in time.",
                    &p.request_id,
                )
                .await;
                return After::Close;
            }
        };
        match event {
            StreamEvent::Response(r) if (100..200).contains(&r.status) && r.status != 101 => {
                // 100 was answered here already; other interim responses (103) pass.
                if r.status != 100 {
                    out.clear();
                    write_head(out, &r, &p, false, Framing::None);
                    if conn.write_vec(std::mem::take(out)).await.0.is_err() {
                        return After::Close;
                    }
                }
            }
            StreamEvent::Response(r) => break r,
            StreamEvent::Reset(code) => {
                let (status, title, detail) = reset_page(code);
                page(conn, status, title, detail, &p.request_id).await;
                return (keep_alive && p.body == BodyKind::Empty).into();
            }
            StreamEvent::Refused | StreamEvent::Closed => {
                let refused = matches!(event, StreamEvent::Refused);
                let retry =
                    attempts < RETRIES && p.body == BodyKind::Empty && (refused || p.idempotent);
                if retry {
                    attempts += 1;
                    if let Some((stream, tunnel)) = reopen(worker, saved, peer, &p) {
                        p.stream = stream;
                        p.tunnel = tunnel;
                        continue;
                    }
                }
                page(conn, 502, "Connector connection lost", &format!("The connection to the connector of group \"{}\" was lost before the application answered.", p.group), &p.request_id).await;
                return After::Close;
            }
            StreamEvent::Data(_) | StreamEvent::End => {
                page(
                    conn,
                    502,
                    "Bad answer from the connector",
                    "The connector sent a body without a response head.",
                    &p.request_id,
                )
                .await;
                return After::Close;
            }
        }
    };

    let framing = if response.status == 101 {
        Framing::None
    } else if p.head_request || response.status == 304 {
        // No body, but the length a GET would have had is announced.
        match response.body {
            BodyLength::Known(n) => Framing::Announce(n),
            _ => Framing::None,
        }
    } else if response.status == 204 {
        Framing::None
    } else {
        match response.body {
            BodyLength::Empty => Framing::Length(0),
            BodyLength::Known(n) => Framing::Length(n),
            BodyLength::Streamed if p.http11 => Framing::Chunked,
            BodyLength::Streamed => {
                keep_alive = false;
                Framing::Close
            }
        }
    };
    if response.status == 101 && !p.upgrade {
        page(
            conn,
            502,
            "Bad answer from the application",
            "The application switched protocols without being asked.",
            &p.request_id,
        )
        .await;
        return After::Close;
    }
    out.clear();
    p.keep_alive = keep_alive;
    write_head(
        out,
        &response,
        &p,
        response.status != 101 && !keep_alive,
        framing,
    );
    let (res, buf) = conn.write_vec(std::mem::take(out)).await;
    *out = buf;
    if res.is_err() {
        return After::Close;
    }
    if response.status == 101 {
        return After::Upgraded(p.stream);
    }
    if response.end {
        return keep_alive.into();
    }
    // Response body: each DATA payload goes out as it is (a slice of the tunnel's read
    // buffer) and its credit returns once the client took it.
    let mut size_line = [0u8; 20];
    loop {
        let idle = Instant::now() + p.idle_timeout;
        let event = match monoio::time::timeout_at(idle.into(), p.stream.next()).await {
            Ok(event) => event,
            Err(_) => {
                p.stream.reset(Code::CANCEL);
                return After::Close;
            }
        };
        match event {
            StreamEvent::Data(data) => {
                let len = data.len();
                let written = match framing {
                    Framing::Chunked => {
                        let line = gatehouse_http1::chunk_size_line(len, &mut size_line);
                        conn.io_mut()
                            .write_all_parts(&[line, &data, b"\r\n"])
                            .await
                            .is_ok()
                    }
                    _ => conn.write_bytes(data).await.is_ok(),
                };
                if !written {
                    return After::Close;
                }
                p.stream.consume(len);
            }
            StreamEvent::End => {
                if framing == Framing::Chunked
                    && conn
                        .write_bytes(Bytes::from_static(b"0\r\n\r\n"))
                        .await
                        .is_err()
                {
                    return After::Close;
                }
                return keep_alive.into();
            }
            // Cut mid-body: the client must see an incomplete response, never a complete one.
            _ => return After::Close,
        }
    }
}

/// After a 101 the client connection carries the upgraded protocol: bytes both ways until
/// either side ends.
async fn tunnel_upgrade(conn: Client, stream: StreamHandle) {
    let (tls, leftover) = conn.into_parts();
    let (reader, writer) = tls.into_split();
    gatehouse_tunnel::rt::relay(reader, writer, leftover, &stream).await;
}

/// Opens the saved request again on another tunnel of its group.
fn reopen(
    worker: &Worker,
    saved: &[u8],
    peer: SocketAddr,
    p: &Proxied,
) -> Option<(StreamHandle, Rc<Tunnel>)> {
    let snapshot = worker.snapshot();
    let mut fields = [Field::EMPTY; 128];
    let Ok(Status::Complete(head)) = parse_request(saved, &mut fields, &Limits::default()) else {
        return None;
    };
    let (host, path) = host_and_path(&head)?;
    let app = routes::find(&snapshot.config.apps, host, path)?;
    let tunnel = worker.pick(&p.group, Some(&p.tunnel))?;
    let stream = open(&tunnel, &head, app, peer, p.request_id, path).ok()?;
    Some((stream, tunnel))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    /// Content-Length of a body that is not sent (HEAD, 304).
    Announce(u64),
    Length(u64),
    Chunked,
    Close,
}

/// Writes the client-facing response head: the back end's end-to-end fields, our framing
/// and connection fields, and HSTS.
fn write_head(out: &mut Vec<u8>, r: &Response, p: &Proxied, close: bool, framing: Framing) {
    let version = if p.http11 { "HTTP/1.1" } else { "HTTP/1.0" };
    out.extend_from_slice(version.as_bytes());
    out.push(b' ');
    out.extend_from_slice(r.status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(pages::reason(r.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_hsts = false;
    for (name, value) in r.fields() {
        let lower = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if lower("connection")
            || lower("keep-alive")
            || lower("proxy-connection")
            || lower("te")
            || lower("trailer")
            || lower("transfer-encoding")
            || (lower("upgrade") && r.status != 101)
            || lower("content-length")
        {
            continue;
        }
        // Field names and values were checked by the connector and again by the tunnel
        // decoder; a CR or LF must still never reach the client.
        if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            continue;
        }
        has_hsts |= lower("strict-transport-security");
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let (Some(hsts), false) = (&p.hsts, has_hsts) {
        out.extend_from_slice(b"Strict-Transport-Security: ");
        out.extend_from_slice(hsts.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) | Framing::Announce(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
    if r.status == 101 {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    } else if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if !p.http11 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The page for a stream the connector reset.
fn reset_page(code: Code) -> (u16, &'static str, &'static str) {
    match code {
        Code::UPSTREAM_UNREACHABLE => (
            502,
            "Application unreachable",
            "The connector could not reach the internal application.",
        ),
        Code::UPSTREAM_TIMEOUT => (
            504,
            "The application did not answer in time",
            "The internal application did not send a response in time.",
        ),
        Code::UPSTREAM_PROTOCOL => (
            502,
            "Bad answer from the application",
            "The internal application sent a response that could not be understood.",
        ),
        _ => (
            502,
            "Request failed at the connector",
            "The connector ended the request before the application answered.",
        ),
    }
}

async fn page(conn: &mut Client, status: u16, title: &str, detail: &str, id: &[u8; 16]) {
    let mut out = Vec::with_capacity(1024);
    pages::error_page(&mut out, status, title, detail, &hex(id), true);
    let _ = conn.write_vec(out).await;
}
