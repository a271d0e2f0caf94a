//! The public HTTPS front: one task per client connection. Parse, route by Host, open a
//! stream on a tunnel of this worker, stream the body up and the response down.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_core::hex::encode as hex;
use gatehouse_core::translate::is_proxy_controlled;
use gatehouse_http1::rt::{Conn, ConnError, IdleStack, TlsStream};
use gatehouse_http1::{
    is_hop_by_hop, parse_request, BodyDecoder, BodyKind, Field, Limits, RequestHead, Status,
    Version, CONTINUE_100,
};
use gatehouse_tunnel::frame::{BodyLength, IdentityCache, IdentityParts, OpenParts, Response};
use gatehouse_tunnel::rt::{StreamEvent, StreamHandle};
use gatehouse_tunnel::{Code, StreamId};
use monoio::net::TcpStream;

use crate::auth::{self, flow, policy, Gate, Scratch};
use crate::config::{App, Preauth, Provider, ServiceConfig};
use crate::ops::RequestRecord;
use crate::shield::ConnectionSlot;
use crate::worker::{Tunnel, Worker};
use crate::{events, pages, routes, unix_now, Snapshot};

/// Time a client gets to send a development-provider form body.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// Most body bytes written together with a response head (see `proxy`).
const COALESCE_LIMIT: usize = 16 * 1024;

/// How often a request refused by a connector (never processed) is tried on another tunnel.
const RETRIES: usize = 2;

type Client = Conn<TlsStream<TcpStream>>;

/// What the head told us to do.
enum Start {
    /// Answer from the edge with a page (or robots.txt) and go on if `keep_alive`.
    Local { response: Vec<u8>, keep_alive: bool },
    /// Forward on a tunnel stream.
    Proxy(Proxied),
    /// A sign-in step needs the provider's metadata or fresh keys first; then the head is
    /// looked at again.
    NeedProvider(Box<Provider>),
    /// The identity provider sent the browser back to an app.
    Callback(Box<CallbackWork>),
    /// A request for the development identity provider (its body is read first).
    DevIdp(Box<DevIdpWork>),
}

/// A callback to finish asynchronously (it calls the provider's token endpoint).
struct CallbackWork {
    app: String,
    callback: flow::Callback,
    keep_alive: bool,
}

/// A development-provider request, owned so that its body can be read after the head.
struct DevIdpWork {
    method: Vec<u8>,
    path: String,
    query: String,
    authorization: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    body: BodyKind,
    keep_alive: bool,
}

/// Longest body the development provider reads (sign-in forms, token requests).
const DEV_IDP_MAX_BODY: usize = 16 * 1024;

/// A request on its way through a tunnel.
struct Proxied {
    stream: StreamHandle,
    tunnel: Rc<Tunnel>,
    request_id: [u8; 16],
    /// The app, as an index into the `config.apps` of the request's snapshot (no copy of
    /// its settings per request).
    app: usize,
    response_timeout: Duration,
    idle_timeout: Duration,
    head_request: bool,
    http11: bool,
    keep_alive: bool,
    expect_continue: bool,
    body: BodyKind,
    upgrade: bool,
    /// A refused or lost attempt may go to another tunnel: nothing of it reached a back end
    /// (refused), or it is idempotent and had no body (lost before any answer).
    idempotent: bool,
    /// The request's place in its app's concurrency cap, given back when it ends.
    _app_slot: Option<crate::shield::AppSlot>,
    /// Counts the request as in flight (a draining worker waits for it).
    _in_flight: crate::shield::RequestSlot,
    /// `[limits] max_body_size` (0 = none): a chunked body past it ends the request.
    max_body_size: u64,
    /// `[limits] min_body_rate` in bytes per second (0 = none).
    min_body_rate: u32,
}

/// How long a keep-alive connection waits with a read buffer before it parks: the read is
/// cancelled and its buffers go back to the worker's pools until the client sends again.
const IDLE_PARK_AFTER: Duration = Duration::from_millis(250);

/// The buffers a request works in, taken from the worker's pool when a request starts and
/// given back when it ends, so that an idle keep-alive connection holds none of them.
pub(crate) struct FrontBuffers {
    /// Heads built for the tunnel.
    out: Vec<u8>,
    /// The request head as received (to look at it again, or retry it on another tunnel).
    saved: Vec<u8>,
    /// Session-cookie opening, the rewritten Cookie field, the request's app and user.
    scratch: Scratch,
}

/// A worker's idle [`FrontBuffers`] (one worker thread: no lock).
pub(crate) struct FrontBufferPool {
    idle: std::cell::RefCell<IdleStack<FrontBuffers>>,
}

impl Default for FrontBufferPool {
    fn default() -> Self {
        FrontBufferPool {
            idle: std::cell::RefCell::new(IdleStack::new(Self::KEEP)),
        }
    }
}

impl FrontBufferPool {
    /// Buffers kept for reuse; more are freed when given back.
    const KEEP: usize = 256;

    fn take(&self) -> FrontBuffers {
        self.idle
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| FrontBuffers {
                out: Vec::with_capacity(2048),
                saved: Vec::with_capacity(1024),
                scratch: Scratch::new(),
            })
    }

    fn give(&self, buffers: FrontBuffers) {
        self.idle.borrow_mut().push(buffers);
    }

    /// Frees half of the buffers that stayed idle since the last call (housekeeping).
    pub(crate) fn trim(&self) {
        self.idle.borrow_mut().trim();
    }
}

/// The connection of a client that completed its TLS handshake. Boxed: it then lives once,
/// outside the task's state (an async fn keeps its arguments apart from its locals).
pub(crate) fn client(tls: TlsStream<TcpStream>, worker: &Worker) -> Box<Client> {
    let read_buffer = worker.read_buffers.take().unwrap_or_default();
    Box::new(
        Conn::new(tls, read_buffer, Limits::default())
            .release_when_idle(worker.read_buffers.clone(), IDLE_PARK_AFTER),
    )
}

