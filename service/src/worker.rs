//! One worker thread: its runtime, its listeners, its tunnels.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_core::api::ConnectorConfig;
use gatehouse_http1::rt::{contained, TlsStream};
use gatehouse_tunnel::frame::{Config as ConfigFrame, Hello, IdentityCache, IDENTITY_CACHE_MAX};
use gatehouse_tunnel::rt::Mux;
use gatehouse_tunnel::{Connection, Event, Role, TunnelConfig, PROTOCOL_VERSION};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

use crate::{control, front, unix_now, ServiceError, Shared, Snapshot};

/// Time a client or connector gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a connector gets to send its HELLO after the handshake.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a worker looks for a new configuration, revocations and expired certificates.
const HOUSEKEEPING: Duration = Duration::from_millis(200);

/// A tunnel this worker holds.
#[derive(Debug)]
pub(crate) struct Tunnel {
    pub(crate) mux: Mux,
    pub(crate) connector_id: String,
    /// The connector certificate's notAfter (Unix seconds): the tunnel closes then.
    not_after: u64,
    /// Identities this tunnel's connector keeps (session id → the assertion sent with it):
    /// later requests of those sessions send only the key (see `IdentityCache`).
    pub(crate) identities: RefCell<HashMap<[u8; 16], String>>,
}

impl Tunnel {
    /// How to send the identity of session `key` whose assertion is `assertion`.
    pub(crate) fn identity_form(&self, key: [u8; 16], assertion: &str) -> IdentityCache {
        match self.identities.borrow().get(&key) {
            Some(sent) if sent == assertion => IdentityCache::Use(key),
            _ => IdentityCache::Store(key),
        }
    }

    /// Records that the connector now keeps `key` (the same rule as the connector's side).
    pub(crate) fn identity_stored(&self, key: [u8; 16], assertion: &str) {
        let mut kept = self.identities.borrow_mut();
        if !kept.contains_key(&key) && kept.len() >= IDENTITY_CACHE_MAX {
            kept.clear();
        }
        kept.insert(key, assertion.to_owned());
    }
}

/// Everything one worker owns.
pub(crate) struct Worker {
    pub(crate) id: u16,
    pub(crate) shared: Arc<Shared>,
    /// This worker's copy of the revoked sessions (see [`crate::revoked`]).
    pub(crate) revoked: crate::revoked::RevokedCopy,
    /// The configuration in force, behind this worker's own `Rc` so that taking it for a
    /// request touches no counter shared with other workers (the extra allocation happens
    /// once per reload, the saved atomic increment once per request).
    #[allow(clippy::redundant_allocation)]
    snapshot: RefCell<Rc<Arc<Snapshot>>>,
    generation: Cell<u64>,
    /// Tunnels by connector group.
    tunnels: RefCell<HashMap<String, Vec<Rc<Tunnel>>>>,
    /// Request ids: a random per-worker prefix and a counter (no syscall per request).
    id_prefix: [u8; 8],
    id_counter: Cell<u64>,
    /// Identity providers as this worker knows them (metadata, keys).
    pub(crate) providers: crate::auth::provider::Providers,
    /// Identity assertions signed by this worker, per session.
    pub(crate) assertions: crate::auth::AssertionCache,
    /// This worker's share of the client connection and rate limits.
    pub(crate) shield: crate::shield::Shield,
    /// The service is stopping: connections close after their current response.
    pub(crate) draining: Cell<bool>,
    /// Counters and pending events, published every housekeeping tick.
    pub(crate) ops: crate::ops::WorkerOps,
    /// Client connections' read buffers, held only while a connection is busy.
    pub(crate) read_buffers: gatehouse_http1::rt::BufferPool,
    /// Requests' working buffers, held only while a request is in progress.
    pub(crate) front_buffers: crate::front::FrontBufferPool,
    /// Idle keep-alive connections waiting in small tasks, with their deadlines.
    pub(crate) parked: crate::parked::ParkedSet,
}

