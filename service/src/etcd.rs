//! The etcd client of scale-out (feature `etcd`): several service instances keep their shared
//! control state in etcd. The `etcd-client` crate (gRPC over tokio) runs on a thread of its
//! own with a single-threaded tokio runtime, never on a worker: callers (the control thread,
//! the command line) make plain blocking calls with a deadline, and watches deliver their
//! changes on a standard channel.
//!
//! What this layer offers is what shared control state needs and nothing more: values by key,
//! "create if absent" (one instance wins and every other one reads the winner's value),
//! "take" (a single-use value consumed by exactly one caller), keys kept alive under a lease
//! (an instance's registration, gone when the instance dies), and prefix watches that survive
//! an etcd restart.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

/// How long one call may take before the caller is told etcd is unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a broken watch or keep-alive is set up again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// etcd did not answer in time (or the connection is down).
    Unavailable,
    /// etcd answered with an error.
    Etcd(String),
    /// The store's thread has ended.
    Closed,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable => write!(f, "etcd did not answer within {CALL_TIMEOUT:?}"),
            StoreError::Etcd(e) => write!(f, "etcd: {e}"),
            StoreError::Closed => f.write_str("the etcd client has stopped"),
        }
    }
}

impl std::error::Error for StoreError {}

/// What [`EtcdStore::create`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Our value was stored.
    New,
    /// The key existed already: its value (another instance won).
    Existing(Vec<u8>),
}

/// One change under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key was set to the value.
    Put(String, Vec<u8>),
    /// The key was deleted (or its lease expired).
    Delete(String),
    /// The watch was broken and set up again: changes may have been missed, so whoever
    /// watches reads the prefix anew.
    Resync,
}

type Job = Box<dyn FnOnce(Client) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A connection to an etcd cluster, with keys under one prefix (clones share it).
#[derive(Clone)]
pub struct EtcdStore {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    prefix: String,
}

/// Connection settings.
#[derive(Clone, Default)]
pub struct EtcdSettings {
    /// `http://host:port` of each member.
    pub endpoints: Vec<String>,
    /// Every key starts with this (e.g. `/gatehouse/prod`).
    pub prefix: String,
    /// User name and password, when etcd has authentication on.
    pub credentials: Option<(String, String)>,
    /// TLS to the members (`https://` endpoints).
    pub tls: Option<EtcdTlsPem>,
}

/// TLS settings, PEM text: the roots of the members' certificates, and a client certificate
/// chain and key when etcd checks them.
#[derive(Clone, Default)]
pub struct EtcdTlsPem {
    /// CA certificates.
    pub ca: String,
    /// Certificate chain and private key.
    pub client: Option<(String, String)>,
}