/// Serves one client connection until it closes, errs, times out or parks (`first`: no
/// request was served on it yet).
pub(crate) async fn serve(
    mut conn: Box<Client>,
    peer: SocketAddr,
    worker: Rc<Worker>,
    slot: ConnectionSlot,
    mut first: bool,
) {
    loop {
        // The first head must come whole within the header timeout (slowloris); after a
        // response, an idle keep-alive connection waits up to the keep-alive timeout.
        let wait = {
            let limits = &worker.snapshot().config.limits;
            match std::mem::replace(&mut first, false) {
                true => limits.header_timeout,
                false => limits.keepalive_timeout,
            }
        };
        let deadline = Instant::now() + wait;
        match conn.wait_for_data_or_park(Some(deadline)).await {
            Ok(true) => {}
            Ok(false) => {
                monoio::spawn(parked(conn, peer, worker, slot, deadline));
                return;
            }
            Err(_) => break,
        }
        let snapshot = worker.snapshot();
        let mut buffers = worker.front_buffers.take();
        let FrontBuffers {
            out,
            saved,
            scratch,
        } = &mut buffers;
        let request_id = worker.request_id();
        let mut started = Instant::now();
        let mut start = conn
            .read_request_head_raw(Some(deadline), |head, raw| {
                started = Instant::now();
                saved.clear();
                saved.extend_from_slice(raw);
                start(&worker, &snapshot, head, peer, scratch, request_id, None)
            })
            .await;
        // Sign-in steps that need a provider's metadata or keys: fetch them, decide again.
        // Rare paths (provider calls, sign-in callbacks, the development provider, upgrades)
        // are boxed, so their futures do not make every connection's task larger while it
        // waits idle.
        for _ in 0..2 {
            let Ok(Start::NeedProvider(provider)) = &start else {
                break;
            };
            start = Ok(match Box::pin(worker.providers.load(provider)).await {
                Ok(_) => restart(&worker, &snapshot, saved, peer, scratch, request_id),
                Err(e) => {
                    let answer = flow::provider_unreachable(provider, &e);
                    let mut response = Vec::with_capacity(1024);
                    answer.write(&mut response, &hex(&request_id), true);
                    Start::Local {
                        response,
                        keep_alive: false,
                    }
                }
            });
        }
        let keep_alive = match start {
            Ok(Start::Local {
                mut response,
                keep_alive,
            }) => {
                let status = response
                    .get(9..12)
                    .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
                    .unwrap_or(0);
                worker.ops.request(&RequestRecord {
                    request_id: &request_id,
                    app: &scratch.app,
                    user: &scratch.user,
                    client: peer.ip(),
                    method: method_of(saved),
                    host: &scratch.host,
                    path: &scratch.path,
                    local: true,
                    status,
                    bytes: 0,
                    started,
                });
                add_hsts(&mut response, snapshot.config.hsts.as_deref());
                let (res, _) = conn.write_vec(response).await;
                res.is_ok() && keep_alive
            }
            Ok(Start::Proxy(proxied)) => {
                let mut outcome = Outcome::default();
                let app = std::mem::take(&mut scratch.app);
                let user = std::mem::take(&mut scratch.user);
                let host = std::mem::take(&mut scratch.host);
                let path = std::mem::take(&mut scratch.path);
                let after = proxy(
                    &mut conn,
                    proxied,
                    &worker,
                    &snapshot,
                    peer,
                    saved,
                    out,
                    scratch,
                    &mut outcome,
                )
                .await;
                worker.ops.request(&RequestRecord {
                    request_id: &request_id,
                    app: &app,
                    user: &user,
                    client: peer.ip(),
                    method: method_of(saved),
                    host: &host,
                    path: &path,
                    local: false,
                    status: outcome.status,
                    bytes: outcome.bytes,
                    started,
                });
                scratch.app = app;
                scratch.user = user;
                scratch.host = host;
                scratch.path = path;
                match after {
                    After::KeepAlive => true,
                    After::Close => false,
                    After::Upgraded(stream) => {
                        Box::pin(tunnel_upgrade(*conn, stream)).await;
                        return;
                    }
                }
            }
            Ok(Start::NeedProvider(_)) => false,
            Ok(Start::Callback(work)) => {
                let answer = Box::pin(finish_login(&worker, &snapshot, &work)).await;
                let decision = match answer.reason.as_str() {
                    "signed_in" => events::Decision::Allow,
                    "sign_in_too_old_retry" => events::Decision::Retry,
                    _ => events::Decision::Deny,
                };
                events::sign_in(
                    &worker,
                    &request_id,
                    &work.app,
                    work.callback.client,
                    &answer.user,
                    decision,
                    &answer.reason,
                );
                let mut response = Vec::with_capacity(2048);
                answer.write(&mut response, &hex(&request_id), !work.keep_alive);
                add_hsts(&mut response, snapshot.config.hsts.as_deref());
                let (res, _) = conn.write_vec(response).await;
                res.is_ok() && work.keep_alive
            }
            Ok(Start::DevIdp(work)) => {
                Box::pin(dev_idp(&mut conn, &worker, *work, &request_id)).await
            }
            Err(ConnError::Http(e)) => {
                // RFC 9112 6.1: after a framing error the connection must close.
                let mut page = Vec::new();
                let id = hex(&request_id);
                pages::error_page(
                    &mut page,
                    e.status(),
                    e.reason(),
                    "The request was malformed and was not forwarded.",
                    &id,
                    true,
                );
                add_hsts(&mut page, snapshot.config.hsts.as_deref());
                let _ = conn.write_vec(page).await;
                false
            }
            Err(_) => false,
        };
        worker.front_buffers.give(buffers);
        // A draining service closes each connection after its current response.
        if !keep_alive || worker.draining.get() {
            break;
        }
    }
    let _ = conn.shutdown().await;
}

/// A keep-alive connection silent for the park delay (see `crate::parked`): it waits for the
/// client's next request here, in a task of a few hundred bytes, and is served again in a new
/// task when the client sends; at its deadline, or when the worker drains, it closes.
async fn parked(
    conn: Box<Client>,
    peer: SocketAddr,
    worker: Rc<Worker>,
    slot: ConnectionSlot,
    deadline: Instant,
) {
    let (key, kick) = worker.parked.park(deadline);
    let readable = {
        let mut ready = std::pin::pin!(conn.wait_readable());
        let mut fired = std::pin::pin!(kick.fired());
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(r) = std::future::Future::poll(ready.as_mut(), cx) {
                return std::task::Poll::Ready(r.is_ok());
            }
            std::future::Future::poll(fired.as_mut(), cx).map(|()| false)
        })
        .await
    };
    worker.parked.unpark(key);
    if readable && !worker.draining.get() {
        monoio::spawn(serve(conn, peer, worker, slot, false));
    } else {
        // Boxed: this task waits far longer than it closes, so it need not be sized for this.
        let mut conn = conn;
        let _ = Box::pin(conn.shutdown()).await;
    }
}