impl Worker {
    /// The configuration in force.
    #[allow(clippy::redundant_allocation)]
    pub(crate) fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        self.snapshot.borrow().clone()
    }

    /// The least-loaded usable tunnel of `group`, skipping `except`.
    pub(crate) fn pick(&self, group: &str, except: Option<&Rc<Tunnel>>) -> Option<Rc<Tunnel>> {
        let tunnels = self.tunnels.borrow();
        tunnels
            .get(group)?
            .iter()
            .filter(|t| t.mux.is_usable())
            .filter(|t| except.is_none_or(|e| !Rc::ptr_eq(e, t)))
            .min_by_key(|t| t.mux.open_streams())
            .cloned()
    }

    /// Publishes this worker's counters, tunnels and events (housekeeping).
    pub(crate) fn publish(&self) {
        let tunnels = self
            .tunnels
            .borrow()
            .iter()
            .map(|(group, list)| {
                let connectors: std::collections::HashSet<&str> =
                    list.iter().map(|t| t.connector_id.as_str()).collect();
                (group.clone(), (list.len(), connectors.len()))
            })
            .collect();
        if let Some(published) = self.shared.ops.get(usize::from(self.id)) {
            self.ops.publish(
                usize::from(self.id),
                published,
                &self.shared.events,
                tunnels,
            );
        }
    }

    /// A new request id, hex.
    pub(crate) fn request_id(&self) -> [u8; 16] {
        let n = self.id_counter.get().wrapping_add(1);
        self.id_counter.set(n);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.id_prefix);
        id[8..].copy_from_slice(&n.to_be_bytes());
        id
    }

    /// Whether connector `id` is registered and not revoked. A connector this worker does not
    /// know yet may have registered a moment ago through another worker: the shared snapshot
    /// is looked at again before it is refused, so it is accepted everywhere at once.
    pub(crate) fn knows_connector(&self, id: &str) -> bool {
        if self.snapshot().allowed.contains(id) {
            return true;
        }
        self.refresh();
        self.snapshot().allowed.contains(id)
    }

    pub(crate) fn refresh(&self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation == self.generation.get() {
            return;
        }
        self.generation.set(generation);
        let snapshot = self.shared.snapshot();
        let config_changed = snapshot.version() != self.snapshot.borrow().version();
        *self.snapshot.borrow_mut() = Rc::new(snapshot.clone());
        let now = unix_now();
        let mut tunnels = self.tunnels.borrow_mut();
        for (group, list) in tunnels.iter_mut() {
            list.retain(|t| {
                if !snapshot.allowed.contains(&t.connector_id) {
                    // Revoked: drop at once, streams fail.
                    t.mux.handle().close();
                    return false;
                }
                true
            });
            if config_changed {
                let document = config_document(&snapshot, group, "");
                for t in list.iter() {
                    let mut doc = document.clone();
                    doc.connector_id = t.connector_id.clone();
                    let _ = t.mux.handle().with(|c| {
                        c.send_config(ConfigFrame {
                            version: snapshot.version(),
                            document: serde_json::to_vec(&doc).unwrap_or_default().into(),
                        })
                    });
                }
            }
        }
        drop(tunnels);
        self.expire(now);
    }

    /// Closes tunnels whose connector certificate expired or that ended.
    fn expire(&self, now: u64) {
        let mut tunnels = self.tunnels.borrow_mut();
        for list in tunnels.values_mut() {
            list.retain(|t| {
                if t.not_after < now {
                    t.mux.handle().close();
                }
                !t.mux.is_closed()
            });
        }
    }
}

/// The document a connector of `group` gets (from `GET /v1/config` and in CONFIG frames).
pub(crate) fn config_document(
    snapshot: &Snapshot,
    group: &str,
    connector_id: &str,
) -> ConnectorConfig {
    let config = &snapshot.config;
    ConnectorConfig {
        version: snapshot.version(),
        connector_id: connector_id.to_owned(),
        group: group.to_owned(),
        renew_after_secs: config.renewal_age.as_secs(),
        tunnels_per_worker: config.tunnels_per_worker,
        apps: config
            .apps
            .iter()
            .filter(|app| app.group == group)
            .map(control::app_route)
            .collect(),
        instances: snapshot.instances.clone(),
    }
}

