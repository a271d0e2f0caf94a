//! The running connector: configuration pull, renewal, and tunnel threads that keep every
//! service worker supplied with tunnels.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_core::api::{CertificateResponse, ConnectorConfig, RenewRequest, TUNNEL_ALPN};
use gatehouse_http1::rt::TlsStream;
use gatehouse_tunnel::frame::Hello;
use gatehouse_tunnel::rt::Mux;
use gatehouse_tunnel::{Connection, Event, Role, TunnelConfig, PROTOCOL_VERSION};

use crate::proxy::{self, ThreadCtx};
use crate::{call, connect, parse_answer, tls, unix_now, ConnectorError, State};

/// How often the configuration is pulled even without a CONFIG push.
const CONFIG_PULL: Duration = Duration::from_secs(60);

/// Backoff between failed dials: doubles from the first to the cap, with full jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// A tunnel up this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);

/// State the connector's threads share (none of it on a request's path).
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// TLS of tunnels and control calls; replaced after a renewal.
    tunnel_tls: Mutex<Arc<rustls::ClientConfig>>,
    control_tls: Mutex<Arc<rustls::ClientConfig>>,
    /// Bumped after each renewal: tunnels made with an older certificate drain away.
    pub(crate) cert_generation: AtomicU64,
    pub(crate) config: Mutex<Arc<ConnectorConfig>>,
    pub(crate) config_generation: AtomicU64,
    /// Tunnels held, per service instance (by tunnel address).
    coverage: Mutex<HashMap<String, Coverage>>,
    stop: AtomicBool,
}

impl Shared {
    pub(crate) fn config(&self) -> Arc<ConnectorConfig> {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes a configuration if it is newer than the one in force. The instance list is
    /// taken from any instance that sends one: it is what that instance sees live now, and
    /// every instance sends it again when its view changes, so the last word is current.
    fn offer_config(&self, config: ConnectorConfig) {
        let mut current = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let newer = config.version > current.version;
        if !newer && !config.instances.is_empty() && config.instances != current.instances {
            let mut taken = (**current).clone();
            taken.instances = config.instances;
            *current = Arc::new(taken);
            self.config_generation.fetch_add(1, Ordering::Release);
            return;
        }
        if newer || current.apps.is_empty() && !config.apps.is_empty() {
            {
                let mut coverage = self.coverage.lock().unwrap_or_else(|e| e.into_inner());
                for instance in coverage.values_mut() {
                    instance.share = config.tunnels_per_worker.max(1);
                }
            }
            *current = Arc::new(config);
            self.config_generation.fetch_add(1, Ordering::Release);
        }
    }

    fn service(&self) -> (String, String) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (
            state.identity.service.clone(),
            state.identity.server_name.clone(),
        )
    }

    /// The tunnel addresses to hold tunnels to: every live instance the service named, or the
    /// address this connector registered with.
    fn instances(&self) -> Vec<String> {
        let listed = self.config().instances.clone();
        if listed.is_empty() {
            vec![self.service().0]
        } else {
            listed
        }
    }

    /// An instance that lacks tunnels, counted as being dialled; `None` when all have their
    /// share.
    fn instance_to_dial(&self) -> Option<String> {
        self.instances().into_iter().find(|address| {
            self.with_coverage(address, |instance| {
                let wants = instance.wants_more();
                if wants {
                    instance.dialing += 1;
                }
                wants
            })
        })
    }

    /// Runs `f` on the coverage of the instance at `address` (new instances start empty).
    fn with_coverage<T>(&self, address: &str, f: impl FnOnce(&mut Coverage) -> T) -> T {
        let share = self.config().tunnels_per_worker.max(1);
        let mut coverage = self.coverage.lock().unwrap_or_else(|e| e.into_inner());
        f(coverage
            .entry(address.to_owned())
            .or_insert_with(|| Coverage {
                share,
                ..Coverage::default()
            }))
    }
}

/// How many tunnels each service worker holds from us.
#[derive(Debug, Default)]
struct Coverage {
    /// Service workers (learnt from the first HELLO).
    workers: Option<u16>,
    /// Tunnels per service worker (current certificate only).
    counts: Vec<u16>,
    /// Dials in progress.
    dialing: u16,
    /// Wanted tunnels per worker.
    share: u16,
}

