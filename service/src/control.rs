//! The control API on the tunnel listener: registration (with a bootstrap token, or with the
//! ID token of an administrator's device sign-in, relayed by `enrol`), and, with a connector
//! certificate, configuration pull and certificate renewal.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gatehouse_core::api::{
    AppRoute, CertificateResponse, ErrorResponse, RegisterRequest, RenewRequest,
};
use gatehouse_core::ConnectorIdentity;
use gatehouse_http1::rt::{Conn, ConnError, TlsStream};
use gatehouse_http1::{BodyDecoder, Limits};
use monoio::net::TcpStream;
use serde::Serialize;

use crate::config::{App, HostHeader, HostPattern};
use crate::worker::{config_document, Worker};
use crate::{enrol, events};
use crate::{unix_now, TokenRefusal};

/// Largest control request body (a CSR is at most 16 KiB).
const MAX_BODY: usize = 32 * 1024;

/// Time a control client gets to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one control request, then closes.
pub(crate) async fn serve(tls: TlsStream<TcpStream>, peer: SocketAddr, worker: Rc<Worker>) {
    let now = unix_now();
    // A certificate, if the client sent one, must be one of ours and current.
    let identity = tls
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|der| worker.shared.ca.verify_client_cert(der, now));
    let mut conn = Conn::new(tls, BytesMut::with_capacity(8192), Limits::default());
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let head = conn
        .read_request_head(Some(deadline), |h| {
            (h.method_str().to_owned(), h.target_str().to_owned(), h.body)
        })
        .await;
    let (method, target, body_kind) = match head {
        Ok(h) => h,
        Err(ConnError::Http(e)) => {
            let _ = respond(&mut conn, e.status(), &error(e.reason())).await;
            return;
        }
        Err(_) => return,
    };
    let mut body = Vec::new();
    let mut decoder = BodyDecoder::new(body_kind, &Limits::default());
    loop {
        match conn.next_body_chunk(&mut decoder, Some(deadline)).await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_BODY => {
                body.extend_from_slice(&chunk)
            }
            Ok(Some(_)) => {
                let _ = respond(&mut conn, 413, &error("request body too large")).await;
                return;
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    let (status, answer) = match (method.as_str(), target.as_str()) {
        ("POST", "/v1/register") => register(&worker, &body, peer, now).await,
        ("POST", "/v1/enrol/start") => match enrol::start(&worker).await {
            Ok(started) => json(200, &started),
            Err((status, message)) => (status, error(&message)),
        },
        ("POST", "/v1/enrol/poll") => match enrol::poll(&worker, &body).await {
            Ok(progress) => json(200, &progress),
            Err((status, message)) => (status, error(&message)),
        },
        ("GET", "/v1/config") => match authenticated(&worker, identity) {
            Ok(id) => {
                let doc = config_document(&worker.snapshot(), &id.group, &id.id);
                (200, serde_json::to_vec(&doc).unwrap_or_default())
            }
            Err(refusal) => refusal,
        },
        ("POST", "/v1/renew") => match authenticated(&worker, identity) {
            Ok(id) => renew(&worker, &id, &body, now),
            Err(refusal) => refusal,
        },
        _ => (404, error("no such control call")),
    };
    let _ = respond(&mut conn, status, &answer).await;
}

async fn register(worker: &Worker, body: &[u8], peer: SocketAddr, now: u64) -> (u16, Vec<u8>) {
    let Ok(request) = serde_json::from_slice::<RegisterRequest>(body) else {
        return (400, error("the body is not a registration request"));
    };
    // Who enrols, when an administrator signed in rather than a token was made.
    let mut administrator = None;
    if let Some(id_token) = &request.id_token {
        match enrol::administrator(worker, id_token, now).await {
            Ok(who) => administrator = Some(who),
            Err((status, message)) => {
                eprintln!("gatehouse service: enrolment from {peer} refused: {message}");
                let reason = match status {
                    403 => "not_admin",
                    401 => "token_rejected",
                    _ => "enrolment_failed",
                };
                events::enrolment(worker, peer.ip(), "", "", &request.group, false, reason);
                return (status, error(&message));
            }
        }
    } else {
        let checked = {
            let (shared, token) = (worker.shared.clone(), request.token.clone());
            off_worker(move || shared.control.check_token(&token, now)).await
        };
        match checked {
            Some(Ok(())) => {}
            Some(Err(refusal)) => {
                eprintln!(
                    "gatehouse service: registration from {peer} refused: {}",
                    refusal.reason()
                );
                let status = match refusal {
                    TokenRefusal::NotAdmin => 403,
                    TokenRefusal::Invalid | TokenRefusal::Expired | TokenRefusal::Used => 401,
                };
                return (status, error(refusal.reason()));
            }
            // Not checked is not allowed.
            None => return (500, error("the token could not be checked")),
        }
    }
    let ca = &worker.shared.ca;
    let recorded = {
        let shared = worker.shared.clone();
        let (csr, group, hostname) = (
            request.csr.clone(),
            request.group.clone(),
            request.hostname.clone(),
        );
        off_worker(move || {
            let id = shared
                .control
                .new_connector_id()
                .map_err(|e| (500, format!("cannot make a connector id: {e}")))?;
            // The connector is recorded only once its certificate was issued: a bad CSR
            // leaves no trace.
            let issued = shared
                .ca
                .sign_csr(&csr, &id, &group, now)
                .map_err(|e| (400, format!("certificate request refused: {e}")))?;
            shared
                .control
                .record_connector(&id, &group, &hostname, now)
                .map_err(|e| (500, format!("cannot record the connector: {e}")))?;
            // Every worker must accept the new connector's tunnels right away.
            shared.registry_changed();
            Ok((id, issued))
        })
        .await
    };
    let (id, issued) = match recorded {
        Some(Ok(done)) => done,
        Some(Err((status, message))) => return (status, error(&message)),
        None => return (500, error("the registration could not be carried out")),
    };
    match &administrator {
        Some(who) => {
            eprintln!(
                "gatehouse service: connector {id} enrolled in group {} from {peer} by {who}",
                request.group
            );
            events::enrolment(
                worker,
                peer.ip(),
                who,
                &id,
                &request.group,
                true,
                "enrolled",
            );
        }
        None => eprintln!(
            "gatehouse service: connector {id} registered in group {} from {peer}",
            request.group
        ),
    }
    json(
        200,
        &CertificateResponse {
            connector_id: id,
            group: request.group,
            certificate: issued.cert_pem,
            ca: ca.cert_pem(),
        },
    )
}

/// Runs `call` on a thread of its own and waits for it without holding up the worker: the
/// control state may be etcd, whose calls block (for up to their deadline). Registrations
/// are rare, so a thread each is cheap enough; the wait polls, which a cancelled request
/// simply stops doing. `None` if the thread could not run or panicked.
pub(crate) async fn off_worker<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (done, answer) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("gatehouse-control".into())
        .spawn(move || {
            let _ = done.send(call());
        })
        .ok()?;
    loop {
        match answer.try_recv() {
            Ok(value) => return Some(value),
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
        }
    }
}

