//! The Gatehouse service: the public edge.
//!
//! Thread-per-core: every worker thread runs its own monoio runtime with its own
//! `SO_REUSEPORT` listeners for the HTTPS front and for tunnels, its own tunnels from every
//! connector, and serves each client request on a tunnel it holds itself, so a request never
//! hops between threads. What workers share is read-mostly: the configuration snapshot
//! (replaced on reload, picked up through a generation counter) and the TLS configurations.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
mod control;
pub mod devidp;
mod enrol;
#[cfg(feature = "etcd")]
pub mod etcd;
mod events;
pub mod form;
mod front;
mod ops;
pub mod pages;
pub(crate) mod parked;
mod revoked;
mod routes;
mod shield;
pub mod state;
pub mod tls;
mod worker;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_core::ConnectorCa;

pub use config::{ConfigError, ServiceConfig};
pub use state::{ConnectorRecord, ControlState, Role, StateDir, TokenRecord, TokenRefusal};

/// Why the service could not start or go on.
#[derive(Debug)]
pub enum ServiceError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// A file could not be read or written.
    Io(PathBuf, io::Error),
    /// A listener could not be bound.
    Bind(std::net::SocketAddr, io::Error),
    /// The connector CA failed.
    Ca(String),
    /// The shared state store (etcd) failed.
    Store(String),
    /// A TLS configuration could not be built.
    Tls(String),
    /// A worker or the admin thread ended while the service ran (a panic outside any
    /// connection's task): the service stops rather than run on without it.
    ThreadDied(String),
}

impl ServiceError {
    pub(crate) fn io(path: &Path, e: io::Error) -> Self {
        ServiceError::Io(path.to_owned(), e)
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::Config(e) => write!(f, "{e}"),
            ServiceError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            ServiceError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServiceError::Ca(e) => write!(f, "connector CA: {e}"),
            ServiceError::Store(e) => write!(f, "shared state: {e}"),
            ServiceError::Tls(e) => write!(f, "TLS: {e}"),
            ServiceError::ThreadDied(name) => {
                write!(f, "thread {name} ended unexpectedly; stopping")
            }
        }
    }
}

impl std::error::Error for ServiceError {}

impl From<ConfigError> for ServiceError {
    fn from(e: ConfigError) -> Self {
        ServiceError::Config(e)
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What every worker reads: replaced as a whole on reload.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) config: ServiceConfig,
    /// Revision of the app document in the store the apps come from (0: the file's).
    apps_revision: u64,
    reloads: u32,
    /// Connectors that may hold tunnels (registered and not revoked).
    pub(crate) allowed: HashSet<String>,
    /// Tunnel addresses of the live instances, for connectors (empty: a single instance).
    pub(crate) instances: Vec<String>,
    /// Seals and opens session and login cookies; replaced when the keys are rotated.
    pub(crate) keyring: CookieKeys,
}

impl Snapshot {
    /// What CONFIG frames carry: the app document's revision (high half) and this instance's
    /// reload count (low half). Instances that share a store agree on the high half, so a
    /// connector that hears from several never goes back to older apps.
    pub(crate) fn version(&self) -> u64 {
        self.apps_revision << 32 | u64::from(self.reloads)
    }

    /// `config` (with apps at `apps_revision`) after `reloads` reloads, with the connector
    /// registry and the instance list as `control` has them now.
    fn read(
        config: ServiceConfig,
        apps_revision: u64,
        reloads: u32,
        control: &dyn ControlState,
        keyring: CookieKeys,
    ) -> Snapshot {
        Snapshot {
            allowed: allowed_connectors(control),
            instances: control.instances(),
            apps_revision,
            reloads,
            config,
            keyring,
        }
    }
}

/// The configuration file at `path` with, when the store holds an app document
/// (`gatehouse service apps publish`), the apps of that document; and the document's
/// revision (0: apps from the file).
pub fn load_config(
    path: &Path,
    control: &dyn ControlState,
) -> Result<(ServiceConfig, u64), ServiceError> {
    let config = config::load(path)?;
    match control.shared_apps() {
        None => Ok((config, 0)),
        Some((text, revision)) => {
            let source = PathBuf::from(format!("store:apps@{revision}"));
            Ok((config::with_apps(&config, path, &source, &text)?, revision))
        }
    }
}