impl Coverage {
    fn wants_more(&self) -> bool {
        match self.workers {
            None => self.dialing == 0,
            Some(w) => {
                let have: u32 = self.counts.iter().map(|&c| u32::from(c)).sum();
                have + u32::from(self.dialing) < u32::from(w) * u32::from(self.share)
            }
        }
    }

    /// Whether a new tunnel accepted by `worker` of `workers` should stay.
    fn claim(&mut self, worker: u16, workers: u16) -> bool {
        if self.workers != Some(workers) {
            self.workers = Some(workers);
            self.counts = vec![0; usize::from(workers)];
        }
        match self.counts.get_mut(usize::from(worker)) {
            Some(count) if *count < self.share => {
                *count += 1;
                true
            }
            _ => false,
        }
    }

    /// Whether `worker` of `workers` holds its share of current tunnels.
    fn covered(&self, worker: u16, workers: u16) -> bool {
        self.workers == Some(workers)
            && self
                .counts
                .get(usize::from(worker))
                .is_some_and(|&count| count >= self.share)
    }

    fn release(&mut self, worker: u16, workers: u16) {
        if self.workers == Some(workers) {
            if let Some(count) = self.counts.get_mut(usize::from(worker)) {
                *count = count.saturating_sub(1);
            }
        }
    }
}

/// Runs the registered connector in `state_dir` until SIGTERM or SIGINT.
pub fn run(state_dir: &Path) -> Result<(), ConnectorError> {
    let state = State::load(state_dir)?;
    let tunnel_tls =
        tls::service_config(&state.ca_pem, &state.cert_pem, &state.key_pem, TUNNEL_ALPN)?;
    let control_tls =
        tls::service_config(&state.ca_pem, &state.cert_pem, &state.key_pem, b"http/1.1")?;
    eprintln!(
        "gatehouse connector {} (group {}) for {}",
        state.identity.connector_id, state.identity.group, state.identity.service
    );
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        tunnel_tls: Mutex::new(tunnel_tls),
        control_tls: Mutex::new(control_tls),
        cert_generation: AtomicU64::new(0),
        config: Mutex::new(Arc::new(ConnectorConfig::default())),
        config_generation: AtomicU64::new(0),
        coverage: Mutex::new(HashMap::new()),
        stop: AtomicBool::new(false),
    });
    let term = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, term.clone());

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::new();
    for i in 0..threads {
        let shared = shared.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("gatehouse-connector-{i}"))
                .spawn(move || tunnel_thread(shared))
                .map_err(|e| ConnectorError::Io("thread".into(), e))?,
        );
    }
    let mut runtime =
        gatehouse_http1::rt::runtime().map_err(|e| ConnectorError::Io("runtime".into(), e))?;
    runtime.block_on(control_loop(shared.clone(), term));
    shared.stop.store(true, Ordering::Release);
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}