fn renew(worker: &Worker, id: &ConnectorIdentity, body: &[u8], now: u64) -> (u16, Vec<u8>) {
    let Ok(request) = serde_json::from_slice::<RenewRequest>(body) else {
        return (400, error("the body is not a renewal request"));
    };
    let ca = &worker.shared.ca;
    match ca.sign_csr(&request.csr, &id.id, &id.group, now) {
        Ok(issued) => {
            eprintln!(
                "gatehouse service: connector {} renewed its certificate",
                id.id
            );
            json(
                200,
                &CertificateResponse {
                    connector_id: id.id.clone(),
                    group: id.group.clone(),
                    certificate: issued.cert_pem,
                    ca: ca.cert_pem(),
                },
            )
        }
        Err(e) => (400, error(&format!("certificate request refused: {e}"))),
    }
}

/// The connector identity of a control call, which must come with a current certificate of
/// a connector that is registered and not revoked.
fn authenticated(
    worker: &Worker,
    identity: Option<Result<ConnectorIdentity, gatehouse_core::ClientCertError>>,
) -> Result<ConnectorIdentity, (u16, Vec<u8>)> {
    match identity {
        None => Err((401, error("a connector certificate is required"))),
        Some(Err(e)) => Err((401, error(&format!("connector certificate refused: {e}")))),
        Some(Ok(id)) if !worker.knows_connector(&id.id) => {
            Err((403, error("this connector is revoked or unknown")))
        }
        Some(Ok(id)) => Ok(id),
    }
}

/// The connector's view of an app.
pub(crate) fn app_route(app: &App) -> AppRoute {
    AppRoute {
        name: app.name.clone(),
        external_host: app.external.host.to_string(),
        external_port: app.external.port,
        external_prefix: app.external.path_prefix.clone(),
        internal_https: app.internal.https,
        internal_host: match &app.internal.host {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Wildcard { suffix } => format!("*{suffix}"),
        },
        internal_port: app.internal.port,
        internal_prefix: app.internal.path_prefix.clone(),
        rewrite_host: matches!(app.host_header, HostHeader::Internal),
        translate_urls: app.translate_urls,
        translate_body: app.translate_body,
        response_timeout_ms: app.response_timeout.as_millis() as u64,
        idle_timeout_ms: app.idle_timeout.as_millis() as u64,
        backend_keepalive_ms: app.backend_keepalive.as_millis() as u64,
        // Read and checked when the configuration was loaded; never left out silently.
        backend_ca_pem: app.backend_ca_pem.clone().or_else(|| {
            let path = app.backend_ca.as_ref()?;
            std::fs::read_to_string(path)
                .map_err(|e| {
                    eprintln!(
                        "gatehouse service: app {}: cannot read backend_ca {}: {e}",
                        app.name,
                        path.display()
                    )
                })
                .ok()
        }),
        backend_pin: app.backend_pin.map(|pin| gatehouse_core::hex::encode(&pin)),
        identity_headers: app.preauth.as_ref().map(|p| p.identity_headers.clone()),
    }
}

fn error(message: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorResponse {
        error: message.to_owned(),
    })
    .unwrap_or_default()
}

fn json<T: Serialize>(status: u16, value: &T) -> (u16, Vec<u8>) {
    (status, serde_json::to_vec(value).unwrap_or_default())
}

async fn respond(
    conn: &mut Conn<TlsStream<TcpStream>>,
    status: u16,
    body: &[u8],
) -> Result<(), ConnError> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        crate::pages::reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    conn.write_vec(out).await.0?;
    conn.shutdown().await
}