/// State shared by all workers (read-mostly; nothing here is touched per request).
pub(crate) struct Shared {
    pub(crate) config_path: PathBuf,
    pub(crate) state: StateDir,
    /// The CA, tokens and connector registry: `state`, or shared in etcd.
    pub(crate) control: Arc<dyn ControlState>,
    pub(crate) ca: ConnectorCa,
    pub(crate) front_tls: Arc<rustls::ServerConfig>,
    pub(crate) tunnel_tls: tls::TunnelTls,
    pub(crate) workers: u16,
    snapshot: Mutex<Arc<Snapshot>>,
    pub(crate) generation: AtomicU64,
    pub(crate) stop: AtomicBool,
    /// Signs identity assertions for back ends; its public key is at `/.gatehouse/jwks.json`.
    pub(crate) signer: gatehouse_core::Es256Signer,
    /// `iss` of identity assertions.
    pub(crate) assertion_issuer: String,
    /// The development provider, when `[dev_idp]` is configured.
    pub(crate) dev_idp: Option<devidp::DevIdp>,
    /// What the service trusts when it calls its own development provider through the front:
    /// the certificates the front serves (see [`dev_idp_roots`]).
    dev_idp_roots: PathBuf,
    /// What each worker publishes for the admin listener (one per worker, by id).
    pub(crate) ops: Arc<Vec<ops::Published>>,
    /// Where event lines are written.
    pub(crate) events: ops::EventsOut,
    /// Sessions ended by sign-out (the file `revoked-sessions` in the state directory).
    pub(crate) revoked: revoked::Revocations,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The current snapshot (workers call this only when the generation moved).
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The settings of provider `name` (`dev` is the development provider).
    pub(crate) fn provider(&self, config: &ServiceConfig, name: &str) -> Option<config::Provider> {
        if name == config::DEV_PROVIDER {
            let idp = self.dev_idp.as_ref()?;
            return Some(config::Provider {
                name: name.to_owned(),
                issuer: idp.issuer().to_owned(),
                client_id: idp.client_id().to_owned(),
                client_secret: idp.client_secret().to_owned(),
                client_auth: config::ClientAuth::Basic,
                ca_file: Some(self.dev_idp_roots.clone()),
                scopes: ["openid", "profile", "email", "groups"]
                    .map(String::from)
                    .to_vec(),
                groups_claim: "groups".into(),
                mfa_amr: vec!["mfa".into(), "otp".into()],
                mfa_acr: Vec::new(),
                insecure_http_for_tests: false,
            });
        }
        config.providers.iter().find(|p| p.name == name).cloned()
    }

    /// Re-reads the configuration file (and the store's app document) and the connector
    /// registry. A bad file keeps the old configuration (and says why).
    fn reload(&self) -> Result<(), ServiceError> {
        let old = self.snapshot();
        let keyring = self.keyring_or(&old);
        let reloads = old.reloads.wrapping_add(1);
        // With a bad file the registry may still have changed (a revocation): apply that.
        let (config, revision, outcome) = match load_config(&self.config_path, &*self.control) {
            Ok((config, revision)) => (config, revision, Ok(())),
            Err(e) => (old.config.clone(), old.apps_revision, Err(e)),
        };
        self.publish(Snapshot::read(
            config,
            revision,
            reloads,
            &*self.control,
            keyring,
        ));
        outcome
    }

    /// Takes up what changed in the control state: the registry, the instance list, the
    /// cookie keys and (when the store holds them) the apps.
    fn refresh(&self) {
        let old = self.snapshot();
        let revision = self
            .control
            .shared_apps()
            .map_or(0, |(_, revision)| revision);
        if revision != old.apps_revision {
            match self.reload() {
                Ok(()) => eprintln!("gatehouse service: apps of revision {revision} taken up"),
                Err(e) => eprintln!(
                    "gatehouse service: apps of revision {revision} refused, keeping the old \
                     ones: {e}"
                ),
            }
            return;
        }
        let keyring = self.keyring_or(&old);
        let reloads = old.reloads.wrapping_add(1);
        self.publish(Snapshot::read(
            old.config.clone(),
            old.apps_revision,
            reloads,
            &*self.control,
            keyring,
        ));
    }