/// The method of a saved request head (for events).
fn method_of(saved: &[u8]) -> &str {
    let end = saved.iter().position(|&b| b == b' ').unwrap_or(0);
    std::str::from_utf8(&saved[..end]).unwrap_or("")
}

/// Looks at the saved head of the current request again (after a provider fetch, or to retry
/// it on another tunnel).
fn restart(
    worker: &Worker,
    snapshot: &Snapshot,
    saved: &[u8],
    peer: SocketAddr,
    scratch: &mut Scratch,
    request_id: [u8; 16],
) -> Start {
    restart_except(worker, snapshot, saved, peer, scratch, request_id, None)
}

fn restart_except(
    worker: &Worker,
    snapshot: &Snapshot,
    saved: &[u8],
    peer: SocketAddr,
    scratch: &mut Scratch,
    request_id: [u8; 16],
    except: Option<&Rc<Tunnel>>,
) -> Start {
    let mut fields = [Field::EMPTY; 128];
    match parse_request(saved, &mut fields, &Limits::default()) {
        Ok(Status::Complete(head)) => {
            start(worker, snapshot, &head, peer, scratch, request_id, except)
        }
        _ => Start::Local {
            response: Vec::new(),
            keep_alive: false,
        },
    }
}

/// Finishes a sign-in at the callback.
async fn finish_login(worker: &Worker, snapshot: &Snapshot, work: &CallbackWork) -> flow::Answer {
    let config = &snapshot.config;
    let app = config.apps.iter().find(|a| a.name == work.app);
    let Some((app, preauth)) = app.and_then(|a| Some((a, a.preauth.as_ref()?))) else {
        return flow::Answer::page(404, "No application here", "The application is gone.");
    };
    let Some(provider) = worker.shared.provider(config, &preauth.provider) else {
        return flow::Answer::page(
            503,
            "Sign-in unavailable",
            "The provider is not configured.",
        );
    };
    flow::finish_login(
        &snapshot.keyring.ring,
        &worker.providers,
        &provider,
        app,
        preauth,
        &work.callback,
        unix_now(),
    )
    .await
}

/// Reads the body of a development-provider request and answers it.
async fn dev_idp(
    conn: &mut Client,
    worker: &Worker,
    work: DevIdpWork,
    request_id: &[u8; 16],
) -> bool {
    let outcome = &mut Outcome::default();
    let snapshot = worker.snapshot();
    let hsts = snapshot.config.hsts.as_deref();
    let Some(idp) = worker.shared.dev_idp.as_ref() else {
        return false;
    };
    let mut body = Vec::new();
    if work.body != BodyKind::Empty {
        let mut decoder = BodyDecoder::new(work.body, &Limits::default());
        let idle = Instant::now() + FORM_TIMEOUT;
        loop {
            match conn.next_body_chunk(&mut decoder, Some(idle)).await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= DEV_IDP_MAX_BODY => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => {
                    page(
                        conn,
                        outcome,
                        hsts,
                        413,
                        "Content too large",
                        "The form is too large.",
                        request_id,
                    )
                    .await;
                    return false;
                }
                Ok(None) => break,
                Err(_) => return false,
            }
        }
    }
    let request = crate::devidp::IdpRequest {
        method: &work.method,
        path: &work.path,
        query: &work.query,
        authorization: work.authorization.as_deref(),
        content_type: work.content_type.as_deref(),
        body: &body,
    };
    let answer = idp.handle(&request, unix_now());
    let mut out = Vec::with_capacity(answer.body.len() + 512);
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nX-Request-Id: {}\r\n",
            answer.status,
            pages::reason(answer.status),
            answer.body.len(),
            hex(request_id)
        )
        .as_bytes(),
    );
    for (name, value) in &answer.headers {
        if !value.bytes().any(|b| b == b'\r' || b == b'\n') {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
    }
    if !work.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if work.method != b"HEAD" {
        out.extend_from_slice(&answer.body);
    }
    add_hsts(&mut out, worker.snapshot().config.hsts.as_deref());
    conn.write_vec(out).await.0.is_ok() && work.keep_alive
}

