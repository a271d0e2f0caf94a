//! The service's control state: the connector CA, bootstrap tokens, registered connectors.
//! [`ControlState`] is what the service needs of it; [`StateDir`], a directory, keeps it for
//! one instance (and `etcd::EtcdState`, with the `etcd` feature, for several).
//!
//! In the directory,
//! files are append-only logs of single lines, written with one `write` each (`O_APPEND`), so
//! the running service and the `gatehouse service ...` commands can both add to them without
//! a lock: the service appends registrations, the CLI appends tokens and revocations.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use gatehouse_core::hex::encode as hex;
use gatehouse_core::secret_file;
use gatehouse_core::ConnectorCa;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use crate::ServiceError;

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const TOKENS: &str = "tokens";
const TOKENS_USED: &str = "tokens-used";
const CONNECTORS: &str = "connectors";
const REVOKED: &str = "revoked";
const PID: &str = "service.pid";
const COOKIE_KEYS: &str = "cookie.keys";
const ASSERTION_KEY: &str = "assertion.key";
/// The `kid` of the identity-assertion key.
pub const ASSERTION_KID: &str = "gatehouse-assertion-1";

/// Prefix of bootstrap tokens (so they are easy to spot in logs and secret scanners).
const TOKEN_PREFIX: &str = "ghr1";

/// The role a bootstrap token was created for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// May register connectors.
    Admin,
    /// May look, not change (cannot register connectors).
    Viewer,
}

impl Role {
    /// Parses `admin` or `viewer`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    /// `admin` or `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

/// Why a bootstrap token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Not a token of this service (bad format, unknown id, wrong secret).
    Invalid,
    /// Past its expiry.
    Expired,
    /// Valid, but not an administrator's.
    NotAdmin,
    /// A single-use token that registered a connector already.
    Used,
}

impl TokenRefusal {
    /// The sentence for the error answer.
    pub fn reason(self) -> &'static str {
        match self {
            TokenRefusal::Invalid => "the registration token is not valid for this service",
            TokenRefusal::Expired => "the registration token has expired",
            TokenRefusal::NotAdmin => "the registration token is not an administrator's",
            TokenRefusal::Used => "the registration token was for one use and is used up",
        }
    }
}

/// A bootstrap token as stored: never the secret, only its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// What the token may do.
    pub role: Role,
    /// Its expiry, Unix seconds.
    pub expires: u64,
    /// SHA-256 of its secret, hex.
    pub secret_hash: String,
    /// Whether it registers one connector only.
    pub single_use: bool,
}

impl TokenRecord {
    /// `role expires hash`, and ` once` for a single-use token: the stored form.
    pub fn to_line(&self) -> String {
        format!(
            "{} {} {}{}",
            self.role.as_str(),
            self.expires,
            self.secret_hash,
            if self.single_use { " once" } else { "" }
        )
    }

    /// Reads [`TokenRecord::to_line`]'s form.
    pub fn from_line(line: &str) -> Option<TokenRecord> {
        let mut f = line.trim().split(' ');
        let mut record = TokenRecord {
            role: Role::parse(f.next()?)?,
            expires: f.next()?.parse().ok()?,
            secret_hash: f.next()?.to_owned(),
            single_use: false,
        };
        match f.next() {
            None => {}
            Some("once") => record.single_use = true,
            Some(_) => return None,
        }
        f.next().is_none().then_some(record)
    }
}

/// A change of the cookie key text (rotate, retire).
pub type KeyChange<'a> =
    dyn Fn(&str) -> Result<String, gatehouse_core::cookie::KeyringError> + Send + Sync + 'a;