// Both by hand: a password or a private key must never reach a log through `{:?}`.
impl std::fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EtcdTlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTlsPem")
            .field("client_certificate", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Starts the client thread and connects; fails when no member answers in time.
    pub fn connect(settings: &EtcdSettings) -> Result<EtcdStore, StoreError> {
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready, connected) = mpsc::sync_channel::<Result<(), StoreError>>(1);
        let endpoints = settings.endpoints.clone();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let Some((user, password)) = &settings.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &settings.tls {
            let mut config = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&tls.ca));
            if let Some((cert, key)) = &tls.client {
                config = config.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(config);
        }
        std::thread::Builder::new()
            .name("gatehouse-etcd".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(StoreError::Etcd(e.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let client = match Client::connect(&endpoints, Some(options)).await {
                        Ok(client) => client,
                        Err(e) => {
                            let _ = ready.send(Err(StoreError::Etcd(e.to_string())));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    // Each job runs as its own task, so watches and keep-alives go on while
                    // later calls are served.
                    while let Some(job) = queue.recv().await {
                        tokio::spawn(job(client.clone()));
                    }
                });
            })
            .map_err(|e| StoreError::Etcd(e.to_string()))?;
        match connected.recv_timeout(CALL_TIMEOUT * 2) {
            Ok(Ok(())) => Ok(EtcdStore {
                jobs,
                prefix: settings.prefix.trim_end_matches('/').to_owned(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Unavailable),
        }
    }

    /// The full key of `name` under the prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// Runs `call` on the client thread and waits for its answer.
    fn call<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |client| {
            Box::pin(async move {
                let result = tokio::time::timeout(CALL_TIMEOUT, call(client)).await;
                let _ = reply.send(match result {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(e)) => Err(StoreError::Etcd(e.to_string())),
                    Err(_) => Err(StoreError::Unavailable),
                });
            })
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        match answer.recv_timeout(CALL_TIMEOUT + Duration::from_secs(1)) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(StoreError::Unavailable),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(StoreError::Closed),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(name);
        self.call(move |mut client| async move {
            let answer = client.get(key, None).await?;
            Ok(answer.kvs().first().map(|kv| kv.value().to_vec()))
        })
    }

    /// Sets `name` to `value`.
    pub fn put(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let (key, value) = (self.key(name), value.to_vec());
        self.call(move |mut client| async move {
            client.put(key, value, None).await?;
            Ok(())
        })
    }

    /// Deletes `name`; returns whether it existed.
    pub fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let key = self.key(name);
        self.call(
            move |mut client| async move { Ok(client.delete(key, None).await?.deleted() > 0) },
        )
    }

    /// Sets `name` to `value` for `ttl` (under a lease nobody renews), in the background:
    /// returns at once, and a failure is only logged.
    pub fn put_expiring(&self, name: &str, value: &[u8], ttl: Duration) {
        let (key, value) = (self.key(name), value.to_vec());
        let ttl_secs = ttl.as_secs().max(1) as i64;
        let job: Job = Box::new(move |mut client| {
            Box::pin(async move {
                let put = tokio::time::timeout(
                    CALL_TIMEOUT,
                    grant_and_put(&mut client, &key, &value, ttl_secs),
                )
                .await;
                if !matches!(put, Ok(Ok(_))) {
                    eprintln!("gatehouse service: etcd: could not store {key}");
                }
            })
        });
        let _ = self.jobs.send(job);
    }

    /// Stores `value` under `name` unless the key exists, in one transaction: of several
    /// instances creating the same key at once, exactly one stores its value and the others
    /// get that value back.
    pub fn create(&self, name: &str, value: &[u8]) -> Result<Created, StoreError> {
        self.create_leased(name, value, None)
    }

    /// [`EtcdStore::create`] of a key that etcd deletes after `ttl` (a used-once mark that
    /// must outlive what it marks, and no longer).
    pub fn create_expiring(
        &self,
        name: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<Created, StoreError> {
        self.create_leased(name, value, Some(ttl.as_secs().max(1) as i64))
    }

    fn create_leased(
        &self,
        name: &str,
        value: &[u8],
        ttl_secs: Option<i64>,
    ) -> Result<Created, StoreError> {
        let (key, value) = (self.key(name), value.to_vec());
        self.call(move |mut client| async move {
            let lease = match ttl_secs {
                Some(ttl) => Some(client.lease_grant(ttl, None).await?.id()),
                None => None,
            };
            let options = lease.map(|lease| PutOptions::new().with_lease(lease));
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), value, options)])
                .or_else([TxnOp::get(key, None)]);
            let answer = client.txn(txn).await?;
            if answer.succeeded() {
                return Ok(Created::New);
            }
            if let Some(lease) = lease {
                // Holds no key: give it back rather than leave it to expire.
                let _ = client.lease_revoke(lease).await;
            }
            let existing = answer.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            });
            Ok(Created::Existing(existing.unwrap_or_default()))
        })
    }

    /// The value of `name` and the revision that last changed it, if set.
    pub fn get_versioned(&self, name: &str) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
        let key = self.key(name);
        self.call(move |mut client| async move {
            let answer = client.get(key, None).await?;
            Ok(answer
                .kvs()
                .first()
                .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
        })
    }

    /// Sets `name` to `value` only if it was last changed at `revision` (0: if it does not
    /// exist), in one transaction; the new revision, or `None` when another writer came first
    /// (read again and retry).
    pub fn put_if_unchanged(
        &self,
        name: &str,
        value: &[u8],
        revision: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (key, value) = (self.key(name), value.to_vec());
        self.call(move |mut client| async move {
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then([TxnOp::put(key, value, None)]);
            let answer = client.txn(txn).await?;
            Ok(answer
                .succeeded()
                .then(|| answer.header().map_or(0, |h| h.revision())))
        })
    }

    /// Reads and deletes `name` in one transaction: of several callers, exactly one gets the
    /// value (a single-use token is consumed once).
    pub fn take(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(name);
        self.call(move |mut client| async move {
            loop {
                let current = client.get(key.clone(), None).await?;
                let Some(kv) = current.kvs().first() else {
                    return Ok(None);
                };
                let (value, revision) = (kv.value().to_vec(), kv.mod_revision());
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then([TxnOp::delete(key.clone(), None)]);
                if client.txn(txn).await?.succeeded() {
                    return Ok(Some(value));
                }
                // Changed in between (or taken): look again.
            }
        })
    }

    /// Every key under `name` (a prefix) with its value, the prefix's own part of the key
    /// stripped.
    pub fn list(&self, name: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = self.key(name);
        self.call(move |mut client| async move {
            let answer = client
                .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await?;
            Ok(answer
                .kvs()
                .iter()
                .map(|kv| {
                    let key = String::from_utf8_lossy(kv.key());
                    (
                        key.strip_prefix(&prefix).unwrap_or(&key).to_owned(),
                        kv.value().to_vec(),
                    )
                })
                .collect())
        })
    }

    /// Keeps `name` set to `value` under a lease of `ttl`, renewed while the returned
    /// [`KeptKey`] lives (and set again after etcd lost it, e.g. across a restart). When the
    /// process dies, renewals stop and etcd deletes the key after `ttl`.
    pub fn keep(&self, name: &str, value: &[u8], ttl: Duration) -> Result<KeptKey, StoreError> {
        let (key, value) = (self.key(name), value.to_vec());
        let ttl_secs = ttl.as_secs().max(1) as i64;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<bool>();
        let first = {
            let (key, value) = (key.clone(), value.clone());
            self.call(move |mut client| async move {
                grant_and_put(&mut client, &key, &value, ttl_secs).await
            })?
        };
        let job: Job = Box::new(move |mut client| {
            Box::pin(async move {
                let mut lease = first;
                loop {
                    let renewals = renew(&mut client, lease, ttl_secs);
                    tokio::select! {
                        revoke = &mut stopped => {
                            if revoke.unwrap_or(true) {
                                let _ = client.lease_revoke(lease).await;
                            }
                            return;
                        }
                        () = renewals => {}
                    }
                    // The lease is gone (etcd restarted, or renewals failed past the TTL):
                    // set the key again under a new one.
                    tokio::time::sleep(RETRY_PAUSE).await;
                    if let Ok(again) = grant_and_put(&mut client, &key, &value, ttl_secs).await {
                        lease = again;
                    }
                }
            })
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        Ok(KeptKey { stop: Some(stop) })
    }

    /// Watches every key under `name` (a prefix): changes arrive on the returned channel, and
    /// a [`Change::Resync`] after every broken watch. Ends when the receiver is dropped.
    pub fn watch(&self, name: &str) -> Result<mpsc::Receiver<Change>, StoreError> {
        let prefix = self.key(name);
        let (changes, receiver) = mpsc::channel();
        let job: Job = Box::new(move |mut client| {
            Box::pin(async move {
                let mut first = true;
                loop {
                    if !first && changes.send(Change::Resync).is_err() {
                        return;
                    }
                    first = false;
                    let options = WatchOptions::new().with_prefix();
                    let Ok(mut stream) = client.watch(prefix.clone(), Some(options)).await else {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    };
                    while let Ok(Some(answer)) = stream.message().await {
                        for event in answer.events() {
                            let Some(kv) = event.kv() else { continue };
                            let key = String::from_utf8_lossy(kv.key());
                            let key = key.strip_prefix(&prefix).unwrap_or(&key).to_owned();
                            let change = match event.event_type() {
                                EventType::Put => Change::Put(key, kv.value().to_vec()),
                                EventType::Delete => Change::Delete(key),
                            };
                            if changes.send(change).is_err() {
                                return;
                            }
                        }
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            })
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        Ok(receiver)
    }
}

/// A new lease of `ttl_secs` and `key` set to `value` under it.
async fn grant_and_put(
    client: &mut Client,
    key: &str,
    value: &[u8],
    ttl_secs: i64,
) -> Result<i64, etcd_client::Error> {
    let lease = client.lease_grant(ttl_secs, None).await?.id();
    client
        .put(
            key,
            value.to_vec(),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
    Ok(lease)
}

/// Renews `lease` every third of its TTL; returns when it can no longer be renewed.
async fn renew(client: &mut Client, lease: i64, ttl_secs: i64) {
    let Ok((mut keeper, mut answers)) = client.lease_keep_alive(lease).await else {
        return;
    };
    let every = Duration::from_millis((ttl_secs as u64 * 1000 / 3).max(200));
    loop {
        if keeper.keep_alive().await.is_err() {
            return;
        }
        match tokio::time::timeout(every, answers.message()).await {
            // A TTL of 0 in the answer: the lease has expired.
            Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
            _ => return,
        }
        tokio::time::sleep(every).await;
    }
}

/// A key kept alive by [`EtcdStore::keep`]. Dropping it revokes the lease, so the key goes
/// at once (a clean shutdown); [`KeptKey::abandon`] stops the renewals and leaves the key to
/// expire, which is what a crash does.
pub struct KeptKey {
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
}

impl KeptKey {
    /// Stops renewing without revoking: etcd deletes the key once its TTL runs out.
    pub fn abandon(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(false);
        }
    }
}

impl Drop for KeptKey {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

/// The control state of several service instances, in etcd under the store's prefix:
/// `ca` (certificate and key, created by whichever instance gets there first), `tokens/ID`,
/// `connectors/ID` and `revoked/ID`. When etcd does not answer, reads give the last state
/// read (instances go on serving with it) and writes fail (registrations are refused).
pub struct EtcdState {
    store: EtcdStore,
    last_connectors: std::sync::Mutex<Vec<crate::ConnectorRecord>>,
    last_revoked: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Changes seen under `connectors/`, `revoked/` and `instances/` (by watches), and
    /// resyncs.
    registry_changes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The live instances' advertised tunnel addresses by instance id, kept by a watch.
    instances: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
    /// The cookie keys and the app document as etcd last had them, with their revisions,
    /// kept by watches (so reading them never waits on the network).
    documents: Documents,
    /// This instance's registration, while it runs.
    registration: std::sync::Mutex<Option<KeptKey>>,
}

type Documents =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<&'static str, (Vec<u8>, i64)>>>;

/// The key of the cookie key ring (`<id> <hex>` lines, the sealing key first).
const COOKIE_KEYS: &str = "cookie-keys";
/// The key of the app document (`[[apps]]` tables), when apps are managed in the store.
const APPS: &str = "apps";
/// How long a used-once mark outlives the credential's own expiry (clock skew).
const USED_ONCE_MARGIN: u64 = 300;

/// How long an instance's registration outlives its last renewal: a dead instance drops out
/// of the connectors' lists within this.
pub const INSTANCE_TTL: Duration = Duration::from_secs(3);

/// The CA as stored: both halves in one value, so no instance ever sees a certificate
/// without its key.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredCa {
    cert: String,
    key: String,
}

impl EtcdState {
    /// Control state in `store`; watches the registry, so that a registration or revocation
    /// through any instance shows in [`crate::ControlState::registry_stamp`] at once.
    pub fn new(store: EtcdStore) -> EtcdState {
        let registry_changes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let instances = std::sync::Arc::new(std::sync::Mutex::new(Default::default()));
        let documents: Documents = Default::default();
        // Read before the first snapshot, so an instance starts with the published apps.
        for name in [COOKIE_KEYS, APPS] {
            reload_document(&store, &documents, name);
        }
        for prefix in ["connectors/", "revoked/", "instances/", COOKIE_KEYS, APPS] {
            let Ok(changes) = store.watch(prefix) else {
                continue;
            };
            let counter = registry_changes.clone();
            let (instances, store) = (instances.clone(), store.clone());
            let documents = documents.clone();
            let _ = std::thread::Builder::new()
                .name("gatehouse-etcd-watch".into())
                .spawn(move || {
                    if prefix == "instances/" {
                        reload_instances(&store, &instances);
                    }
                    if prefix == COOKIE_KEYS || prefix == APPS {
                        // Read whole, with its revision: whatever the change was, the
                        // cache then holds what etcd holds.
                        reload_document(&store, &documents, prefix);
                        counter.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        for _ in changes {
                            reload_document(&store, &documents, prefix);
                            counter.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        }
                        return;
                    }
                    for change in changes {
                        if prefix == "instances/" {
                            let mut live = instances.lock().unwrap_or_else(|e| e.into_inner());
                            match change {
                                Change::Put(id, address) => {
                                    live.insert(id, String::from_utf8_lossy(&address).into_owned());
                                }
                                Change::Delete(id) => {
                                    live.remove(&id);
                                }
                                Change::Resync => {
                                    drop(live);
                                    reload_instances(&store, &instances);
                                }
                            }
                        }
                        counter.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    }
                });
        }
        EtcdState {
            store,
            last_connectors: Default::default(),
            last_revoked: Default::default(),
            registry_changes,
            instances,
            documents,
            registration: std::sync::Mutex::new(None),
        }
    }

    /// The value of `name`, created from `make()` by whichever instance gets there first.
    fn shared_value(
        &self,
        name: &str,
        make: impl FnOnce() -> Result<Vec<u8>, crate::ServiceError>,
    ) -> Result<Vec<u8>, crate::ServiceError> {
        if let Some(value) = self.store.get(name).map_err(store_error)? {
            return Ok(value);
        }
        let ours = make()?;
        match self.store.create(name, &ours).map_err(store_error)? {
            Created::New => Ok(ours),
            Created::Existing(theirs) => Ok(theirs),
        }
    }

    /// Sets `name` to `change(current text)` in one compare-and-swap, read again and retried
    /// when another writer came in between; the new text and its revision.
    fn replace(
        &self,
        name: &str,
        change: impl Fn(String) -> Result<String, crate::ServiceError>,
    ) -> Result<(String, i64), crate::ServiceError> {
        loop {
            let (current, revision) = match self.store.get_versioned(name).map_err(store_error)? {
                Some((value, revision)) => (String::from_utf8_lossy(&value).into_owned(), revision),
                None => (String::new(), 0),
            };
            let next = change(current)?;
            let written = self
                .store
                .put_if_unchanged(name, next.as_bytes(), revision)
                .map_err(store_error)?;
            if let Some(revision) = written {
                return Ok((next, revision));
            }
        }
    }

    /// The store underneath (for watches of the prefixes above).
    pub fn store(&self) -> &EtcdStore {
        &self.store
    }
}

/// Reads document `name` into the cache (removes it when etcd has none); keeps the cached
/// one when etcd does not answer.
fn reload_document(store: &EtcdStore, documents: &Documents, name: &'static str) {
    match store.get_versioned(name) {
        Ok(Some(value)) => {
            documents
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name, value);
        }
        Ok(None) => {
            documents
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(name);
        }
        Err(_) => {}
    }
}

/// Reads the instance list anew (at start, and after a broken watch).
fn reload_instances(
    store: &EtcdStore,
    instances: &std::sync::Mutex<std::collections::BTreeMap<String, String>>,
) {
    if let Ok(listed) = store.list("instances/") {
        *instances.lock().unwrap_or_else(|e| e.into_inner()) = listed
            .into_iter()
            .map(|(id, address)| (id, String::from_utf8_lossy(&address).into_owned()))
            .collect();
    }
}

fn store_error(e: StoreError) -> crate::ServiceError {
    crate::ServiceError::Store(e.to_string())
}

impl crate::ControlState for EtcdState {
    fn load_or_create_ca(
        &self,
        now: u64,
    ) -> Result<gatehouse_core::ConnectorCa, crate::ServiceError> {
        use gatehouse_core::ConnectorCa;
        let parse = |value: &[u8]| {
            let stored: StoredCa = serde_json::from_slice(value)
                .map_err(|e| crate::ServiceError::Store(format!("ca: {e}")))?;
            ConnectorCa::from_pem(&stored.cert, &stored.key)
                .map_err(|e| crate::ServiceError::Ca(e.to_string()))
        };
        let value = self.shared_value("ca", || {
            let ca = ConnectorCa::generate("Gatehouse connector CA", now)
                .map_err(|e| crate::ServiceError::Ca(e.to_string()))?;
            serde_json::to_vec(&StoredCa {
                cert: ca.cert_pem(),
                key: ca.key_pem(),
            })
            .map_err(|e| crate::ServiceError::Store(e.to_string()))
        })?;
        parse(&value)
    }

    fn store_token(
        &self,
        id: &str,
        record: &crate::TokenRecord,
    ) -> Result<(), crate::ServiceError> {
        // Created, never replaced: a token id names one token for good.
        match self
            .store
            .create(&format!("tokens/{id}"), record.to_line().as_bytes())
            .map_err(store_error)?
        {
            Created::New => Ok(()),
            Created::Existing(_) => {
                Err(crate::ServiceError::Store(format!("token id {id} exists")))
            }
        }
    }

    fn consume_token(&self, id: &str) -> bool {
        // Taken from the store: of all instances, one gets it.
        matches!(self.store.take(&format!("tokens/{id}")), Ok(Some(_)))
    }

    fn token(&self, id: &str) -> Option<crate::TokenRecord> {
        let value = self.store.get(&format!("tokens/{id}")).ok()??;
        crate::TokenRecord::from_line(&String::from_utf8_lossy(&value))
    }

    fn store_connector(&self, record: &crate::ConnectorRecord) -> Result<(), crate::ServiceError> {
        let value = format!("{} {} {}", record.group, record.registered, record.hostname);
        self.store
            .put(&format!("connectors/{}", record.id), value.as_bytes())
            .map_err(store_error)
    }

    fn connectors(&self) -> Vec<crate::ConnectorRecord> {
        let revoked = self.revoked();
        let mut last = self
            .last_connectors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Ok(listed) = self.store.list("connectors/") {
            *last = listed
                .into_iter()
                .filter_map(|(id, value)| {
                    let value = String::from_utf8_lossy(&value);
                    let f: Vec<&str> = value.split(' ').collect();
                    (f.len() == 3).then(|| crate::ConnectorRecord {
                        revoked: revoked.contains(&id),
                        group: f[0].to_owned(),
                        registered: f[1].parse().unwrap_or(0),
                        hostname: f[2].to_owned(),
                        id,
                    })
                })
                .collect();
        }
        last.clone()
    }

    fn revoked(&self) -> std::collections::HashSet<String> {
        let mut last = self.last_revoked.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(listed) = self.store.list("revoked/") {
            *last = listed.into_iter().map(|(id, _)| id).collect();
        }
        last.clone()
    }

    fn store_revocation(&self, id: &str) -> Result<(), crate::ServiceError> {
        self.store
            .put(&format!("revoked/{id}"), b"")
            .map_err(store_error)
    }

    fn registry_stamp(&self) -> u64 {
        self.registry_changes
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn register_instance(&self, id: &str, advertise: &str) -> Result<(), crate::ServiceError> {
        let kept = self
            .store
            .keep(
                &format!("instances/{id}"),
                advertise.as_bytes(),
                INSTANCE_TTL,
            )
            .map_err(store_error)?;
        *self.registration.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
        Ok(())
    }

    fn instances(&self) -> Vec<String> {
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn publish_signed_out(&self, id: &[u8; 16], expires: u64, now: u64) {
        // Gone from etcd when the session would have expired anyway.
        let ttl = Duration::from_secs(expires.saturating_sub(now).max(1));
        let name = format!("sessions/{}", gatehouse_core::hex::encode(id));
        self.store
            .put_expiring(&name, expires.to_string().as_bytes(), ttl);
    }

    fn follow_signed_out(&self, adopt: Box<dyn Fn([u8; 16], u64) + Send>) {
        let Ok(changes) = self.store.watch("sessions/") else {
            eprintln!("gatehouse service: etcd: cannot watch signed-out sessions");
            return;
        };
        let store = self.store.clone();
        let parse = |id: &str, value: &[u8]| {
            let id: [u8; 16] = gatehouse_core::hex::decode_array(id)?;
            let expires: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
            Some((id, expires))
        };
        let _ = std::thread::Builder::new()
            .name("gatehouse-etcd-sessions".into())
            .spawn(move || {
                let adopt_listed = |adopt: &dyn Fn([u8; 16], u64)| {
                    for (id, value) in store.list("sessions/").unwrap_or_default() {
                        if let Some((id, expires)) = parse(&id, &value) {
                            adopt(id, expires);
                        }
                    }
                };
                adopt_listed(&*adopt);
                for change in changes {
                    match change {
                        Change::Put(id, value) => {
                            if let Some((id, expires)) = parse(&id, &value) {
                                adopt(id, expires);
                            }
                        }
                        Change::Resync => adopt_listed(&*adopt),
                        Change::Delete(_) => {}
                    }
                }
            });
    }

    fn cookie_keys(&self) -> Result<String, crate::ServiceError> {
        let cached = self
            .documents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(COOKIE_KEYS)
            .map(|(value, _)| value.clone());
        let value = match cached {
            Some(value) => value,
            None => self.shared_value(COOKIE_KEYS, || {
                gatehouse_core::cookie::keyfile::first()
                    .map(String::into_bytes)
                    .map_err(|e| crate::ServiceError::Ca(format!("cookie keys: {e}")))
            })?,
        };
        String::from_utf8(value)
            .map_err(|e| crate::ServiceError::Store(format!("{COOKIE_KEYS}: {e}")))
    }

    fn change_cookie_keys(
        &self,
        change: &crate::state::KeyChange<'_>,
    ) -> Result<String, crate::ServiceError> {
        // The keys exist before they change (created once, like the CA).
        self.cookie_keys()?;
        let (next, _) = self.replace(COOKIE_KEYS, |current| {
            change(&current).map_err(|e| crate::ServiceError::Ca(format!("cookie keys: {e}")))
        })?;
        Ok(next)
    }

    fn shared_apps(&self) -> Option<(String, u64)> {
        let documents = self.documents.lock().unwrap_or_else(|e| e.into_inner());
        let (text, revision) = documents.get(APPS)?;
        Some((String::from_utf8_lossy(text).into_owned(), *revision as u64))
    }

    fn publish_apps(&self, text: &str) -> Result<u64, crate::ServiceError> {
        let (_, revision) = self.replace(APPS, |_| Ok(text.to_owned()))?;
        Ok(revision as u64)
    }

    fn use_once(
        &self,
        hash: &[u8; 32],
        expires: u64,
        now: u64,
    ) -> Result<bool, crate::ServiceError> {
        let ttl = Duration::from_secs(expires.saturating_sub(now) + USED_ONCE_MARGIN);
        let name = format!("used/{}", gatehouse_core::hex::encode(hash));
        match self
            .store
            .create_expiring(&name, expires.to_string().as_bytes(), ttl)
            .map_err(store_error)?
        {
            Created::New => Ok(true),
            Created::Existing(_) => Ok(false),
        }
    }

    fn assertion_signer(&self) -> Result<gatehouse_core::Es256Signer, crate::ServiceError> {
        use gatehouse_core::Es256Signer;
        let failed =
            |e: &dyn std::fmt::Display| crate::ServiceError::Ca(format!("assertion key: {e}"));
        let pkcs8 = self.shared_value("assertion-key", || {
            Es256Signer::generate_pkcs8().map_err(|e| failed(&e))
        })?;
        Es256Signer::from_pkcs8(crate::state::ASSERTION_KID, &pkcs8).map_err(|e| failed(&e))
    }
}