    /// The cookie keys as the control state has them now, or (when they cannot be read)
    /// those of `old`.
    fn keyring_or(&self, old: &Snapshot) -> CookieKeys {
        let read = self
            .control
            .cookie_keys()
            .and_then(|text| CookieKeys::from_text(&text));
        match read {
            Ok(keys) if keys.digest == old.keyring.digest => old.keyring.clone(),
            Ok(keys) => {
                eprintln!(
                    "gatehouse service: cookie keys {:?} taken up, key {} seals",
                    keys.ring.key_ids().collect::<Vec<_>>(),
                    keys.ring.current_key_id()
                );
                keys
            }
            Err(e) => {
                eprintln!("gatehouse service: cookie keys unreadable, keeping the old ones: {e}");
                old.keyring.clone()
            }
        }
    }

    /// Re-reads the connector registry (after a registration) and tells the workers.
    pub(crate) fn registry_changed(&self) {
        let old = self.snapshot();
        self.publish(Snapshot::read(
            old.config.clone(),
            old.apps_revision,
            old.reloads,
            &*self.control,
            old.keyring.clone(),
        ));
    }

    fn publish(&self, snapshot: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// The control state `config` names: the state directory, or (feature `etcd`) etcd.
pub fn open_control(config: &ServiceConfig) -> Result<Arc<dyn ControlState>, ServiceError> {
    match &config.state {
        config::StateBackend::Directory => Ok(Arc::new(StateDir::open(&config.state_dir)?)),
        #[cfg(feature = "etcd")]
        config::StateBackend::Etcd {
            endpoints,
            prefix,
            credentials,
            tls,
        } => {
            let read =
                |path: &Path| std::fs::read_to_string(path).map_err(|e| ServiceError::io(path, e));
            let tls = match tls {
                None => None,
                Some(tls) => Some(etcd::EtcdTlsPem {
                    ca: read(&tls.ca_file)?,
                    client: match &tls.client {
                        None => None,
                        Some((cert, key)) => Some((read(cert)?, read(key)?)),
                    },
                }),
            };
            let store = etcd::EtcdStore::connect(&etcd::EtcdSettings {
                endpoints: endpoints.clone(),
                prefix: prefix.clone(),
                credentials: credentials.clone(),
                tls,
            })
            .map_err(|e| ServiceError::Store(e.to_string()))?;
            Ok(Arc::new(etcd::EtcdState::new(store)))
        }
        #[cfg(not(feature = "etcd"))]
        config::StateBackend::Etcd { .. } => Err(ServiceError::Store(
            "this gatehouse was built without etcd support".into(),
        )),
    }
}

/// The cookie key ring of a snapshot, and a digest of the text it was read from (to tell
/// whether the keys changed without comparing secrets).
#[derive(Clone)]
pub(crate) struct CookieKeys {
    pub(crate) ring: Arc<gatehouse_core::Keyring>,
    digest: [u8; 32],
}

impl CookieKeys {
    fn from_text(text: &str) -> Result<CookieKeys, ServiceError> {
        let ring = gatehouse_core::cookie::keyfile::from_text(text)
            .map_err(|e| ServiceError::Ca(format!("cookie keys: {e}")))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        Ok(CookieKeys {
            ring: Arc::new(ring),
            digest: digest.as_ref().try_into().unwrap_or([0; 32]),
        })
    }
}

impl fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieKeys")
            .field("ids", &self.ring.key_ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn allowed_connectors(state: &dyn ControlState) -> HashSet<String> {
    state
        .connectors()
        .into_iter()
        .filter(|c| !c.revoked)
        .map(|c| c.id)
        .collect()
}

/// Runs the service with the configuration at `config_path` until SIGTERM or SIGINT.
/// SIGHUP reloads the configuration and the connector registry without dropping tunnels.
pub fn run(config_path: &Path) -> Result<(), ServiceError> {
    run_instance(config_path, &Instance::default())
}

/// Who this instance is among several (`gatehouse service run --instance-id --advertise`).
#[derive(Clone, Debug, Default)]
pub struct Instance {
    /// A stable id (default: the host name and the tunnel port).
    pub id: Option<String>,
    /// The tunnel address connectors dial, `host:port` (default: `public_name` and the tunnel
    /// port).
    pub advertise: Option<String>,
}

/// [`run`] as one of several instances sharing their state (`[state] backend = "etcd"`): the
/// instance announces itself, so connectors keep tunnels to it too.
pub fn run_instance(config_path: &Path, instance: &Instance) -> Result<(), ServiceError> {
    let config = config::load(config_path)?;
    let now = unix_now();
    let state = StateDir::open(&config.state_dir)?;
    let control = open_control(&config)?;
    let revoked_path = state.path().join("revoked-sessions");
    let ca = control
        .load_or_create_ca(now)?
        .with_validity_secs(config.certificate_validity.as_secs());
    if config.state != config::StateBackend::Directory {
        // The CA's certificate (public) next to this instance's files, where clients and
        // operators find it with the directory backend too; its key stays in etcd.
        let path = state.path().join("ca.pem");
        std::fs::write(&path, ca.cert_pem()).map_err(|e| ServiceError::io(&path, e))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "gatehouse".into());
        let port = config.listen_tunnel.port();
        let id = instance.id.clone().unwrap_or(format!("{host}-{port}"));
        let advertise = instance
            .advertise
            .clone()
            .unwrap_or(format!("{}:{port}", config.public_name));
        control.register_instance(&id, &advertise)?;
        eprintln!("gatehouse service: instance {id}, tunnels advertised at {advertise}");
    }
    let front_tls = front_tls_config(&config, &ca, now)?;
    let dev_idp_roots = dev_idp_roots(&config, &state)?;
    let (chain, key) = ca
        .issue_server_certificate(&[config.public_name.as_str(), "localhost"], now)
        .map_err(|e| ServiceError::Ca(e.to_string()))?;
    let chain = format!("{chain}{}", ca.cert_pem());
    let tunnel_tls = tls::TunnelTls::new(&chain, &key, &ca.cert_pem())?;
    let workers = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(usize::from(u16::MAX)) as u16;

    // SO_REUSEPORT would let a second copy of the service share the ports silently: probe
    // that the addresses are free first.
    // A process that just died may hold its listeners a moment longer (the kernel tears
    // its io_uring down asynchronously): a restart waits up to two seconds for them.
    for addr in [config.listen_https, config.listen_tunnel] {
        let mut tries = 0;
        loop {
            match std::net::TcpListener::bind(addr) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(ServiceError::Bind(addr, e)),
            }
        }
    }

    let (config, apps_revision) = match load_config(config_path, &*control) {
        Ok(loaded) => loaded,
        Err(e) => {
            // The store's apps do not fit this instance's file: start with the file's, say so.
            eprintln!("gatehouse service: the store's apps refused, serving the file's: {e}");
            (config, 0)
        }
    };
    let keyring = CookieKeys::from_text(&control.cookie_keys()?)?;
    let signer = control.assertion_signer()?;
    let origin = match config.listen_https.port() {
        443 => format!("https://{}", config.public_name),
        port => format!("https://{}:{port}", config.public_name),
    };
    let dev_settings = config.dev_idp.clone();
    let published: Arc<Vec<ops::Published>> =
        Arc::new((0..workers).map(|_| ops::Published::default()).collect());
    let events =
        ops::EventsOut::start(config.events_file.as_deref(), published.clone()).map_err(|e| {
            ServiceError::io(config.events_file.as_deref().unwrap_or(Path::new("-")), e)
        })?;
    let admin = match config.admin_listen {
        Some(addr) => {
            Some(std::net::TcpListener::bind(addr).map_err(|e| ServiceError::Bind(addr, e))?)
        }
        None => None,
    };
    let snapshot = Snapshot::read(config, apps_revision, 1, &*control, keyring);
    let mut dev_error = None;
    let shared = Arc::new_cyclic(|weak: &std::sync::Weak<Shared>| {
        let dev_idp = dev_settings.and_then(|settings| {
            let weak = weak.clone();
            let allowed = move |uri: &str| {
                weak.upgrade()
                    .is_some_and(|shared| devidp_redirect_allowed(&shared.snapshot(), uri))
            };
            match devidp::DevIdp::new(
                devidp::DevIdpConfig {
                    issuer: format!("{origin}/.gatehouse/idp"),
                    client_id: "gatehouse".into(),
                    client_secret: gatehouse_core::pkce::generate_state().unwrap_or_default(),
                    users: settings.users,
                    device_code_lifetime: settings.device_code_lifetime.as_secs(),
                },
                Box::new(allowed),
            ) {
                Ok(idp) => Some(idp),
                Err(e) => {
                    dev_error = Some(e);
                    None
                }
            }
        });
        Shared {
            config_path: config_path.to_owned(),
            state,
            control,
            ca,
            front_tls,
            tunnel_tls,
            workers,
            snapshot: Mutex::new(Arc::new(snapshot)),
            generation: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            signer,
            assertion_issuer: origin.clone(),
            dev_idp,
            dev_idp_roots,
            ops: published,
            events,
            revoked: revoked::Revocations::load(&revoked_path, unix_now()),
        }
    });
    {
        // Sessions signed out of through another instance are refused here too.
        let weak = Arc::downgrade(&shared);
        shared
            .control
            .follow_signed_out(Box::new(move |id, expires| {
                if let Some(shared) = weak.upgrade() {
                    if let Err(e) = shared.revoked.revoke(id, expires, unix_now()) {
                        eprintln!("gatehouse service: cannot write the revoked-session list: {e}");
                    }
                }
            }));
    }
    if let Some(e) = dev_error {
        return Err(ServiceError::Ca(format!("development provider: {e}")));
    }
    if let Some(idp) = &shared.dev_idp {
        eprintln!(
            "gatehouse service: WARNING: the built-in development identity provider is on at {} \
             -- for development only, never for real users",
            idp.issuer()
        );
    }
    shared.state.write_pid()?;

    let hup = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, term.clone());