/// The worker thread's body: builds the runtime and serves until the service stops.
pub(crate) fn run(id: u16, shared: Arc<Shared>, ready: Sender<Result<(), ServiceError>>) {
    let runtime = gatehouse_http1::rt::runtime();
    let mut runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(ServiceError::io(std::path::Path::new("runtime"), e)));
            return;
        }
    };
    runtime.block_on(async move {
        let snapshot = shared.snapshot();
        let https = snapshot.config.listen_https;
        let tunnel = snapshot.config.listen_tunnel;
        let opts = ListenerOpts::new().reuse_port(true).backlog(4096);
        let front_listener = match TcpListener::bind_with_config(https, &opts) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(ServiceError::Bind(https, e)));
                return;
            }
        };
        let tunnel_listener = match TcpListener::bind_with_config(tunnel, &opts) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(ServiceError::Bind(tunnel, e)));
                return;
            }
        };
        let mut id_prefix = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id_prefix);
        let worker = Rc::new(Worker {
            id,
            revoked: Default::default(),
            generation: Cell::new(shared.generation.load(Ordering::Acquire)),
            snapshot: RefCell::new(Rc::new(snapshot)),
            shared,
            tunnels: RefCell::new(HashMap::new()),
            id_prefix,
            id_counter: Cell::new(0),
            providers: Default::default(),
            assertions: Default::default(),
            shield: Default::default(),
            draining: Cell::new(false),
            ops: Default::default(),
            read_buffers: gatehouse_http1::rt::BufferPool::new(gatehouse_http1::rt::PoolConfig {
                buffer_size: 16 * 1024,
                preallocate: 64,
                // Every client connection waiting for its next request holds one: keep what
                // a few hundred busy connections need instead of reallocating them.
                keep_idle: 1024,
                max_leased: 1 << 20,
            }),
            front_buffers: Default::default(),
            parked: Default::default(),
        });
        let _ = ready.send(Ok(()));
        // Draining cancels the front's pending accept: the listener closes at once.
        let front_accept = monoio::io::Canceller::new();
        monoio::spawn(accept_loop(
            front_listener,
            worker.clone(),
            front_connection,
            Some(front_accept.handle()),
            "client connection",
        ));
        monoio::spawn(accept_loop(
            tunnel_listener,
            worker.clone(),
            tunnel_connection,
            None,
            "tunnel",
        ));
        while !worker.shared.stop.load(Ordering::Acquire) {
            monoio::time::sleep(HOUSEKEEPING).await;
            worker.refresh();
            worker.publish();
            worker.expire(unix_now());
            worker.parked.expire(Instant::now());
            // Buffers a burst left idle go back to the allocator within seconds.
            worker.read_buffers.trim();
            worker.front_buffers.trim();
            gatehouse_http1::rt::trim_idle_buffers();
        }
        // Draining (SIGTERM): take no new client connections, let the requests in flight
        // finish (their connections close after the response), then tell the connectors to
        // go elsewhere.
        worker.draining.set(true);
        front_accept.cancel();
        // Idle keep-alive connections close now; busy ones after their response.
        worker.parked.kick_all();
        let drain_deadline = Instant::now() + worker.snapshot().config.limits.drain_timeout;
        while worker.shield.requests_in_flight() > 0 && Instant::now() < drain_deadline {
            monoio::time::sleep(Duration::from_millis(50)).await;
        }
        for list in worker.tunnels.borrow().values() {
            for t in list {
                t.mux.go_away();
            }
        }
        monoio::time::sleep(Duration::from_millis(200)).await;
        worker.publish();
    });
}