/// Decides what to do with a request head, and opens its stream (synchronously, with the
/// head still borrowed from the read buffer: nothing is copied on the way into the tunnel).
fn start(
    worker: &Worker,
    snapshot: &Snapshot,
    head: &RequestHead<'_, '_>,
    peer: SocketAddr,
    scratch: &mut Scratch,
    request_id: [u8; 16],
    except: Option<&Rc<Tunnel>>,
) -> Start {
    let config = &snapshot.config;
    let keep_alive = head.keep_alive && head.body == BodyKind::Empty;
    for field in [
        &mut scratch.app,
        &mut scratch.user,
        &mut scratch.host,
        &mut scratch.path,
    ] {
        field.clear();
    }
    let local = |status: u16, title: &str, detail: &str| {
        local_page(status, title, detail, &request_id, keep_alive)
    };
    let answer = |answer: flow::Answer| {
        let mut response = Vec::with_capacity(1024);
        answer.write(&mut response, &hex(&request_id), !keep_alive);
        Start::Local {
            response,
            keep_alive,
        }
    };
    // RFC 9112 3.2.2: with an absolute-form target, its authority is the host, for routing,
    // policy and everything forwarded; the client's Host field is ignored and replaced.
    let (Some(host), path) = (head.authority(), head.origin_target()) else {
        return local(400, "Bad request", "The request names no host.");
    };
    if head.is_connect() {
        return local(405, "Method not allowed", "CONNECT is not offered here.");
    }
    let limits = &config.limits;
    let client = policy::client_ip(
        peer,
        &config.trusted_proxies,
        head.fields.get_all("x-forwarded-for"),
    );
    if let Err(retry_after) =
        worker
            .shield
            .request(client, limits, worker.shared.workers, Instant::now())
    {
        worker.ops.rate_limited();
        let mut response = Vec::with_capacity(1024);
        pages::retry_page(
            &mut response,
            429,
            "Too many requests",
            "Your address sent more requests than this service takes; try again shortly.",
            &hex(&request_id),
            retry_after,
            !keep_alive,
        );
        return Start::Local {
            response,
            keep_alive,
        };
    }
    if let BodyKind::Length(n) = head.body {
        if limits.max_body_size > 0 && n > limits.max_body_size {
            return local_page(
                413,
                "Content too large",
                "The request body is larger than this service accepts.",
                &request_id,
                false,
            );
        }
    }
    let (path_only, query) = match path.iter().position(|&b| b == b'?') {
        Some(q) => (&path[..q], &path[q + 1..]),
        None => (path, &b""[..]),
    };
    // Targets and authorities are ASCII (the parser checked their characters).
    scratch
        .host
        .push_str(std::str::from_utf8(host).unwrap_or(""));
    scratch
        .path
        .push_str(std::str::from_utf8(path_only).unwrap_or(""));
    if path_only == b"/robots.txt" {
        let mut response = Vec::with_capacity(256);
        pages::robots(&mut response, !head.is_head(), !keep_alive);
        return Start::Local {
            response,
            keep_alive,
        };
    }
    if path_only == auth::JWKS_PATH {
        let mut response = Vec::with_capacity(512);
        let jwks = worker.shared.signer.jwks_json();
        pages::document(
            &mut response,
            "application/json",
            jwks.as_bytes(),
            !head.is_head(),
            !keep_alive,
        );
        return Start::Local {
            response,
            keep_alive,
        };
    }
    let bare_host = routes::host_without_port(host);
    if let (Some(_), Some(rest)) = (
        worker.shared.dev_idp.as_ref(),
        path_only.strip_prefix(b"/.gatehouse/idp"),
    ) {
        if bare_host.eq_ignore_ascii_case(config.public_name.as_bytes()) {
            return Start::DevIdp(Box::new(DevIdpWork {
                method: head.method.to_vec(),
                path: String::from_utf8_lossy(rest).into_owned(),
                query: String::from_utf8_lossy(query).into_owned(),
                authorization: head.fields.get("authorization").map(<[u8]>::to_vec),
                content_type: head.fields.get("content-type").map(<[u8]>::to_vec),
                body: head.body,
                keep_alive: head.keep_alive,
            }));
        }
    }
    let Some(app) = routes::find(&config.apps, host, path) else {
        return local(
            404,
            "No application here",
            "No application is published at this address.",
        );
    };
    scratch.app.clear();
    scratch.app.push_str(&app.name);
    scratch.user.clear();
    let outgoing = Outgoing {
        head,
        app,
        peer,
        request_id,
        host,
        path,
        identity: None,
        session_key: None,
        drop_authorization: false,
    };
    let Some(preauth) = &app.preauth else {
        return forward(worker, config, outgoing, &mut scratch.cookie, except);
    };

    // Pre-authentication. Paths of the sign-in flow live under the app's prefix.
    let prefix = app.external.path_prefix.as_bytes();
    let relative = path_only.strip_prefix(prefix).unwrap_or(b"");
    let host_text = std::str::from_utf8(host).unwrap_or("");
    let cookies = || head.fields.get_all("cookie");
    let now = unix_now();
    if relative == auth::CALLBACK.as_bytes() {
        if !matches!(head.method, b"GET" | b"HEAD") {
            return local(405, "Method not allowed", "The sign-in callback takes GET.");
        }
        return Start::Callback(Box::new(CallbackWork {
            app: app.name.clone(),
            callback: flow::Callback {
                host: host_text.to_owned(),
                query: String::from_utf8_lossy(query).into_owned(),
                login_cookie: flow::login_cookie(app, cookies()),
                client,
            },
            keep_alive,
        }));
    }
    // The provider's settings are only looked up off the signed-in path.
    let provider = || worker.shared.provider(config, &preauth.provider);
    let unconfigured = || {
        local(
            503,
            "Sign-in unavailable",
            "The identity provider is not configured.",
        )
    };
    if relative == auth::LOGOUT.as_bytes() {
        let Some(provider) = provider() else {
            return unconfigured();
        };
        // The cookie goes from the browser, and the session from everywhere: a copy of the
        // cookie kept elsewhere no longer opens, on any worker, after a restart too.
        if let Some(session) = auth::open_session(
            &snapshot.keyring.ring,
            app,
            cookies(),
            now,
            &mut scratch.open[..],
            &mut scratch.memo,
        ) {
            if let Err(e) =
                worker
                    .shared
                    .revoked
                    .revoke(session.session_id, session.expires_at, now)
            {
                eprintln!("gatehouse service: cannot write the revoked-session list: {e}");
            }
            // Other instances refuse it too (with a shared state; sent in the background).
            worker
                .shared
                .control
                .publish_signed_out(&session.session_id, session.expires_at, now);
        }
        let state = worker.providers.get(&provider);
        return answer(flow::logout(&provider, state.as_deref(), app, host_text));
    }
    let gate = auth::check_session(
        &snapshot.keyring.ring,
        app,
        cookies(),
        client,
        now,
        &mut scratch.open[..],
        &mut scratch.memo,
    );
    // A session signed out of (anywhere) is no session.
    let gate = match gate {
        Gate::Allow(session)
            if worker
                .revoked
                .contains(&worker.shared.revoked, &session.session_id) =>
        {
            Gate::SignIn { fresh: false }
        }
        gate => gate,
    };
    match gate {
        Gate::Allow(session) => {
            scratch.user.push_str(session.user_name);
            // Most users have a handful of groups: those fit on the stack; more (up to the
            // 255 a session holds) take one allocation.
            let mut inline: [&str; 16] = [""; 16];
            let spilled: Vec<&str>;
            let groups: &[&str] = if session.groups.len() <= inline.len() {
                for (slot, group) in inline.iter_mut().zip(session.groups.iter()) {
                    *slot = group;
                }
                &inline[..session.groups.len()]
            } else {
                spilled = session.groups.iter().collect();
                &spilled
            };
            let who = auth::Subject {
                session_id: Some(session.session_id),
                subject: session.subject,
                user_name: session.user_name,
                display_name: session.display_name,
                email: session.email,
                mfa: session.auth_methods.mfa(),
                auth_time: session.auth_time,
                expires_at: session.expires_at,
            };
            let identity = identity(worker, app, preauth, &who, groups, now);
            let outgoing = Outgoing {
                identity: Some(identity.parts(&who, groups)),
                session_key: Some(session.session_id),
                ..outgoing
            };
            forward(worker, config, outgoing, &mut scratch.cookie, except)
        }
        Gate::Deny(denial) => {
            let (status, title, detail) = denial.page();
            local(status, title, detail)
        }
        Gate::SignIn { fresh } => {
            let Some(provider) = provider() else {
                return unconfigured();
            };
            if let Some(token) = bearer_token(head) {
                let Some(state) = worker.providers.get(&provider) else {
                    return Start::NeedProvider(Box::new(provider));
                };
                let claims = match flow::verify_bearer(&provider, &state, preauth, token, now) {
                    Ok(claims) => claims,
                    Err(None) => return Start::NeedProvider(Box::new(provider)),
                    Err(Some(e)) => {
                        let rejected = flow::token_rejected(e);
                        events::sign_in(
                            worker,
                            &request_id,
                            &app.name,
                            client,
                            "",
                            events::Decision::Deny,
                            &rejected.reason,
                        );
                        return answer(rejected);
                    }
                };
                let mfa = flow::is_mfa(&provider, &claims);
                let user_name = claims.preferred_username.as_deref().unwrap_or(&claims.sub);
                let facts = policy::Facts {
                    subject: &claims.sub,
                    user_name,
                    email: claims.email.as_deref().unwrap_or(""),
                    in_group: |g: &str| claims.groups.iter().any(|c| c == g),
                    groups_overage: claims.groups_overage,
                    mfa,
                    auth_time: claims.auth_time.unwrap_or(claims.iat),
                };
                scratch.user.push_str(user_name);
                let decision = policy::check(&preauth.access, &facts, client, now);
                events::sign_in(
                    worker,
                    &request_id,
                    &app.name,
                    client,
                    user_name,
                    match decision {
                        Ok(()) => events::Decision::Allow,
                        Err(_) => events::Decision::Deny,
                    },
                    decision.map_or_else(|d| d.reason(), |()| "bearer_token"),
                );
                if let Err(denial) = decision {
                    let (status, title, detail) = denial.page();
                    return local(status, title, detail);
                }
                let group_refs: Vec<&str> =
                    claims.groups.iter().map(String::as_str).take(255).collect();
                let who = auth::Subject {
                    session_id: None,
                    subject: &claims.sub,
                    user_name,
                    display_name: claims.name.as_deref().unwrap_or(user_name),
                    email: claims.email.as_deref().unwrap_or(""),
                    mfa,
                    auth_time: claims.auth_time.unwrap_or(claims.iat),
                    expires_at: claims.exp,
                };
                let identity = identity(worker, app, preauth, &who, &group_refs, now);
                let outgoing = Outgoing {
                    identity: Some(identity.parts(&who, &group_refs)),
                    drop_authorization: true,
                    ..outgoing
                };
                return forward(worker, config, outgoing, &mut scratch.cookie, except);
            }
            if !matches!(head.method, b"GET" | b"HEAD") {
                return local(
                    401,
                    "Sign-in required",
                    "This application requires sign-in. Open it in a browser, or send an \
                     Authorization: Bearer token.",
                );
            }
            let Some(state) = worker.providers.get(&provider) else {
                return Start::NeedProvider(Box::new(provider));
            };
            answer(flow::start_login(
                &snapshot.keyring.ring,
                &provider,
                &state,
                app,
                preauth,
                host_text,
                path,
                fresh,
                now,
            ))
        }
    }
}

