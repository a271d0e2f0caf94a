//! Sealed session cookies: AES-256-GCM with rotating keys, bound to the cookie name and the app.
//!
//! A sealed value is, before base64url (no padding):
//!
//! ```text
//! key id (1) | nonce (12) | ciphertext of the session (see `SessionRef`) | tag (16)
//! ```
//!
//! - The nonce is 96 fresh random bits per seal. With random nonces NIST SP 800-38D 8.3 allows
//!   2^32 seals per key; rotate the key (see [`Keyring`]) well before that.
//! - The additional authenticated data is the key id and a SHA-256 digest of the cookie name and
//!   the app id, so a value taken from app A, or from another cookie, fails to open at app B
//!   exactly as a forged value does ([`CookieError::Tampered`]).
//! - Expiry is inside the ciphertext and checked against the caller's `now`; there is no clock
//!   here.
//!
//! Call order: [`Keyring::seal`] at login (and to refresh), [`Keyring::open`] on every request.
//! Both take caller buffers and allocate nothing: `scratch` of at least [`SCRATCH_LEN`] bytes and,
//! for sealing, `out` of at least [`MAX_COOKIE_VALUE_LEN`] bytes.

pub mod keyfile;
mod session;

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeSliceError, Engine};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

pub use session::{
    session_expiry, AuthMethod, AuthMethods, GroupList, GroupListIter, Groups, GroupsIter,
    SessionRef, SessionView, MAX_GROUPS,
};

/// Bytes of one cookie key (AES-256).
pub const KEY_LEN: usize = 32;

/// Longest cookie value this module writes or reads, in characters.
///
/// Browsers keep cookies up to 4096 bytes for name, value and attributes together (RFC 6265 6.1
/// asks for at least that much), so a larger value would be silently dropped.
pub const MAX_COOKIE_VALUE_LEN: usize = 4096;

/// Scratch bytes [`Keyring::seal`] and [`Keyring::open`] need: the binary size of the longest
/// value (base64 carries 3 bytes in 4 characters).
pub const SCRATCH_LEN: usize = MAX_COOKIE_VALUE_LEN / 4 * 3;

/// Key id and nonce, in front of the ciphertext.
const HEADER_LEN: usize = 1 + NONCE_LEN;
/// AES-GCM tag bytes.
const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to the encoded session.
const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Why a session could not be sealed or a cookie could not be opened.
///
/// Opening failures are all "no session": the usual answer is to start a new login. They are
/// told apart for logs and metrics, but the texts say nothing an attacker could use.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// The cookie value is not base64url without padding.
    #[error("session cookie is not valid base64url")]
    Base64,
    /// A caller buffer is smaller than [`SCRATCH_LEN`] / [`MAX_COOKIE_VALUE_LEN`] needs.
    #[error("buffer too small for a session cookie")]
    BufferTooSmall,
    /// The session has ended.
    #[error("session has expired; please sign in again")]
    Expired,
    /// The value authenticated but does not decode: a format this version does not know.
    #[error("session cookie has an unknown format")]
    Malformed,
    /// The system random number generator failed while sealing.
    #[error("the system random number generator failed")]
    Rng,
    /// Authentication failed: the value was changed, or was sealed for another app or cookie.
    #[error("session cookie was altered or belongs to another application")]
    Tampered,
    /// The sealed value would be `len` characters, over [`MAX_COOKIE_VALUE_LEN`].
    #[error(
        "session cookie would be {len} bytes, over the 4096-byte browser limit; \
         keep only the groups that policies name"
    )]
    TooLarge {
        /// Length the value would have (or has, when opening).
        len: usize,
    },
    /// More groups than one session can carry.
    #[error(
        "session has {count} groups, more than {max}; keep only the groups that policies name"
    )]
    TooManyGroups {
        /// Groups in the session.
        count: usize,
        /// [`MAX_GROUPS`].
        max: usize,
    },
    /// The value is shorter than key id, nonce and tag.
    #[error("session cookie is truncated")]
    TooShort,
    /// The value was sealed with a key this keyring does not hold (retired, or never ours).
    #[error("session cookie was sealed with an unknown key")]
    UnknownKey,
}