/// On SIGTERM, how long requests in flight may take to finish before tunnels close.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Pulls the configuration (at start and every [`CONFIG_PULL`]) and renews the certificate
/// once it is older than the renewal age.
async fn control_loop(shared: Arc<Shared>, term: Arc<AtomicBool>) {
    let mut next_pull = Instant::now();
    while !term.load(Ordering::Acquire) {
        if Instant::now() >= next_pull {
            match pull_config(&shared).await {
                Ok(config) => {
                    shared.offer_config(config);
                    next_pull = Instant::now() + CONFIG_PULL;
                }
                Err(e) => {
                    eprintln!("gatehouse connector: configuration pull failed: {e}");
                    next_pull = Instant::now() + Duration::from_secs(2);
                }
            }
        }
        let renew_after = shared.config().renew_after_secs;
        let issued_at = shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .identity
            .issued_at;
        if renew_after > 0 && unix_now().saturating_sub(issued_at) >= renew_after {
            match renew(&shared).await {
                Ok(()) => eprintln!("gatehouse connector: certificate renewed"),
                Err(e) => eprintln!("gatehouse connector: renewal failed (will retry): {e}"),
            }
        }
        monoio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn pull_config(shared: &Shared) -> Result<ConnectorConfig, ConnectorError> {
    let (address, name) = shared.service();
    let tls = shared
        .control_tls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let response = call(&address, &name, tls, "GET", "/v1/config", b"").await?;
    parse_answer(&response)
}

/// Gets a new certificate for a new key; tunnels made with the old one drain and are
/// replaced, so no request is dropped.
async fn renew(shared: &Shared) -> Result<(), ConnectorError> {
    let (key_pem, csr) = gatehouse_core::ca::generate_key_and_csr("gatehouse-connector")
        .map_err(|e| ConnectorError::State(e.to_string()))?;
    let body = serde_json::to_vec(&RenewRequest { csr })
        .map_err(|e| ConnectorError::State(e.to_string()))?;
    let (address, name) = shared.service();
    let tls_config = shared
        .control_tls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let response = call(&address, &name, tls_config, "POST", "/v1/renew", &body).await?;
    let answer: CertificateResponse = parse_answer(&response)?;
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    let tunnel = tls::service_config(&state.ca_pem, &answer.certificate, &key_pem, TUNNEL_ALPN)?;
    let control = tls::service_config(&state.ca_pem, &answer.certificate, &key_pem, b"http/1.1")?;
    state.store_renewal(key_pem, answer.certificate, unix_now())?;
    *shared.tunnel_tls.lock().unwrap_or_else(|e| e.into_inner()) = tunnel;
    *shared.control_tls.lock().unwrap_or_else(|e| e.into_inner()) = control;
    // Old tunnels stop counting: new ones are dialled with the new certificate.
    shared
        .coverage
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    shared.cert_generation.fetch_add(1, Ordering::Release);
    Ok(())
}

/// One connector thread: dials tunnels while service workers lack their share, serves the
/// streams of the tunnels it holds.
fn tunnel_thread(shared: Arc<Shared>) {
    let Ok(mut runtime) = gatehouse_http1::rt::runtime() else {
        return;
    };
    runtime.block_on(async move {
        let ctx = Rc::new(ThreadCtx::new(shared.clone()));
        // TLS buffers a burst left idle go back to the allocator within seconds.
        monoio::spawn(async {
            loop {
                monoio::time::sleep(Duration::from_millis(200)).await;
                gatehouse_http1::rt::trim_idle_buffers();
            }
        });
        let mut backoff = BACKOFF_FIRST;
        while !shared.stop.load(Ordering::Acquire) {
            let Some(address) = shared.instance_to_dial() else {
                monoio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let dialled = dial(&shared, &address).await;
            let kept = shared.with_coverage(&address, |coverage| {
                coverage.dialing = coverage.dialing.saturating_sub(1);
                match &dialled {
                    Ok((_, hello, _)) => Some(coverage.claim(hello.worker, hello.workers)),
                    Err(_) => None,
                }
            });
            match (dialled, kept) {
                (Ok((mux, hello, generation)), Some(true)) => {
                    monoio::spawn(gatehouse_http1::rt::contained(
                        serve_tunnel(mux, hello, generation, address, ctx.clone()),
                        |message| {
                            eprintln!("gatehouse connector: a tunnel task panicked: {message}")
                        },
                    ));
                    backoff = BACKOFF_FIRST;
                }
                (Ok((mux, _, _)), _) => {
                    // That worker has its share already: try again for another one.
                    mux.handle().close();
                    monoio::time::sleep(Duration::from_millis(20)).await;
                }
                (Err(e), _) => {
                    eprintln!("gatehouse connector: tunnel dial failed: {e}");
                    monoio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                }
            }
        }
        // Stopping: the tunnels drain (GOAWAY, then close when their streams are done or
        // the deadline passed); the runtime must live until they have.
        let give_up = Instant::now() + DRAIN_DEADLINE + Duration::from_secs(1);
        while ctx.live_tunnels.get() > 0 && Instant::now() < give_up {
            monoio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// Full jitter: a random wait between 0 and `cap` (spreads a reconnect storm).
fn jitter(cap: Duration) -> Duration {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    cap.mul_f64(f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX))
}

async fn dial(shared: &Shared, address: &str) -> Result<(Mux, Hello, u64), ConnectorError> {
    // Every instance presents a certificate for the same name: the one registered with.
    let (_, name) = shared.service();
    let generation = shared.cert_generation.load(Ordering::Acquire);
    let config = shared
        .tunnel_tls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (connector_id, group) = {
        let state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        (
            state.identity.connector_id.clone(),
            state.identity.group.clone(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let tcp = connect(address, deadline).await?;
    let server_name = rustls::pki_types::ServerName::try_from(name)
        .map_err(|e| ConnectorError::Usage(e.to_string()))?;
    let tls = TlsStream::connect(tcp, config, server_name, Some(deadline))
        .await
        .map_err(|e| ConnectorError::Unreachable(format!("{address}: {e}")))?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        worker: 0,
        workers: 0,
        connector_id,
        group,
    };
    let conn = Connection::new(
        Role::Connector,
        TunnelConfig::default(),
        &hello,
        Instant::now(),
    );
    let (reader, writer) = tls.into_split();
    let mux = Mux::new(gatehouse_tunnel::rt::spawn(reader, writer, conn));
    match monoio::time::timeout_at(deadline.into(), mux.next_control()).await {
        Ok(Some(Event::Hello(hello))) => Ok((mux, hello, generation)),
        _ => {
            mux.handle().close();
            Err(ConnectorError::Unreachable(format!(
                "{address}: the service sent no HELLO (revoked or unknown connector?)"
            )))
        }
    }
}

/// Serves the streams of one tunnel until it ends; drains it when the certificate it was
/// made with was renewed.
async fn serve_tunnel(
    mux: Mux,
    hello: Hello,
    generation: u64,
    address: String,
    ctx: Rc<ThreadCtx>,
) {
    ctx.live_tunnels.set(ctx.live_tunnels.get() + 1);
    let started = Instant::now();
    let shared = ctx.shared.clone();
    let control = {
        let mux = mux.clone();
        let shared = shared.clone();
        monoio::spawn(async move {
            while let Some(event) = mux.next_control().await {
                if let Event::Config(frame) = event {
                    match serde_json::from_slice::<ConnectorConfig>(&frame.document) {
                        Ok(config) => shared.offer_config(config),
                        Err(e) => eprintln!("gatehouse connector: unreadable CONFIG: {e}"),
                    }
                }
            }
        })
    };
    let watcher = {
        let mux = mux.clone();
        let shared = shared.clone();
        let address = address.clone();
        monoio::spawn(async move {
            let mut draining = false;
            let mut stopping_since: Option<Instant> = None;
            while !mux.is_closed() {
                monoio::time::sleep(Duration::from_millis(200)).await;
                let renewed = shared.cert_generation.load(Ordering::Acquire) != generation;
                let stopping = shared.stop.load(Ordering::Acquire);
                // A tunnel made with a renewed certificate drains only once its service
                // worker holds new tunnels, so the worker is never left without one.
                let replaced = renewed
                    && shared.with_coverage(&address, |c| c.covered(hello.worker, hello.workers));
                if (replaced || stopping) && !draining {
                    draining = true;
                    mux.go_away();
                }
                // SIGTERM: requests in flight get `DRAIN_DEADLINE` to finish.
                let since = stopping.then(|| *stopping_since.get_or_insert_with(Instant::now));
                let overdue = since.is_some_and(|t| t.elapsed() >= DRAIN_DEADLINE);
                // Streams the service opened before it read our GOAWAY may still be on their
                // way: an idle tunnel closes only once the service has answered the PING
                // that followed the GOAWAY, so they are refused (and retried elsewhere)
                // instead of lost with the connection.
                let settled = draining && mux.goaway_acknowledged();
                if (settled && mux.open_streams() == 0) || overdue {
                    mux.handle().close();
                }
            }
        })
    };
    // Identities are resolved here, in the order the OPEN frames arrived, before the
    // streams' tasks run in whatever order.
    let mut identities = proxy::TunnelIdentities::default();
    let handlers = crate::handlers::Handlers::new(ctx.clone());
    while let Some((open, stream)) = mux.accept().await {
        match identities.resolve(&open) {
            Ok(identity) => handlers.submit(crate::handlers::Job {
                open,
                stream,
                identity,
            }),
            // Never forward a pre-authenticated request without its identity.
            Err(()) => stream.reset(gatehouse_tunnel::Code::REFUSED_STREAM),
        }
    }
    // No new streams (the service said GOAWAY, or the tunnel ended): those in flight finish
    // first, then the tunnel closes.
    while !mux.is_closed() {
        if mux.open_streams() == 0 {
            mux.handle().close();
        }
        monoio::time::sleep(Duration::from_millis(50)).await;
    }
    ctx.live_tunnels
        .set(ctx.live_tunnels.get().saturating_sub(1));
    drop(control);
    drop(watcher);
    if shared.cert_generation.load(Ordering::Acquire) == generation {
        shared.with_coverage(&address, |c| c.release(hello.worker, hello.workers));
    }
    if started.elapsed() < STABLE {
        // A tunnel that dies at once should not be redialled in a tight loop.
        monoio::time::sleep(jitter(BACKOFF_FIRST)).await;
    }
}