/// An error page answered at the edge; the connection goes on if `keep_alive`.
fn local_page(
    status: u16,
    title: &str,
    detail: &str,
    request_id: &[u8; 16],
    keep_alive: bool,
) -> Start {
    let mut response = Vec::with_capacity(1024);
    pages::error_page(
        &mut response,
        status,
        title,
        detail,
        &hex(request_id),
        !keep_alive,
    );
    Start::Local {
        response,
        keep_alive,
    }
}

/// The token of an `Authorization: Bearer` field.
fn bearer_token<'b>(head: &RequestHead<'b, '_>) -> Option<&'b str> {
    let value = head.fields.get("authorization")?;
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    std::str::from_utf8(token).ok().map(str::trim)
}

/// The signed assertion of a signed-in user, when the app sends one.
struct Assertion(Option<Rc<str>>);

impl Assertion {
    /// The identity to put into the OPEN frame.
    fn parts<'a>(&'a self, who: &auth::Subject<'a>, groups: &'a [&'a str]) -> IdentityParts<'a> {
        IdentityParts {
            user: who.user_name,
            email: who.email,
            name: who.display_name,
            mfa: who.mfa,
            groups,
            assertion: self.0.as_deref().unwrap_or(""),
            cache: IdentityCache::None,
        }
    }
}

/// Signs (or reuses) the identity assertion for `who`.
fn identity(
    worker: &Worker,
    app: &App,
    preauth: &Preauth,
    who: &auth::Subject<'_>,
    groups: &[&str],
    now: u64,
) -> Assertion {
    Assertion(preauth.identity_headers.assertion.as_ref().and_then(|_| {
        worker.assertions.get(
            &worker.shared.signer,
            &worker.shared.assertion_issuer,
            app,
            who,
            groups.iter().copied(),
            now,
        )
    }))
}

/// Picks a tunnel of the app's group on this worker and opens the request's stream on it.
fn forward(
    worker: &Worker,
    config: &ServiceConfig,
    request: Outgoing<'_, '_, '_>,
    cookie_buf: &mut Vec<u8>,
    except: Option<&Rc<Tunnel>>,
) -> Start {
    let (head, app, request_id) = (request.head, request.app, request.request_id);
    let has_body = head.body != BodyKind::Empty;
    let keep_alive = head.keep_alive && !has_body;
    let local = |status: u16, title: &str, detail: &str| {
        local_page(status, title, detail, &request_id, keep_alive)
    };
    let app_slot =
        match worker
            .shield
            .app_request(&app.name, app.max_concurrent, worker.shared.workers)
        {
            Ok(slot) => slot,
            Err(()) => {
                let mut response = Vec::with_capacity(1024);
                pages::retry_page(
                    &mut response,
                    503,
                    "Application busy",
                    "The application has as many requests in progress as it is allowed; try again \
                 shortly.",
                    &hex(&request_id),
                    1,
                    true,
                );
                return Start::Local {
                    response,
                    keep_alive: false,
                };
            }
        };
    if let Some((status, title, detail)) = misfit_for_tunnel(head, request.path) {
        return local(status, title, detail);
    }
    let Some(tunnel) = worker.pick(&app.group, except) else {
        return local(
            502,
            "No connector online",
            &format!(
                "No connector of group \"{}\" is connected, so the application cannot be reached.",
                app.group
            ),
        );
    };
    // A session's identity goes to a tunnel once; later requests name it by key.
    let mut request = request;
    let mut stored = None;
    if let (Some(identity), Some(key)) = (request.identity.as_mut(), request.session_key) {
        identity.cache = tunnel.identity_form(key, identity.assertion);
        if let IdentityCache::Store(_) = identity.cache {
            stored = Some((key, identity.assertion));
        }
    }
    let upgrade = allowed_upgrade(head, app);
    let opened = open(&tunnel, &request, upgrade, cookie_buf);
    if let (Ok(_), Some((key, assertion))) = (&opened, stored) {
        tunnel.identity_stored(key, assertion);
    }
    let stream = match opened {
        Ok(stream) => stream,
        // Every part was checked against the frame's bounds; what is left is the frame's
        // total size.
        Err(gatehouse_tunnel::StreamError::WrongState) => {
            return local(
                431,
                "Request header fields too large",
                "The request's header fields are larger than this service forwards.",
            );
        }
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
    Start::Proxy(Proxied {
        stream,
        tunnel,
        request_id,
        app: config
            .apps
            .iter()
            .position(|a| std::ptr::eq(a, app))
            .unwrap_or_default(),
        response_timeout: app.response_timeout,
        idle_timeout: app.idle_timeout,
        head_request: head.is_head(),
        http11: head.version == Version::Http11,
        keep_alive: head.keep_alive,
        expect_continue: head.expect_continue,
        body: head.body,
        upgrade: upgrade.is_some(),
        idempotent: !has_body && matches!(head.method, b"GET" | b"HEAD" | b"OPTIONS"),
        _app_slot: app_slot,
        _in_flight: worker.shield.request_started(),
        max_body_size: config.limits.max_body_size,
        min_body_rate: config.limits.min_body_rate,
    })
}

/// What goes into one OPEN frame.
#[derive(Clone, Copy)]
struct Outgoing<'r, 'b, 'f> {
    head: &'r RequestHead<'b, 'f>,
    app: &'r App,
    peer: SocketAddr,
    request_id: [u8; 16],
    /// The authority the request was routed by (see [`RequestHead::authority`]): the only
    /// Host that goes on.
    host: &'r [u8],
    path: &'r [u8],
    identity: Option<IdentityParts<'r>>,
    /// The session whose identity this is: the tunnel's connector may keep it.
    session_key: Option<[u8; 16]>,
    drop_authorization: bool,
}

/// Opens the request's stream on `tunnel`. Fields that only concern this hop, that the proxy
/// sets itself, or that back ends might trust (identity, forwarding) are not forwarded; nor
/// are Gatehouse's own cookies. The client's Host field is replaced by the authority the
/// request was routed by, which no Connection field can remove.
fn open(
    tunnel: &Tunnel,
    request: &Outgoing<'_, '_, '_>,
    upgrade_value: Option<&[u8]>,
    cookie_buf: &mut Vec<u8>,
) -> Result<StreamHandle, gatehouse_tunnel::StreamError> {
    let head = request.head;
    let app = request.app;
    let all = head.fields.as_slice();
    let own_cookies = head
        .fields
        .get_all("cookie")
        .any(|v| contains_ignoring_case(v, auth::COOKIE_PREFIX));
    let keep_cookie =
        own_cookies && auth::strip_own_cookies(head.fields.get_all("cookie"), cookie_buf);
    let identity_names = app.preauth.as_ref().map(|p| &p.identity_headers);
    let forwarded = all
        .iter()
        .filter(|f| !f.is("host") && forwardable(f, all))
        .filter(|f| !(own_cookies && f.is("cookie")))
        .filter(|f| !(request.drop_authorization && f.is("authorization")))
        .filter(|f| identity_names.is_none_or(|names| !names.names().any(|n| folded_eq(f.name, n))))
        .map(|f| (f.name, f.value))
        .chain(std::iter::once((&b"Host"[..], request.host)))
        .chain(keep_cookie.then_some((&b"Cookie"[..], &cookie_buf[..])))
        .chain(upgrade_value.map(|_| (&b"Connection"[..], &b"Upgrade"[..])))
        .chain(upgrade_value.map(|v| (&b"Upgrade"[..], v)));
    tunnel.mux.open(OpenParts {
        stream: StreamId(0),
        // An upgrade keeps the stream open upwards: the new protocol's bytes follow a 101.
        end: head.body == BodyKind::Empty && upgrade_value.is_none(),
        request_id: request.request_id,
        client: request.peer,
        https: true,
        app: &app.name,
        method: head.method,
        target: request.path,
        http11: head.version == Version::Http11,
        body: match head.body {
            BodyKind::Empty => BodyLength::Empty,
            BodyKind::Length(n) => BodyLength::Known(n),
            BodyKind::Chunked | BodyKind::CloseDelimited => BodyLength::Streamed,
        },
        identity: request.identity,
        fields: forwarded,
    })
}

/// The protocol in the client's Upgrade field that the app allows (`upgrades`, WebSocket by
/// default), if the request asks to switch at all (RFC 9110 7.8). Any other is dropped with
/// the Upgrade field and the request goes on as a plain one: `h2c` above all, which is
/// HTTP/2 without TLS and never valid on a TLS connection (RFC 9113 3.1).
fn allowed_upgrade<'b>(head: &RequestHead<'b, '_>, app: &App) -> Option<&'b [u8]> {
    if !head.upgrade {
        return None;
    }
    head.fields
        .get_all("upgrade")
        .flat_map(|value| value.split(|&b| b == b','))
        .map(|element| element.trim_ascii())
        .find(|protocol| {
            let name = protocol.split(|&b| b == b'/').next().unwrap_or(protocol);
            app.upgrades
                .iter()
                .any(|allowed| name.eq_ignore_ascii_case(allowed.as_bytes()))
        })
}

/// The page for a request whose parts do not fit the tunnel's OPEN frame (one-byte lengths for
/// the method and field names, two-byte ones for the target and field values), if one does
/// not: the status a server gives for each, never "no connector".
fn misfit_for_tunnel(
    head: &RequestHead<'_, '_>,
    path: &[u8],
) -> Option<(u16, &'static str, &'static str)> {
    const SHORT: usize = u8::MAX as usize;
    const LONG: usize = u16::MAX as usize;
    if head.method.len() > SHORT {
        return Some((
            501,
            "Not implemented",
            "The request method is longer than any this service forwards.",
        ));
    }
    if path.len() > LONG {
        return Some((414, "URI too long", "The request target is too long."));
    }
    let too_large = |f: &Field<'_>| f.name.len() > SHORT || f.value.len() > LONG;
    head.fields.as_slice().iter().any(too_large).then_some((
        431,
        "Request header fields too large",
        "A header field is longer than this service forwards.",
    ))
}

fn contains_ignoring_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// `name` equals `configured` ignoring ASCII case and with '_' read as '-': back ends that
/// fold '_' into '-' must not receive a client's spelling of an identity header.
fn folded_eq(name: &[u8], configured: &str) -> bool {
    name.len() == configured.len()
        && name.iter().zip(configured.bytes()).all(|(&a, b)| {
            let a = if a == b'_' { b'-' } else { a };
            a.eq_ignore_ascii_case(&b)
        })
}

fn forwardable(field: &Field<'_>, all: &[Field<'_>]) -> bool {
    !is_hop_by_hop(field.name, all)
        && !field.is("content-length")
        && !field.is("expect")
        // Only meaningful with an h2c upgrade, which is never forwarded (RFC 9113 3.1).
        && !field.is("http2-settings")
        // Names with '_' are dropped (as nginx does): back ends that fold '_' into '-' must
        // not be handed a second spelling of a header the proxy controls.
        && !field.name.contains(&b'_')
        && !is_proxy_controlled(field.name)
}