/// Why a keyring could not be built or loaded.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// Two keys share one id.
    #[error("duplicate cookie key id {0}")]
    DuplicateKeyId(u8),
    /// No keys.
    #[error("a keyring needs at least one key")]
    Empty,
    /// A line of the key file is not `<id> <64 hex digits>`.
    #[error("cookie key file line {line}: {reason}")]
    Format {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Reading or creating the key file failed.
    #[error("cookie key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// ring refused a key (cannot happen for 32-byte keys; kept so nothing panics).
    #[error("cookie key rejected by the AEAD implementation")]
    Key,
    /// The system random number generator failed while generating a key.
    #[error("the system random number generator failed")]
    Rng,
    /// All 256 key ids are in use: retire old keys before rotating again.
    #[error("all 256 cookie key ids are in use: retire old keys first")]
    Full,
    /// No key has this id.
    #[error("no cookie key has id {0}")]
    NoSuchKey(u8),
    /// The key that seals cannot be retired (sessions would fail at once): rotate first.
    #[error("cookie key {0} is the current key: rotate before retiring it")]
    RetireCurrent(u8),
}

/// What [`Keyring::open_memo`] remembers about the last cookie a connection opened.
#[derive(Debug, Default)]
pub struct OpenMemo {
    value: Vec<u8>,
    cookie_name: Vec<u8>,
    app_id: Vec<u8>,
    /// Where the plaintext lies in the scratch buffer, and the key that sealed it.
    plain: Option<(std::ops::Range<usize>, u8)>,
    /// [`Keyring::generation`] of the keyring that opened it.
    keyring: u64,
}

/// The cookie keys: the first (current) key seals, every key opens.
///
/// Rotation: add a new key in front, keep the old one until every session it sealed has expired,
/// then drop it. A value sealed with a dropped key fails with [`CookieError::UnknownKey`].
pub struct Keyring {
    /// Never empty; `keys[0]` seals.
    keys: Vec<SealKey>,
    rng: SystemRandom,
    /// Unique per keyring built in this process: an [`OpenMemo`] filled by another keyring
    /// (one before a rotation or retirement) is not trusted.
    generation: u64,
}

/// Source of [`Keyring::generation`].
static KEYRING_GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

struct SealKey {
    id: u8,
    key: LessSafeKey,
}

impl Keyring {
    /// A keyring of `(id, key)` pairs; the first one seals.
    pub fn new(keys: &[(u8, [u8; KEY_LEN])]) -> Result<Self, KeyringError> {
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        let mut sealed = Vec::with_capacity(keys.len());
        for (i, (id, bytes)) in keys.iter().enumerate() {
            if keys[..i].iter().any(|(other, _)| other == id) {
                return Err(KeyringError::DuplicateKeyId(*id));
            }
            let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KeyringError::Key)?;
            sealed.push(SealKey {
                id: *id,
                key: LessSafeKey::new(unbound),
            });
        }
        Ok(Keyring {
            keys: sealed,
            rng: SystemRandom::new(),
            generation: KEYRING_GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Reads the key file at `path`, or creates it with one fresh key (mode 0600) when it does
    /// not exist.
    ///
    /// The file holds one key per line, `<id 0-255> <64 hex digits>`; the first key line is the
    /// current key, `#` starts a comment line. To rotate, put a new line with a new id on top.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyringError> {
        keyfile::load_or_create(path)
    }

    /// 32 fresh random bytes for a new key.
    pub fn generate_key() -> Result<[u8; KEY_LEN], KeyringError> {
        let mut key = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| KeyringError::Rng)?;
        Ok(key)
    }

    /// Id of the key that seals.
    pub fn current_key_id(&self) -> u8 {
        self.keys[0].id
    }