/// What the service keeps besides its configuration: the connector CA, bootstrap tokens,
/// registered and revoked connectors. The required methods store and read; the provided
/// ones hold the rules (token format and checks, connector ids, host-name hygiene), so every
/// backend applies the same.
pub trait ControlState: Send + Sync {
    /// The connector CA, created on first use (by exactly one of several instances).
    fn load_or_create_ca(&self, now: u64) -> Result<ConnectorCa, ServiceError>;
    /// Stores the token `id`.
    fn store_token(&self, id: &str, record: &TokenRecord) -> Result<(), ServiceError>;
    /// The token `id`, if stored (and, for a single-use token, not used).
    fn token(&self, id: &str) -> Option<TokenRecord>;
    /// Uses up the single-use token `id`: true for exactly one caller, whichever process or
    /// instance asks.
    fn consume_token(&self, id: &str) -> bool;
    /// Stores a registered connector.
    fn store_connector(&self, record: &ConnectorRecord) -> Result<(), ServiceError>;
    /// Every registered connector, with its revocation state.
    fn connectors(&self) -> Vec<ConnectorRecord>;
    /// Ids of revoked connectors.
    fn revoked(&self) -> HashSet<String>;
    /// Marks connector `id` revoked (it is known to exist).
    fn store_revocation(&self, id: &str) -> Result<(), ServiceError>;
    /// A number that changes when a connector registers or is revoked, or an instance comes
    /// or goes, through any instance: the service looks at it every 100 ms.
    fn registry_stamp(&self) -> u64;
    /// Announces this instance (its tunnel address, as connectors dial it) while it runs;
    /// nothing to do for a single instance.
    fn register_instance(&self, _id: &str, _advertise: &str) -> Result<(), ServiceError> {
        Ok(())
    }
    /// The tunnel addresses of the live instances (empty for a single instance: connectors
    /// then dial the address they registered with). Never waits on the network.
    fn instances(&self) -> Vec<String> {
        Vec::new()
    }
    /// Tells the other instances that session `id`, which would expire at `expires`, was
    /// signed out of. Never waits on the network; nothing to do for a single instance.
    fn publish_signed_out(&self, _id: &[u8; 16], _expires: u64, _now: u64) {}
    /// Calls `adopt` for every session another instance signed out of: those known now, and
    /// each one from now on.
    fn follow_signed_out(&self, _adopt: Box<dyn Fn([u8; 16], u64) + Send>) {}
    /// The cookie keys as key-file text (`<id> <hex>` per line, the sealing key first),
    /// created with one key on first use; shared by all instances, so a session sealed by
    /// one opens on any.
    fn cookie_keys(&self) -> Result<String, ServiceError>;
    /// Replaces the cookie keys with `change(current text)`, in one step against any other
    /// writer (another `service keys` command, another instance). Every instance picks the
    /// new keys up as it does registry changes. Returns the new text.
    fn change_cookie_keys(&self, change: &KeyChange<'_>) -> Result<String, ServiceError>;
    /// The app document published through the store (`gatehouse service apps publish`): its
    /// text and a revision that grows with every publication; `None` while the apps come
    /// from the configuration file. Never waits on the network.
    fn shared_apps(&self) -> Option<(String, u64)> {
        None
    }
    /// Publishes the app document `text` (already checked) to every instance; its new
    /// revision.
    fn publish_apps(&self, _text: &str) -> Result<u64, ServiceError> {
        Err(ServiceError::Store(
            "apps are published through the store only with [state] backend = \"etcd\"; with \
             the state directory, edit [[apps]] in the configuration file and reload"
                .into(),
        ))
    }
    /// Marks the credential with SHA-256 `hash` used until `expires` (Unix seconds): true for
    /// exactly one caller across all workers and instances (an ID token enrols once).
    fn use_once(&self, hash: &[u8; 32], expires: u64, now: u64) -> Result<bool, ServiceError>;
    /// The key that signs identity assertions, created on first use (shared, so back ends
    /// trust what any instance asserts).
    fn assertion_signer(&self) -> Result<gatehouse_core::Es256Signer, ServiceError>;

    /// Creates a bootstrap token for `role`, valid for `ttl_secs`. Only its hash is stored;
    /// the token itself (which also pins the CA, so the connector can trust the service on
    /// first contact) is returned once.
    fn create_token(
        &self,
        role: Role,
        ttl_secs: u64,
        single_use: bool,
        ca: &ConnectorCa,
        now: u64,
    ) -> Result<String, ServiceError> {
        let rng = SystemRandom::new();
        let mut id = [0u8; 6];
        let mut secret = [0u8; 24];
        rng.fill(&mut id)
            .and_then(|_| rng.fill(&mut secret))
            .map_err(|_| ServiceError::Ca("no randomness".into()))?;
        let id = hex(&id);
        let secret = hex(&secret);
        let record = TokenRecord {
            role,
            expires: now.saturating_add(ttl_secs),
            secret_hash: hex(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref()),
            single_use,
        };
        self.store_token(&id, &record)?;
        Ok(format!("{TOKEN_PREFIX}.{id}.{secret}.{}", ca_pin(ca)))
    }

    /// Checks a bootstrap token for registration (admins only); uses a single-use token up.
    fn check_token(&self, token: &str, now: u64) -> Result<(), TokenRefusal> {
        let (id, record) = self.valid_token(token, now)?;
        if record.role != Role::Admin {
            return Err(TokenRefusal::NotAdmin);
        }
        if record.single_use && !self.consume_token(id) {
            return Err(TokenRefusal::Used);
        }
        Ok(())
    }

    /// The role of a valid, unexpired token (a single-use token is not used up by this).
    fn token_role(&self, token: &str, now: u64) -> Result<Role, TokenRefusal> {
        Ok(self.valid_token(token, now)?.1.role)
    }

    /// The id and record of a valid, unexpired token.
    fn valid_token<'t>(
        &self,
        token: &'t str,
        now: u64,
    ) -> Result<(&'t str, TokenRecord), TokenRefusal> {
        let mut parts = token.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(id), Some(secret)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRefusal::Invalid);
        };
        let hash = hex(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref());
        let record = self.token(id).ok_or(TokenRefusal::Invalid)?;
        if !gatehouse_core::constant_time_eq(record.secret_hash.as_bytes(), hash.as_bytes()) {
            return Err(TokenRefusal::Invalid);
        }
        if now > record.expires {
            return Err(TokenRefusal::Expired);
        }
        Ok((id, record))
    }

    /// A fresh connector id (random per registration, so a replayed token makes a second,
    /// separately revocable connector, never a shared identity).
    fn new_connector_id(&self) -> Result<String, ServiceError> {
        let mut raw = [0u8; 8];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| ServiceError::Ca("no randomness".into()))?;
        Ok(format!("c-{}", hex(&raw)))
    }

    /// Records a registered connector (after its certificate was issued).
    fn record_connector(
        &self,
        id: &str,
        group: &str,
        hostname: &str,
        now: u64,
    ) -> Result<(), ServiceError> {
        let hostname: String = hostname
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            .take(64)
            .collect();
        self.store_connector(&ConnectorRecord {
            id: id.to_owned(),
            group: group.to_owned(),
            registered: now,
            hostname: if hostname.is_empty() {
                "-".into()
            } else {
                hostname
            },
            revoked: false,
        })
    }

    /// Revokes a connector; false if no connector has that id.
    fn revoke(&self, id: &str) -> Result<bool, ServiceError> {
        if !self.connectors().iter().any(|c| c.id == id) {
            return Ok(false);
        }
        self.store_revocation(id)?;
        Ok(true)
    }
}