/// The minimum-body-rate rule (`[limits] min_body_rate`): time is cut into 10-second windows
/// from the start of the body, and each window must bring at least the rate times its length.
/// A body that stops altogether is cut off at the end of the window it falls short in, not
/// after the idle timeout (a slow-body attack, THREATS.md DOS-2).
struct BodyRate {
    /// Bytes per second; 0 = no rule.
    rate: u32,
    /// Start of the current window.
    start: Instant,
    /// Bytes received in it.
    bytes: u64,
}

impl BodyRate {
    const WINDOW: Duration = Duration::from_secs(10);

    fn new(rate: u32, now: Instant) -> Self {
        BodyRate {
            rate,
            start: now,
            bytes: 0,
        }
    }

    fn needed(&self) -> u64 {
        u64::from(self.rate) * Self::WINDOW.as_secs()
    }

    /// Counts `len` bytes that arrived at `now`; false when a window that ended before them
    /// fell short.
    fn arrived(&mut self, len: usize, now: Instant) -> bool {
        if self.rate > 0 {
            while now >= self.start + Self::WINDOW {
                if self.bytes < self.needed() {
                    return false;
                }
                self.start += Self::WINDOW;
                self.bytes = 0;
            }
        }
        self.bytes += len as u64;
        true
    }

    /// By when more must arrive for the rule to hold: the end of the current window if it is
    /// short so far, else the end of the next one (`None`: no rule).
    fn deadline(&self) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        Some(match self.bytes < self.needed() {
            true => self.start + Self::WINDOW,
            false => self.start + 2 * Self::WINDOW,
        })
    }
}