    /// Ids of all keys, current first.
    pub fn key_ids(&self) -> impl Iterator<Item = u8> + '_ {
        self.keys.iter().map(|k| k.id)
    }

    /// 16 fresh random bytes for [`SessionRef::session_id`].
    pub fn new_session_id(&self) -> Result<[u8; 16], CookieError> {
        let mut id = [0u8; 16];
        self.rng.fill(&mut id).map_err(|_| CookieError::Rng)?;
        Ok(id)
    }

    /// Seals `session` for the cookie named `cookie_name`, bound to `session.app_id`.
    ///
    /// Uses the front of `scratch` (at least [`SCRATCH_LEN`] bytes are always enough) and writes
    /// the value to the front of `out` (at least [`MAX_COOKIE_VALUE_LEN`]); returns the value as
    /// a slice of `out`. Allocates nothing.
    ///
    /// Fails with [`CookieError::TooLarge`] when the value would exceed
    /// [`MAX_COOKIE_VALUE_LEN`]: usually too many groups. Keep only the groups that policies name
    /// (build the session with a filtered [`GroupList::Strs`]).
    pub fn seal<'o>(
        &self,
        cookie_name: &str,
        session: &SessionRef<'_>,
        scratch: &mut [u8],
        out: &'o mut [u8],
    ) -> Result<&'o str, CookieError> {
        let plain_len = session.encoded_len()?;
        let sealed_len = plain_len.saturating_add(OVERHEAD);
        let text_len = base64_len(sealed_len);
        if text_len > MAX_COOKIE_VALUE_LEN {
            return Err(CookieError::TooLarge { len: text_len });
        }
        let sealed = scratch
            .get_mut(..sealed_len)
            .ok_or(CookieError::BufferTooSmall)?;
        let out: &'o mut [u8] = out.get_mut(..text_len).ok_or(CookieError::BufferTooSmall)?;
        self.seal_into(cookie_name, session, sealed)?;
        let written = URL_SAFE_NO_PAD
            .encode_slice(&*sealed, &mut *out)
            .map_err(|_| CookieError::BufferTooSmall)?;
        let out: &'o [u8] = out;
        let text = out.get(..written).ok_or(CookieError::BufferTooSmall)?;
        // base64url output is ASCII, so this never fails.
        std::str::from_utf8(text).map_err(|_| CookieError::Malformed)
    }

    /// Whether `view` was sealed with a key other than the current one: after a rotation the
    /// caller re-seals it (from [`SessionView::as_session_ref`]) so that the old key can be
    /// retired once no cookie needs it.
    pub fn needs_reseal(&self, view: &SessionView<'_>) -> bool {
        view.key_id != self.current_key_id()
    }

    /// [`seal`](Self::seal) into a new `String`, for callers that do not keep buffers.
    pub fn seal_to_string(
        &self,
        cookie_name: &str,
        session: &SessionRef<'_>,
    ) -> Result<String, CookieError> {
        let mut scratch = vec![0u8; SCRATCH_LEN];
        let mut out = vec![0u8; MAX_COOKIE_VALUE_LEN];
        self.seal(cookie_name, session, &mut scratch, &mut out)
            .map(str::to_owned)
    }

    /// Opens a cookie value sealed for `cookie_name` and `app_id`, valid at `now` (Unix seconds).
    ///
    /// Decodes into the front of `scratch` (at least [`SCRATCH_LEN`] bytes) and returns a view
    /// whose strings borrow from it. Allocates nothing and never panics, whatever `value` holds.
    ///
    /// The checks run in this order, and the first failure is returned: length
    /// ([`CookieError::TooLarge`]), base64 ([`CookieError::Base64`]), size
    /// ([`CookieError::TooShort`]), key id ([`CookieError::UnknownKey`]), authentication
    /// including cookie name and app ([`CookieError::Tampered`]), format
    /// ([`CookieError::Malformed`]), expiry ([`CookieError::Expired`]). Nothing is read from the
    /// session before it has authenticated.
    pub fn open<'s>(
        &self,
        cookie_name: &str,
        app_id: &str,
        value: &[u8],
        now: u64,
        scratch: &'s mut [u8],
    ) -> Result<SessionView<'s>, CookieError> {
        if value.len() > MAX_COOKIE_VALUE_LEN {
            return Err(CookieError::TooLarge { len: value.len() });
        }
        let decoded = URL_SAFE_NO_PAD
            .decode_slice(value, &mut *scratch)
            .map_err(|e| match e {
                DecodeSliceError::OutputSliceTooSmall => CookieError::BufferTooSmall,
                _ => CookieError::Base64,
            })?;
        if decoded < OVERHEAD {
            return Err(CookieError::TooShort);
        }
        let sealed: &'s mut [u8] = scratch.get_mut(..decoded).ok_or(CookieError::TooShort)?;
        let (header, body) = sealed.split_at_mut(HEADER_LEN);
        let key_id = header[0];
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&header[1..]);
        let key = self.key(key_id).ok_or(CookieError::UnknownKey)?;
        let aad = binding(key_id, cookie_name, app_id);
        let plain: &'s [u8] = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
            .map_err(|_| CookieError::Tampered)?;
        let mut view = SessionView::decode(plain)?;
        view.key_id = key_id;
        // The binding already covers the app; a mismatch here means a sealing bug, not an attack.
        if view.app_id != app_id {
            return Err(CookieError::Malformed);
        }
        if now >= view.expires_at {
            return Err(CookieError::Expired);
        }
        Ok(view)
    }

    /// [`open`](Self::open) for a connection that sends the same cookie again and again
    /// (keep-alive): when `value` equals the one `memo` remembers for the same cookie name
    /// and app, the plaintext still in `scratch` from that open is decoded again, with no
    /// base64, binding digest or decryption; expiry is checked anew. Otherwise it opens
    /// `value` in full and remembers it. `scratch` must not be used for anything else
    /// between the calls. Allocates only when a longer value than before is remembered.
    pub fn open_memo<'s>(
        &self,
        cookie_name: &str,
        app_id: &str,
        value: &[u8],
        now: u64,
        scratch: &'s mut [u8],
        memo: &mut OpenMemo,
    ) -> Result<SessionView<'s>, CookieError> {
        let same = memo.plain.is_some()
            && memo.keyring == self.generation
            && memo.value == value
            && memo.cookie_name == cookie_name.as_bytes()
            && memo.app_id == app_id.as_bytes();
        if same {
            if let Some((range, key_id)) = memo.plain.clone() {
                let scratch: &'s [u8] = scratch;
                let plain = scratch.get(range).ok_or(CookieError::Malformed)?;
                let mut view = SessionView::decode(plain)?;
                view.key_id = key_id;
                if now >= view.expires_at {
                    return Err(CookieError::Expired);
                }
                return Ok(view);
            }
        }
        memo.plain = None;
        let view = self.open(cookie_name, app_id, value, now, scratch)?;
        // `open` decrypted in place: the plaintext sits after the key id and nonce, and
        // before the tag, of the decoded value (unpadded base64: 3 bytes per 4 characters).
        let decoded = value.len() * 3 / 4;
        let range = HEADER_LEN..decoded.saturating_sub(TAG_LEN);
        memo.value.clear();
        memo.value.extend_from_slice(value);
        memo.cookie_name.clear();
        memo.cookie_name.extend_from_slice(cookie_name.as_bytes());
        memo.app_id.clear();
        memo.app_id.extend_from_slice(app_id.as_bytes());
        memo.plain = Some((range, view.key_id));
        memo.keyring = self.generation;
        Ok(view)
    }

    /// Encodes and encrypts `session` into `sealed`, which is exactly
    /// `OVERHEAD + session.encoded_len()` bytes.
    fn seal_into(
        &self,
        cookie_name: &str,
        session: &SessionRef<'_>,
        sealed: &mut [u8],
    ) -> Result<(), CookieError> {
        let current = &self.keys[0];
        let nonce = random_nonce(&self.rng)?;
        let (header, rest) = sealed.split_at_mut(HEADER_LEN);
        header[0] = current.id;
        header[1..].copy_from_slice(&nonce);
        let plain_len = rest
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(CookieError::BufferTooSmall)?;
        let (body, tag_out) = rest.split_at_mut(plain_len);
        let written = session.encode(body)?;
        if written != plain_len {
            return Err(CookieError::Malformed);
        }
        let aad = binding(current.id, cookie_name, session.app_id);
        let tag = current
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
            // ring fails only for inputs over GCM's 64 GiB limit.
            .map_err(|_| CookieError::TooLarge { len: usize::MAX })?;
        tag_out.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Seals arbitrary `plain` bytes (a pending login, a form token) for the cookie or field
    /// named `name` and the app `app_id`: the same AEAD and binding as sessions, but a
    /// different domain, so neither kind of value opens as the other. Expiry, if any, is the
    /// caller's to put inside `plain`. For cold paths: it allocates.
    pub fn seal_bytes(
        &self,
        name: &str,
        app_id: &str,
        plain: &[u8],
    ) -> Result<String, CookieError> {
        let current = &self.keys[0];
        let nonce = random_nonce(&self.rng)?;
        let mut sealed = Vec::with_capacity(OVERHEAD + plain.len());
        sealed.push(current.id);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plain);
        let aad = bytes_binding(current.id, name, app_id);
        let tag = current
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed[HEADER_LEN..],
            )
            .map_err(|_| CookieError::TooLarge { len: usize::MAX })?;
        sealed.extend_from_slice(tag.as_ref());
        let text = URL_SAFE_NO_PAD.encode(&sealed);
        if text.len() > MAX_COOKIE_VALUE_LEN {
            return Err(CookieError::TooLarge { len: text.len() });
        }
        Ok(text)
    }

    /// Opens a value from [`seal_bytes`](Self::seal_bytes) for the same `name` and `app_id`.
    pub fn open_bytes(
        &self,
        name: &str,
        app_id: &str,
        value: &[u8],
    ) -> Result<Vec<u8>, CookieError> {
        if value.len() > MAX_COOKIE_VALUE_LEN {
            return Err(CookieError::TooLarge { len: value.len() });
        }
        let mut sealed = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| CookieError::Base64)?;
        if sealed.len() < OVERHEAD {
            return Err(CookieError::TooShort);
        }
        let key_id = sealed[0];
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..HEADER_LEN]);
        let key = self.key(key_id).ok_or(CookieError::UnknownKey)?;
        let aad = bytes_binding(key_id, name, app_id);
        let plain_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed[HEADER_LEN..],
            )
            .map_err(|_| CookieError::Tampered)?
            .len();
        sealed.copy_within(HEADER_LEN..HEADER_LEN + plain_len, 0);
        sealed.truncate(plain_len);
        Ok(sealed)
    }

    fn key(&self, id: u8) -> Option<&LessSafeKey> {
        self.keys.iter().find(|k| k.id == id).map(|k| &k.key)
    }
}