/// Accepts connections, serving each with `serve` in its own task, until `cancel` fires. A
/// panic in one connection's task ends that connection only; it is counted and logged as a
/// `panic` event naming `what` the task served.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    worker: Rc<Worker>,
    serve: F,
    cancel: Option<monoio::io::CancelHandle>,
    what: &'static str,
) where
    F: Fn(TcpStream, std::net::SocketAddr, Rc<Worker>) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    loop {
        let accepted = match &cancel {
            Some(handle) => listener.cancelable_accept(handle.clone()).await,
            None => listener.accept().await,
        };
        let Ok((tcp, peer)) = accepted else {
            if cancel.is_some() && worker.draining.get() {
                // The listener closes with this task.
                return;
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let ops = worker.clone();
        monoio::spawn(contained(
            serve(tcp, peer, worker.clone()),
            move |message| {
                eprintln!("gatehouse service: a {what} task panicked and was closed: {message}");
                ops.ops.task_panicked(what, message);
            },
        ));
    }
}

/// The answer to plain HTTP on the HTTPS port.
const PLAIN_HTTP_PAGE: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 73\r\nConnection: close\r\n\r\n\
The plain HTTP request was sent to the HTTPS port: use https:// instead.\n";

/// A client of the HTTPS front.
async fn front_connection(tcp: TcpStream, peer: std::net::SocketAddr, worker: Rc<Worker>) {
    let limits = &worker.snapshot.borrow().config.limits.clone();
    // Over this worker's share of the connection limits: closed before any TLS work.
    let Some(slot) = worker
        .shield
        .connection(peer.ip(), limits, worker.shared.workers)
    else {
        return;
    };
    let config = worker.shared.front_tls.clone();
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    // Plain HTTP sent to the HTTPS port gets a page a person can read (as nginx does), not
    // TLS bytes: a TLS connection starts with a handshake record (22), a request with a
    // method's capital letter.
    let mut tcp = tcp;
    let readable = monoio::time::timeout_at(deadline.into(), tcp.readable(false)).await;
    if !matches!(readable, Ok(Ok(()))) {
        return;
    }
    if gatehouse_http1::rt::first_byte(&tcp).is_some_and(|b| b.is_ascii_uppercase()) {
        let _ = monoio::io::AsyncWriteRentExt::write_all(&mut tcp, PLAIN_HTTP_PAGE).await;
        return;
    }
    // Boxed: the handshake's state is freed once it is done instead of sizing the
    // connection's task for as long as the connection lives.
    let Ok(tls) = Box::pin(TlsStream::accept_with(tcp, config, Some(deadline))).await else {
        return;
    };
    let conn = front::client(tls, &worker);
    front::serve(conn, peer, worker, slot, true).await;
}

/// A connection to the tunnel listener: a tunnel (by ALPN) or a control call.
async fn tunnel_connection(tcp: TcpStream, peer: std::net::SocketAddr, worker: Rc<Worker>) {
    let tls_configs = worker.shared.tunnel_tls.clone();
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let tls = match TlsStream::accept(tcp, |hello| tls_configs.choose(hello), Some(deadline)).await
    {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("gatehouse service: tunnel listener: handshake with {peer} failed: {e}");
            return;
        }
    };
    if tls.alpn_protocol() == Some(gatehouse_core::api::TUNNEL_ALPN) {
        serve_tunnel(tls, peer, worker).await;
    } else {
        control::serve(tls, peer, worker).await;
    }
}

/// Checks the connector's certificate and HELLO, then adds the tunnel to this worker.
async fn serve_tunnel(tls: TlsStream<TcpStream>, peer: std::net::SocketAddr, worker: Rc<Worker>) {
    let now = unix_now();
    let identity = match tls
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|der| worker.shared.ca.verify_client_cert(der, now))
    {
        Some(Ok(identity)) => identity,
        _ => return,
    };
    if !worker.knows_connector(&identity.id) {
        eprintln!(
            "gatehouse service: tunnel from {peer} refused: connector {} is revoked or unknown",
            identity.id
        );
        return;
    }
    let hello = Hello {
        version: PROTOCOL_VERSION,
        worker: worker.id,
        workers: worker.shared.workers,
        connector_id: String::new(),
        group: String::new(),
    };
    let conn = Connection::new(
        Role::Service,
        TunnelConfig::default(),
        &hello,
        Instant::now(),
    );
    let (reader, writer) = tls.into_split();
    let mux = Mux::new(gatehouse_tunnel::rt::spawn(reader, writer, conn));
    let hello = monoio::time::timeout(HELLO_TIMEOUT, mux.next_control()).await;
    match hello {
        Ok(Some(Event::Hello(h))) if h.connector_id == identity.id && h.group == identity.group => {
        }
        _ => {
            eprintln!(
                "gatehouse service: tunnel from {peer} closed: HELLO missing or not matching its certificate"
            );
            mux.handle().close();
            return;
        }
    }
    let tunnel = Rc::new(Tunnel {
        mux: mux.clone(),
        connector_id: identity.id.clone(),
        not_after: identity.not_after,
        identities: RefCell::new(HashMap::new()),
    });
    worker
        .tunnels
        .borrow_mut()
        .entry(identity.group.clone())
        .or_default()
        .push(tunnel);
    // The connector learns the configuration on this tunnel too.
    let snapshot = worker.snapshot();
    let doc = config_document(&snapshot, &identity.group, &identity.id);
    let _ = mux.handle().with(|c| {
        c.send_config(ConfigFrame {
            version: snapshot.version(),
            document: serde_json::to_vec(&doc).unwrap_or_default().into(),
        })
    });
    // Connection-level events after HELLO: nothing to do but notice the end.
    while mux.next_control().await.is_some() {}
}