/// How a request ended, for its event and the metrics.
#[derive(Default)]
struct Outcome {
    /// The status sent to the client (0: none was sent).
    status: u16,
    /// Response body bytes sent.
    bytes: u64,
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
#[allow(clippy::too_many_arguments)]
async fn proxy(
    conn: &mut Client,
    mut p: Proxied,
    worker: &Worker,
    snapshot: &Snapshot,
    peer: SocketAddr,
    saved: &[u8],
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
    outcome: &mut Outcome,
) -> After {
    let hsts = snapshot.config.hsts.as_deref();
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
        // A chunked body's chunk sizes are held to the size limit as they arrive.
        let limits = Limits {
            body: match p.max_body_size {
                0 => u64::MAX,
                max => max,
            },
            ..Limits::default()
        };
        let mut decoder = BodyDecoder::new(p.body, &limits);
        let mut received: u64 = 0;
        let mut rate = BodyRate::new(p.min_body_rate, Instant::now());
        loop {
            let now = Instant::now();
            let idle = now + p.idle_timeout;
            let deadline = rate.deadline().map_or(idle, |d| d.min(idle));
            match conn.next_body_chunk(&mut decoder, Some(deadline)).await {
                Ok(Some(chunk))
                    if {
                        received += chunk.len() as u64;
                        let too_large = p.max_body_size > 0 && received > p.max_body_size;
                        too_large || !rate.arrived(chunk.len(), Instant::now())
                    } =>
                {
                    p.stream.reset(Code::CANCEL);
                    let (status, title) = match p.max_body_size > 0 && received > p.max_body_size {
                        true => (413, "Content too large"),
                        false => (408, "Request body too slow"),
                    };
                    page(
                        conn,
                        outcome,
                        hsts,
                        status,
                        title,
                        "The request body was not accepted.",
                        &p.request_id,
                    )
                    .await;
                    return After::Close;
                }
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
                        ConnError::Timeout if Instant::now() < idle => {
                            (408, "Request body too slow")
                        }
                        ConnError::Timeout => (408, "Request body timed out"),
                        _ => return After::Close,
                    };
                    page(
                        conn,
                        outcome,
                        hsts,
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
                    outcome,
                    hsts,
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
                    write_head(out, &r, &p, hsts, false, Framing::None);
                    if conn.write_vec(std::mem::take(out)).await.0.is_err() {
                        return After::Close;
                    }
                }
            }
            StreamEvent::Response(r) => break r,
            StreamEvent::Reset(Code::REFUSED_STREAM) | StreamEvent::Refused
                if attempts < RETRIES && p.body == BodyKind::Empty =>
            {
                // Not processed by the connector (it may have lost an identity this tunnel
                // was keeping for it): forget what the tunnel keeps, try again in full.
                p.tunnel.identities.borrow_mut().clear();
                attempts += 1;
                let again = reopen(worker, saved, peer, &p, scratch, true)
                    .or_else(|| reopen(worker, saved, peer, &p, scratch, false));
                if let Some((stream, tunnel)) = again {
                    p.stream = stream;
                    p.tunnel = tunnel;
                    continue;
                }
                page(
                    conn,
                    outcome,
                    hsts,
                    502,
                    "Connector connection lost",
                    &format!(
                        "No other connector of group \"{}\" could take the request.",
                        snapshot.config.apps[p.app].group
                    ),
                    &p.request_id,
                )
                .await;
                return After::Close;
            }
            // The tunnel ended under the request (the connector or its instance died): a
            // request that is safe to repeat goes to another tunnel, any other fails cleanly.
            StreamEvent::Refused
            | StreamEvent::Closed
            | StreamEvent::Reset(Code::CONNECTION_LOST) => {
                let refused = matches!(event, StreamEvent::Refused);
                let retry =
                    attempts < RETRIES && p.body == BodyKind::Empty && (refused || p.idempotent);
                if retry {
                    attempts += 1;
                    if let Some((stream, tunnel)) = reopen(worker, saved, peer, &p, scratch, true) {
                        p.stream = stream;
                        p.tunnel = tunnel;
                        continue;
                    }
                }
                page(conn, outcome, hsts, 502, "Connector connection lost", &format!("The connection to the connector of group \"{}\" was lost before the application answered.", snapshot.config.apps[p.app].group), &p.request_id).await;
                return After::Close;
            }
            StreamEvent::Reset(code) => {
                let (status, title, detail) = reset_page(code);
                page(conn, outcome, hsts, status, title, detail, &p.request_id).await;
                return (keep_alive && p.body == BodyKind::Empty).into();
            }
            StreamEvent::Data(_) | StreamEvent::End => {
                page(
                    conn,
                    outcome,
                    hsts,
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
            outcome,
            hsts,
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
    outcome.status = response.status;
    write_head(
        out,
        &response,
        &p,
        hsts,
        response.status != 101 && !keep_alive,
        framing,
    );
    // A small body that came with the head goes out in the same write: one TLS record and
    // one send for a typical small response instead of two. An event that is not body data
    // is handled after the write, in order.
    let mut body_done = response.end;
    let mut early = None;
    if matches!(framing, Framing::Length(_)) {
        while !body_done && out.len() < COALESCE_LIMIT {
            match p.stream.try_next() {
                Some(StreamEvent::Data(data)) => {
                    outcome.bytes += data.len() as u64;
                    out.extend_from_slice(&data);
                    p.stream.consume(data.len());
                }
                Some(StreamEvent::End) => body_done = true,
                Some(other) => {
                    early = Some(other);
                    break;
                }
                None => break,
            }
        }
    }
    let (res, buf) = conn.write_vec(std::mem::take(out)).await;
    *out = buf;
    if res.is_err() {
        return After::Close;
    }
    if response.status == 101 {
        return After::Upgraded(p.stream);
    }
    if body_done {
        return keep_alive.into();
    }
    // Response body: each DATA payload goes out as it is (a slice of the tunnel's read
    // buffer) and its credit returns once the client took it.
    let mut size_line = [0u8; 20];
    loop {
        let idle = Instant::now() + p.idle_timeout;
        let event = match early.take() {
            Some(event) => event,
            None => match monoio::time::timeout_at(idle.into(), p.stream.next()).await {
                Ok(event) => event,
                Err(_) => {
                    p.stream.reset(Code::CANCEL);
                    return After::Close;
                }
            },
        };
        match event {
            StreamEvent::Data(data) => {
                let len = data.len();
                outcome.bytes += len as u64;
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

/// Opens the saved request again on a tunnel of its group, another one if `other_tunnel`
/// (the head is looked at anew, so a signed-in request carries its identity again).
fn reopen(
    worker: &Worker,
    saved: &[u8],
    peer: SocketAddr,
    p: &Proxied,
    scratch: &mut Scratch,
    other_tunnel: bool,
) -> Option<(StreamHandle, Rc<Tunnel>)> {
    let snapshot = worker.snapshot();
    let except = other_tunnel.then_some(&p.tunnel);
    match restart_except(
        worker,
        &snapshot,
        saved,
        peer,
        scratch,
        p.request_id,
        except,
    ) {
        Start::Proxy(proxied) => Some((proxied.stream, proxied.tunnel)),
        _ => None,
    }
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

/// Appends `n` in decimal (no allocation, unlike `to_string`).
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(gatehouse_http1::decimal(n, &mut [0; 20]));
}

/// Writes the client-facing response head: the back end's end-to-end fields, our framing
/// and connection fields, and HSTS.
fn write_head(
    out: &mut Vec<u8>,
    r: &Response,
    p: &Proxied,
    hsts: Option<&str>,
    close: bool,
    framing: Framing,
) {
    let version = if p.http11 { "HTTP/1.1" } else { "HTTP/1.0" };
    out.extend_from_slice(version.as_bytes());
    out.push(b' ');
    push_decimal(out, u64::from(r.status));
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
    if let (Some(hsts), false) = (hsts, has_hsts) {
        out.extend_from_slice(b"Strict-Transport-Security: ");
        out.extend_from_slice(hsts.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) | Framing::Announce(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, n);
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

async fn page(
    conn: &mut Client,
    outcome: &mut Outcome,
    hsts: Option<&str>,
    status: u16,
    title: &str,
    detail: &str,
    id: &[u8; 16],
) {
    outcome.status = status;
    let mut out = Vec::with_capacity(1024);
    pages::error_page(&mut out, status, title, detail, &hex(id), true);
    add_hsts(&mut out, hsts);
    let _ = conn.write_vec(out).await;
}

/// Adds Strict-Transport-Security (the configured `hsts`, if any) to a response of our own
/// (a page, a redirect, robots.txt) in `response`, right after its status line: every answer
/// on the HTTPS front carries it, not only the proxied ones.
fn add_hsts(response: &mut Vec<u8>, hsts: Option<&str>) {
    let Some(hsts) = hsts else {
        return;
    };
    let Some(line_end) = response.windows(2).position(|w| w == b"\r\n") else {
        return;
    };
    let at = line_end + 2;
    let field = b"Strict-Transport-Security: "
        .iter()
        .chain(hsts.as_bytes())
        .chain(b"\r\n")
        .copied();
    response.splice(at..at, field);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each 10-second window must bring rate x 10 bytes: a body that keeps up passes window
    /// after window; one that stops is due at the end of the window it falls short in.
    #[test]
    fn the_minimum_body_rate_is_kept_per_window_and_a_stop_is_due_at_its_end() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut rate = BodyRate::new(100, start);
        assert_eq!(
            rate.deadline(),
            Some(at(10)),
            "nothing yet: due this window"
        );
        assert!(rate.arrived(600, at(5)));
        assert_eq!(rate.deadline(), Some(at(10)));
        assert!(rate.arrived(400, at(9)));
        assert_eq!(rate.deadline(), Some(at(20)), "this window is met");
        assert!(rate.arrived(1000, at(19)));
        // The window from 20 s brought nothing: a byte at 31 s comes too late.
        assert!(!rate.arrived(1, at(31)));
        assert_eq!(BodyRate::new(0, start).deadline(), None, "no rule");
        assert!(BodyRate::new(0, start).arrived(1, at(1000)));
    }
}