    let mut threads = Vec::new();
    if let Some(listener) = admin {
        let shared = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("gatehouse-admin".into())
                .spawn(move || ops::run_admin(listener, shared))
                .map_err(|e| ServiceError::io(Path::new("thread"), e))?,
        );
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for id in 0..workers {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("gatehouse-worker-{id}"))
                .spawn(move || worker::run(id, shared, ready))
                .map_err(|e| ServiceError::io(Path::new("thread"), e))?,
        );
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.stop.store(true, Ordering::Release);
                return Err(e);
            }
            Err(_) => break,
        }
    }
    let snapshot = shared.snapshot();
    eprintln!(
        "gatehouse service: {} workers, https on {}, tunnels on {}, {} apps",
        workers,
        snapshot.config.listen_https,
        snapshot.config.listen_tunnel,
        snapshot.config.apps.len()
    );
    drop(snapshot);

    // The registry changes under us (registrations by workers, revocations by the CLI, which
    // also sends SIGHUP, or by another instance through etcd): look every 100 ms.
    let mut last_registry = shared.control.registry_stamp();
    while !term.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(name) = ended_thread(&threads) {
            // Its connections and tunnels are gone and its share of the listeners' accepts
            // would go unanswered: exit non-zero so a supervisor restarts the whole service.
            eprintln!("gatehouse service: thread {name} ended unexpectedly; stopping");
            shared.stop.store(true, Ordering::Release);
            for thread in threads {
                if thread.is_finished() {
                    let _ = thread.join();
                }
            }
            shared.events.flush(Duration::from_secs(5));
            return Err(ServiceError::ThreadDied(name));
        }
        if hup.swap(false, Ordering::AcqRel) {
            match shared.reload() {
                Ok(()) => eprintln!("gatehouse service: configuration reloaded"),
                Err(e) => eprintln!(
                    "gatehouse service: reload refused, keeping the old configuration: {e}"
                ),
            }
            last_registry = shared.control.registry_stamp();
        } else {
            let stamp = shared.control.registry_stamp();
            if stamp != last_registry {
                last_registry = stamp;
                shared.refresh();
            }
        }
    }
    shared.stop.store(true, Ordering::Release);
    for thread in threads {
        let _ = thread.join();
    }
    // The workers' last events are handed over; write them before the process ends.
    shared.events.flush(Duration::from_secs(5));
    Ok(())
}