impl fmt::Debug for Keyring {
    // Key bytes stay out of logs; the ids are enough to diagnose rotation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

/// Characters of base64 without padding for `n` bytes: `ceil(4n / 3)`.
fn base64_len(n: usize) -> usize {
    n.saturating_mul(4).saturating_add(2) / 3
}

/// Additional authenticated data: key id, then SHA-256 over a domain label and the
/// length-prefixed cookie name and app id (length prefixes keep `("ab", "c")` and `("a", "bc")`
/// apart). Hashing keeps the AAD a fixed-size stack array whatever the name lengths.
fn binding(key_id: u8, cookie_name: &str, app_id: &str) -> [u8; 33] {
    domain_binding(
        b"gatehouse session cookie v1\0",
        key_id,
        cookie_name,
        app_id,
    )
}

/// The binding of [`Keyring::seal_bytes`] values: another domain than sessions.
fn bytes_binding(key_id: u8, name: &str, app_id: &str) -> [u8; 33] {
    domain_binding(b"gatehouse sealed bytes v1\0", key_id, name, app_id)
}

fn domain_binding(domain: &[u8], key_id: u8, cookie_name: &str, app_id: &str) -> [u8; 33] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(domain);
    for part in [cookie_name, app_id] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let digest = ctx.finish();
    let mut aad = [0u8; 33];
    aad[0] = key_id;
    aad[1..].copy_from_slice(digest.as_ref());
    aad
}