/// A registered connector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectorRecord {
    /// Its id (also in its certificate).
    pub id: String,
    /// Its group.
    pub group: String,
    /// When it registered, Unix seconds.
    pub registered: u64,
    /// The host name it reported.
    pub hostname: String,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// The service's state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    path: PathBuf,
    /// Credentials used once, by SHA-256, until they expire ([`ControlState::use_once`]).
    used_once: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], u64>>>,
}

impl StateDir {
    /// Opens `path`, creating it (mode 0700) if missing.
    pub fn open(path: &Path) -> Result<Self, ServiceError> {
        if !path.exists() {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            builder
                .create(path)
                .map_err(|e| ServiceError::io(path, e))?;
        }
        Ok(StateDir {
            path: path.to_owned(),
            used_once: Default::default(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the running service's process id, so CLI commands can tell it to reload.
    pub fn write_pid(&self) -> Result<(), ServiceError> {
        let path = self.path.join(PID);
        secret_file::replace(&path, format!("{}\n", std::process::id()).as_bytes())
            .map_err(|e| ServiceError::io(&path, e))
    }

    /// The running service's process id, if it recorded one.
    pub fn pid(&self) -> Option<u32> {
        fs::read_to_string(self.path.join(PID))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the single-use token `id` was used.
    fn token_used(&self, id: &str) -> bool {
        fs::read_to_string(self.path.join(TOKENS_USED))
            .unwrap_or_default()
            .lines()
            .any(|line| line == id)
    }

    /// Appends one line with a single write.
    fn append(&self, file: &str, line: &str) -> Result<(), ServiceError> {
        let path = self.path.join(file);
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e: io::Error| ServiceError::io(&path, e))
    }
}

impl ControlState for StateDir {
    /// The connector CA, created on first use (key mode 0600).
    fn load_or_create_ca(&self, now: u64) -> Result<ConnectorCa, ServiceError> {
        let cert_path = self.path.join(CA_CERT);
        let key_path = self.path.join(CA_KEY);
        if !key_path.exists() {
            let ca = ConnectorCa::generate("Gatehouse connector CA", now)
                .map_err(|e| ServiceError::Ca(e.to_string()))?;
            secret_file::create_new(&key_path, ca.key_pem().as_bytes())
                .map_err(|e| ServiceError::io(&key_path, e))?;
            secret_file::replace(&cert_path, ca.cert_pem().as_bytes())
                .map_err(|e| ServiceError::io(&cert_path, e))?;
        }
        let key = secret_file::read(&key_path).map_err(|e| ServiceError::io(&key_path, e))?;
        let cert = fs::read(&cert_path).map_err(|e| ServiceError::io(&cert_path, e))?;
        ConnectorCa::from_pem(
            &String::from_utf8_lossy(&cert),
            &String::from_utf8_lossy(&key),
        )
        .map_err(|e| ServiceError::Ca(e.to_string()))
    }

    fn store_token(&self, id: &str, record: &TokenRecord) -> Result<(), ServiceError> {
        self.append(TOKENS, &format!("{id} {}\n", record.to_line()))
    }

    fn token(&self, id: &str) -> Option<TokenRecord> {
        let text = fs::read_to_string(self.path.join(TOKENS)).unwrap_or_default();
        // The first line of an id counts: a later one cannot replace a token.
        let record = text
            .lines()
            .find_map(|line| line.strip_prefix(id)?.strip_prefix(' '))
            .and_then(TokenRecord::from_line)?;
        (!record.single_use || !self.token_used(id)).then_some(record)
    }

    fn consume_token(&self, id: &str) -> bool {
        // Workers of this process race under the lock; the CLI never consumes.
        static CONSUMING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = CONSUMING.lock().unwrap_or_else(|e| e.into_inner());
        !self.token_used(id) && self.append(TOKENS_USED, &format!("{id}\n")).is_ok()
    }

    fn store_connector(&self, record: &ConnectorRecord) -> Result<(), ServiceError> {
        let ConnectorRecord {
            id,
            group,
            registered,
            hostname,
            ..
        } = record;
        self.append(
            CONNECTORS,
            &format!("{id} {group} {registered} {hostname}\n"),
        )
    }

    fn connectors(&self) -> Vec<ConnectorRecord> {
        let revoked = self.revoked();
        let text = fs::read_to_string(self.path.join(CONNECTORS)).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                (f.len() == 4).then(|| ConnectorRecord {
                    id: f[0].to_owned(),
                    group: f[1].to_owned(),
                    registered: f[2].parse().unwrap_or(0),
                    hostname: f[3].to_owned(),
                    revoked: revoked.contains(f[0]),
                })
            })
            .collect()
    }

    fn revoked(&self) -> HashSet<String> {
        fs::read_to_string(self.path.join(REVOKED))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn store_revocation(&self, id: &str) -> Result<(), ServiceError> {
        self.append(REVOKED, &format!("{id}\n"))
    }

    fn registry_stamp(&self) -> u64 {
        // Length and modification time of the registry files (registrations by workers,
        // revocations by the CLI) and of the cookie keys (rotated by the CLI).
        let mut stamp = 0u64;
        for file in [CONNECTORS, REVOKED, COOKIE_KEYS] {
            if let Ok(meta) = fs::metadata(self.path.join(file)) {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos() as u64);
                stamp = stamp
                    .rotate_left(17)
                    .wrapping_add(meta.len())
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .wrapping_add(modified);
            }
        }
        stamp
    }

    fn cookie_keys(&self) -> Result<String, ServiceError> {
        gatehouse_core::cookie::keyfile::load_or_create_text(&self.path.join(COOKIE_KEYS))
            .map_err(|e| ServiceError::Ca(format!("cookie keys: {e}")))
    }

    fn change_cookie_keys(&self, change: &KeyChange<'_>) -> Result<String, ServiceError> {
        // One writer at a time: the `service keys` command (the running service only reads,
        // and picks the file up by its stamp).
        let current = self.cookie_keys()?;
        let next = change(&current).map_err(|e| ServiceError::Ca(format!("cookie keys: {e}")))?;
        let path = self.path.join(COOKIE_KEYS);
        secret_file::replace(&path, next.as_bytes()).map_err(|e| ServiceError::io(&path, e))?;
        Ok(next)
    }

    fn use_once(&self, hash: &[u8; 32], expires: u64, now: u64) -> Result<bool, ServiceError> {
        // One instance: a set in memory, shared by the workers of this process.
        let mut used = self.used_once.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, until| *until > now);
        Ok(used.insert(*hash, expires).is_none())
    }

    fn assertion_signer(&self) -> Result<gatehouse_core::Es256Signer, ServiceError> {
        gatehouse_core::Es256Signer::load_or_create(&self.path.join(ASSERTION_KEY), ASSERTION_KID)
            .map_err(|e| ServiceError::Ca(format!("assertion key: {e}")))
    }
}

/// The CA pin carried in bootstrap tokens: SHA-256 of the CA certificate (DER), hex.
pub fn ca_pin(ca: &ConnectorCa) -> String {
    hex(digest::digest(&digest::SHA256, ca.cert_der()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> StateDir {
        let path = std::env::temp_dir().join(format!("gh-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        StateDir::open(&path).unwrap()
    }

    #[test]
    fn tokens_are_checked_for_secret_expiry_and_role() {
        let state = dir("tokens");
        let ca = state.load_or_create_ca(1_000).unwrap();
        let admin = state
            .create_token(Role::Admin, 60, false, &ca, 1_000)
            .unwrap();
        let viewer = state
            .create_token(Role::Viewer, 60, false, &ca, 1_000)
            .unwrap();
        assert_eq!(state.check_token(&admin, 1_030), Ok(()));
        assert_eq!(state.check_token(&admin, 1_061), Err(TokenRefusal::Expired));
        assert_eq!(
            state.check_token(&viewer, 1_030),
            Err(TokenRefusal::NotAdmin)
        );
        let mut forged = admin.clone();
        forged.replace_range(20..21, if &admin[20..21] == "a" { "b" } else { "a" });
        assert_eq!(
            state.check_token(&forged, 1_030),
            Err(TokenRefusal::Invalid)
        );
        assert_eq!(
            state.check_token("garbage", 1_030),
            Err(TokenRefusal::Invalid)
        );
        // Only the hash is stored.
        let stored = fs::read_to_string(state.path().join(TOKENS)).unwrap();
        assert!(!stored.contains(admin.split('.').nth(2).unwrap()));
        assert!(admin.ends_with(&ca_pin(&ca)));
    }

    /// A single-use token registers once, whichever of many workers tries at the same time;
    /// the others are refused, and so is every later try.
    #[test]
    fn a_single_use_token_is_used_up_once() {
        let state = std::sync::Arc::new(dir("once"));
        let ca = state.load_or_create_ca(1_000).unwrap();
        let token = state
            .create_token(Role::Admin, 60, true, &ca, 1_000)
            .unwrap();
        assert!(fs::read_to_string(state.path().join(TOKENS))
            .unwrap()
            .trim_end()
            .ends_with(" once"));
        // Looking at it (the admin listener does) does not use it up.
        assert_eq!(state.token_role(&token, 1_010), Ok(Role::Admin));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let tries: Vec<_> = (0..8)
            .map(|_| {
                let (state, token, barrier) = (state.clone(), token.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    state.check_token(&token, 1_020)
                })
            })
            .collect();
        let results: Vec<_> = tries.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(results
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(TokenRefusal::Used | TokenRefusal::Invalid))));
        assert!(state.check_token(&token, 1_030).is_err());
        assert!(state.token_role(&token, 1_030).is_err());
    }

    #[test]
    fn connectors_register_and_revoke() {
        let state = dir("connectors");
        let (a, b) = (
            state.new_connector_id().unwrap(),
            state.new_connector_id().unwrap(),
        );
        state.record_connector(&a, "default", "host-a", 5).unwrap();
        state
            .record_connector(&b, "default", "host b\n", 6)
            .unwrap();
        assert_ne!(a, b);
        assert!(state.revoke(&a).unwrap());
        assert!(!state.revoke("c-unknown").unwrap());
        let list = state.connectors();
        assert_eq!(list.len(), 2);
        assert!(list[0].revoked && !list[1].revoked);
        assert_eq!(list[1].hostname, "hostb");
    }

    #[test]
    fn cookie_keys_rotate_in_the_file_and_change_the_stamp() {
        use gatehouse_core::cookie::keyfile;
        let state = dir("keys");
        let first = state.cookie_keys().unwrap();
        assert_eq!(state.cookie_keys().unwrap(), first, "created once");
        let stamp = state.registry_stamp();
        let rotated = state
            .change_cookie_keys(&|text| Ok(keyfile::rotated(text)?.0))
            .unwrap();
        assert_eq!(state.cookie_keys().unwrap(), rotated);
        let ring = keyfile::from_text(&state.cookie_keys().unwrap()).unwrap();
        let ids: Vec<u8> = ring.key_ids().collect();
        assert_eq!(ids, [2, 1]);
        assert_ne!(
            state.registry_stamp(),
            stamp,
            "running services look at the stamp"
        );
        assert!(state
            .change_cookie_keys(&|text| keyfile::retired(text, 2))
            .is_err());
        assert_eq!(
            state.cookie_keys().unwrap(),
            rotated,
            "a refused change writes nothing"
        );
    }

    #[test]
    fn a_credential_is_used_once_until_it_expires() {
        let state = dir("once");
        assert!(state.use_once(&[1; 32], 100, 10).unwrap());
        assert!(!state.use_once(&[1; 32], 100, 20).unwrap());
        assert!(state.use_once(&[2; 32], 100, 20).unwrap());
        // Forgotten once expired (it could not be used anyway).
        assert!(state.use_once(&[1; 32], 300, 100).unwrap());
    }
}