/// The name of the first of `threads` that has ended. Before shutdown none should have: each
/// runs until the stop flag is set.
fn ended_thread(threads: &[std::thread::JoinHandle<()>]) -> Option<String> {
    threads
        .iter()
        .find(|t| t.is_finished())
        .map(|t| t.thread().name().unwrap_or("unnamed").to_owned())
}

/// Whether `uri` is the callback of a published app that signs in with the development
/// provider (the only places it may send a code to).
fn devidp_redirect_allowed(snapshot: &Snapshot, uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("https://") else {
        return false;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = routes::host_without_port(authority.as_bytes());
    snapshot.config.apps.iter().any(|app| {
        app.preauth
            .as_ref()
            .is_some_and(|p| p.provider == config::DEV_PROVIDER)
            && std::str::from_utf8(host).is_ok_and(|h| app.external.host.matches(h).is_some())
            && path == format!("{}{}", app.external.path_prefix, auth::CALLBACK)
    })
}

/// The roots the service trusts when it calls its own development provider, which it reaches
/// through its own front: the CA that issues the development certificate, or, with configured
/// `[[certificates]]`, every certificate of their chains as well. A self-signed certificate is
/// then its own root, and a chain with an intermediate is trusted from that intermediate. The
/// front's certificates are read once at start, so the file is written once at start too.
fn dev_idp_roots(config: &ServiceConfig, state: &StateDir) -> Result<PathBuf, ServiceError> {
    let ca = state.path().join("ca.pem");
    if config.certificates.is_empty() || config.dev_idp.is_none() {
        return Ok(ca);
    }
    let mut pem = std::fs::read_to_string(&ca).map_err(|e| ServiceError::io(&ca, e))?;
    for entry in &config.certificates {
        let chain =
            std::fs::read_to_string(&entry.cert).map_err(|e| ServiceError::io(&entry.cert, e))?;
        pem.push_str(&chain);
        if !chain.ends_with('\n') {
            pem.push('\n');
        }
    }
    let path = state.path().join("dev-idp-roots.pem");
    std::fs::write(&path, pem).map_err(|e| ServiceError::io(&path, e))?;
    Ok(path)
}

/// The front's certificates: the configured ones, or (none configured) one issued by the
/// service's own CA for every published host, for development and tests.
fn front_tls_config(
    config: &ServiceConfig,
    ca: &ConnectorCa,
    now: u64,
) -> Result<Arc<rustls::ServerConfig>, ServiceError> {
    let mut resolver = tls::SniResolver::new();
    if config.certificates.is_empty() {
        let mut names: Vec<String> = config
            .apps
            .iter()
            .map(|app| app.external.host.to_string())
            .collect();
        names.push(config.public_name.clone());
        names.push("localhost".into());
        names.sort();
        names.dedup();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (cert, key) = ca
            .issue_server_certificate(&refs, now)
            .map_err(|e| ServiceError::Ca(e.to_string()))?;
        // The leaf alone: a client that trusts the CA has it already, and one that does not
        // cannot use it (RFC 8446 4.4.2 lets the trust anchor be left out). Sending it cost
        // every handshake ~400 bytes, and an OpenSSL client a quarter of its handshake CPU.
        resolver.add(&names, &cert, &key)?;
    }
    for entry in &config.certificates {
        let cert =
            std::fs::read_to_string(&entry.cert).map_err(|e| ServiceError::io(&entry.cert, e))?;
        let key = gatehouse_core::secret_file::read(&entry.key)
            .map_err(|e| ServiceError::io(&entry.key, e))?;
        resolver.add(&entry.hosts, &cert, &String::from_utf8_lossy(&key))?;
    }
    resolver.into_config()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that ends before shutdown (here by a panic outside any contained task) is
    /// named, so the service can stop with an error instead of running on without it.
    #[test]
    fn a_thread_that_ended_is_found_by_name() {
        let spawn = |name: &str, work: fn()| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(work)
                .unwrap()
        };
        let threads = vec![
            spawn("gatehouse-worker-0", || {
                std::thread::sleep(Duration::from_secs(2))
            }),
            spawn("gatehouse-worker-1", || panic!("a bug outside any task")),
        ];
        let until = std::time::Instant::now() + Duration::from_secs(1);
        let mut ended = None;
        while ended.is_none() && std::time::Instant::now() < until {
            ended = ended_thread(&threads);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(ended.as_deref(), Some("gatehouse-worker-1"));
    }
}