/// Random bytes for nonces, fetched from the OS a page at a time.
///
/// A seal needs 12 random bytes; asking the kernel for them each time (one `getrandom` call)
/// costs more than the encryption itself. Each thread keeps its own page, so there is no lock
/// and no sharing between workers. Every nonce is still 96 fresh bits from the OS generator,
/// and bytes are wiped as they are handed out. A forked child would inherit the page, and two
/// processes would then hand out the same nonces under the same key, which breaks AES-GCM:
/// the page records the process id it was filled in and is refilled when that changes.
struct NoncePool {
    bytes: [u8; NONCE_POOL_LEN],
    next: usize,
    pid: u32,
}

const NONCE_POOL_LEN: usize = 4092; // a multiple of NONCE_LEN

thread_local! {
    static NONCE_POOL: std::cell::RefCell<NoncePool> = const {
        std::cell::RefCell::new(NoncePool { bytes: [0; NONCE_POOL_LEN], next: NONCE_POOL_LEN, pid: 0 })
    };
}

fn random_nonce(rng: &SystemRandom) -> Result<[u8; NONCE_LEN], CookieError> {
    NONCE_POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let pid = std::process::id();
        if pool.next + NONCE_LEN > NONCE_POOL_LEN || pool.pid != pid {
            rng.fill(&mut pool.bytes).map_err(|_| CookieError::Rng)?;
            pool.next = 0;
            pool.pid = pid;
        }
        let at = pool.next;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&pool.bytes[at..at + NONCE_LEN]);
        pool.bytes[at..at + NONCE_LEN].fill(0);
        pool.next = at + NONCE_LEN;
        Ok(nonce)
    })
}

#[cfg(test)]
mod tests;
