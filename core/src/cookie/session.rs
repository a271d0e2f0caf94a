//! The session a cookie carries, and its compact binary encoding.
//!
//! Format version 1, all integers big-endian:
//!
//! ```text
//! u8        format version (1)
//! [u8; 16]  session id
//! u64       auth_time
//! u64       issued_at
//! u64       expires_at
//! u32       authentication methods (AuthMethods bits)
//! u8        group count
//! str16     subject, user name, display name, email, app id   (u16 length, UTF-8 bytes)
//! str16     one per group
//! ```
//!
//! Nothing may follow the last group. The fixed part comes first so that decoding reads it with
//! no search; strings are length-prefixed rather than delimited so any byte may appear in them.

use super::CookieError;
use crate::token::Claims;

/// The format version this code writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 1;

/// Most groups one session can carry (the count is one byte).
pub const MAX_GROUPS: usize = 255;

/// Bytes of the fixed part: version, session id, three times, methods, group count.
const FIXED_LEN: usize = 1 + 16 + 8 + 8 + 8 + 4 + 1;

/// A session to seal, borrowing its strings from the caller.
///
/// Build one from verified [`Claims`] with [`SessionRef::from_claims`], or from an opened
/// cookie with [`SessionView::as_session_ref`] to re-seal it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRef<'a> {
    /// The identity provider's stable subject identifier (`sub`).
    pub subject: &'a str,
    /// The user name shown to back ends (`preferred_username`, else email, else subject).
    pub user_name: &'a str,
    /// A human-readable name (`name`); may be empty.
    pub display_name: &'a str,
    /// The e-mail address; may be empty.
    pub email: &'a str,
    /// Group names. Keep only the groups that policies name: every group costs cookie bytes.
    pub groups: GroupList<'a>,
    /// How the user authenticated (`amr`).
    pub auth_methods: AuthMethods,
    /// When the user authenticated, Unix seconds.
    pub auth_time: u64,
    /// When this session was created, Unix seconds.
    pub issued_at: u64,
    /// When this session ends, Unix seconds (see [`session_expiry`]).
    pub expires_at: u64,
    /// The application the session was issued for; the cookie opens only for this app.
    pub app_id: &'a str,
    /// A random identifier for this session (for logs and revocation lists).
    pub session_id: [u8; 16],
}

/// An opened session, borrowing every string from the caller's scratch buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionView<'a> {
    /// See [`SessionRef::subject`].
    pub subject: &'a str,
    /// See [`SessionRef::user_name`].
    pub user_name: &'a str,
    /// See [`SessionRef::display_name`].
    pub display_name: &'a str,
    /// See [`SessionRef::email`].
    pub email: &'a str,
    /// The groups, decoded lazily from the buffer.
    pub groups: Groups<'a>,
    /// See [`SessionRef::auth_methods`].
    pub auth_methods: AuthMethods,
    /// See [`SessionRef::auth_time`].
    pub auth_time: u64,
    /// See [`SessionRef::issued_at`].
    pub issued_at: u64,
    /// See [`SessionRef::expires_at`].
    pub expires_at: u64,
    /// See [`SessionRef::app_id`].
    pub app_id: &'a str,
    /// See [`SessionRef::session_id`].
    pub session_id: [u8; 16],
    /// The id of the key that sealed this cookie; when it is not the keyring's current key,
    /// re-seal the session (see [`crate::Keyring::needs_reseal`]).
    pub key_id: u8,
}

/// Group names to seal: borrowed from owned strings, from string slices, or from an opened
/// session.
#[derive(Clone, Copy, Debug)]
pub enum GroupList<'a> {
    /// Owned names, as in [`Claims::groups`].
    Strings(&'a [String]),
    /// Borrowed names, for example a filtered list.
    Strs(&'a [&'a str]),
    /// The groups of an opened session, re-sealed as they are.
    Encoded(Groups<'a>),
}

/// The groups of an opened session. Iterating decodes them from the buffer; nothing is copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Groups<'a> {
    /// `count` str16 values, checked when the session was opened.
    data: &'a [u8],
    count: u8,
}

/// Iterator over [`Groups`].
#[derive(Clone, Debug)]
pub struct GroupsIter<'a> {
    reader: Reader<'a>,
    remaining: u8,
}

/// Iterator over a [`GroupList`].
#[derive(Clone, Debug)]
pub struct GroupListIter<'a>(GroupListInner<'a>);

#[derive(Clone, Debug)]
enum GroupListInner<'a> {
    Strings(std::slice::Iter<'a, String>),
    Strs(std::slice::Iter<'a, &'a str>),
    Encoded(GroupsIter<'a>),
}

/// One authentication method reference value of RFC 8176 section 2.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// `face`: facial recognition.
    Face,
    /// `fpt`: fingerprint.
    Fpt,
    /// `geo`: geolocation.
    Geo,
    /// `hwk`: proof of possession of a hardware-secured key.
    Hwk,
    /// `iris`: iris scan.
    Iris,
    /// `kba`: knowledge-based authentication.
    Kba,
    /// `mca`: multiple-channel authentication.
    Mca,
    /// `mfa`: multiple-factor authentication.
    Mfa,
    /// `otp`: one-time password.
    Otp,
    /// `pin`: personal identification number.
    Pin,
    /// `pwd`: password.
    Pwd,
    /// `rba`: risk-based authentication.
    Rba,
    /// `retina`: retina scan.
    Retina,
    /// `sc`: smart card.
    Sc,
    /// `sms`: confirmation by text message.
    Sms,
    /// `swk`: proof of possession of a software-secured key.
    Swk,
    /// `tel`: confirmation by telephone call.
    Tel,
    /// `user`: user presence test.
    User,
    /// `vbm`: voice biometric.
    Vbm,
    /// `wia`: Windows integrated authentication.
    Wia,
}

/// A set of [`AuthMethod`]s, stored as one bit each.
///
/// `amr` values outside RFC 8176 are dropped: policies can only name the registered ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AuthMethods(u32);

/// The session end for a token that expires at `token_exp`: the token's expiry, but no later than
/// `max_lifetime_secs` after `now`.
pub fn session_expiry(token_exp: u64, now: u64, max_lifetime_secs: u64) -> u64 {
    token_exp.min(now.saturating_add(max_lifetime_secs))
}

impl<'a> SessionRef<'a> {
    /// A session for verified `claims`, issued at `now` for `app_id`.
    ///
    /// The user name is `preferred_username`, else a verified `email` (`email_verified: true`;
    /// an unverified address could be anyone's), else `sub`; the display name is
    /// `name`, else the user name. `auth_time` falls back to `iat`. The session ends at the
    /// token's `exp`, capped at `max_lifetime_secs` after `now` ([`session_expiry`]).
    pub fn from_claims(
        claims: &'a Claims,
        app_id: &'a str,
        session_id: [u8; 16],
        now: u64,
        max_lifetime_secs: u64,
    ) -> Self {
        let verified_email = claims
            .email
            .as_deref()
            .filter(|_| claims.email_verified == Some(true));
        let user_name = claims
            .preferred_username
            .as_deref()
            .or(verified_email)
            .unwrap_or(claims.sub.as_str());
        SessionRef {
            subject: &claims.sub,
            user_name,
            display_name: claims.name.as_deref().unwrap_or(user_name),
            email: claims.email.as_deref().unwrap_or(""),
            groups: GroupList::Strings(&claims.groups),
            auth_methods: AuthMethods::from_amr(claims.amr.iter().map(String::as_str)),
            auth_time: claims.auth_time.unwrap_or(claims.iat),
            issued_at: now,
            expires_at: session_expiry(claims.exp, now, max_lifetime_secs),
            app_id,
            session_id,
        }
    }

    /// Bytes the binary form of this session takes (before encryption).
    ///
    /// Errors with [`CookieError::TooManyGroups`] past [`MAX_GROUPS`], and with
    /// [`CookieError::TooLarge`] when one string cannot be length-prefixed at all.
    pub fn encoded_len(&self) -> Result<usize, CookieError> {
        let count = self.groups.len();
        if count > MAX_GROUPS {
            return Err(CookieError::TooManyGroups {
                count,
                max: MAX_GROUPS,
            });
        }
        let mut len = FIXED_LEN;
        for s in self.strings().into_iter().chain(self.groups.iter()) {
            if s.len() > usize::from(u16::MAX) {
                return Err(CookieError::TooLarge { len: s.len() });
            }
            len = len.saturating_add(2 + s.len());
        }
        Ok(len)
    }

    /// Writes the binary form into the front of `out`; returns the bytes written.
    pub(crate) fn encode(&self, out: &mut [u8]) -> Result<usize, CookieError> {
        let count = self.groups.len();
        let count = u8::try_from(count).map_err(|_| CookieError::TooManyGroups {
            count,
            max: MAX_GROUPS,
        })?;
        let mut w = Writer { buf: out, pos: 0 };
        w.put(&[FORMAT_VERSION])?;
        w.put(&self.session_id)?;
        w.put(&self.auth_time.to_be_bytes())?;
        w.put(&self.issued_at.to_be_bytes())?;
        w.put(&self.expires_at.to_be_bytes())?;
        w.put(&self.auth_methods.bits().to_be_bytes())?;
        w.put(&[count])?;
        for s in self.strings() {
            w.put_str16(s)?;
        }
        for g in self.groups.iter() {
            w.put_str16(g)?;
        }
        Ok(w.pos)
    }

    /// The strings of the fixed order, before the groups.
    fn strings(&self) -> [&'a str; 5] {
        [
            self.subject,
            self.user_name,
            self.display_name,
            self.email,
            self.app_id,
        ]
    }
}

impl<'a> SessionView<'a> {
    /// The session as a [`SessionRef`], to seal again (for example with a new expiry).
    pub fn as_session_ref(&self) -> SessionRef<'a> {
        SessionRef {
            subject: self.subject,
            user_name: self.user_name,
            display_name: self.display_name,
            email: self.email,
            groups: GroupList::Encoded(self.groups),
            auth_methods: self.auth_methods,
            auth_time: self.auth_time,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            app_id: self.app_id,
            session_id: self.session_id,
        }
    }

    /// Decodes the binary form; every string and group is checked here, so iterating the
    /// groups later cannot fail.
    pub(crate) fn decode(buf: &'a [u8]) -> Result<Self, CookieError> {
        let mut r = Reader { rest: buf };
        if r.u8()? != FORMAT_VERSION {
            return Err(CookieError::Malformed);
        }
        let session_id = r.array16()?;
        let auth_time = r.u64()?;
        let issued_at = r.u64()?;
        let expires_at = r.u64()?;
        let auth_methods = AuthMethods::from_bits(r.u32()?);
        let count = r.u8()?;
        let subject = r.str16()?;
        let user_name = r.str16()?;
        let display_name = r.str16()?;
        let email = r.str16()?;
        let app_id = r.str16()?;
        let groups_start = r.rest;
        for _ in 0..count {
            r.str16()?;
        }
        // Trailing bytes mean a writer this code does not know: refuse rather than guess.
        if !r.rest.is_empty() {
            return Err(CookieError::Malformed);
        }
        Ok(SessionView {
            subject,
            user_name,
            display_name,
            email,
            groups: Groups {
                data: groups_start,
                count,
            },
            auth_methods,
            auth_time,
            issued_at,
            expires_at,
            app_id,
            session_id,
            // Set by `Keyring::open`, which knows the key.
            key_id: 0,
        })
    }
}

impl<'a> GroupList<'a> {
    /// Number of groups.
    pub fn len(&self) -> usize {
        match self {
            GroupList::Strings(s) => s.len(),
            GroupList::Strs(s) => s.len(),
            GroupList::Encoded(g) => g.len(),
        }
    }

    /// Whether there are no groups.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The group names in order.
    pub fn iter(&self) -> GroupListIter<'a> {
        GroupListIter(match *self {
            GroupList::Strings(s) => GroupListInner::Strings(s.iter()),
            GroupList::Strs(s) => GroupListInner::Strs(s.iter()),
            GroupList::Encoded(g) => GroupListInner::Encoded(g.iter()),
        })
    }
}

impl Default for GroupList<'_> {
    fn default() -> Self {
        GroupList::Strs(&[])
    }
}

/// Equal when the names are equal in order, whatever the representation.
impl PartialEq for GroupList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for GroupList<'_> {}

impl<'a> From<&'a [String]> for GroupList<'a> {
    fn from(groups: &'a [String]) -> Self {
        GroupList::Strings(groups)
    }
}

impl<'a> From<&'a Vec<String>> for GroupList<'a> {
    fn from(groups: &'a Vec<String>) -> Self {
        GroupList::Strings(groups)
    }
}

impl<'a> From<&'a [&'a str]> for GroupList<'a> {
    fn from(groups: &'a [&'a str]) -> Self {
        GroupList::Strs(groups)
    }
}

impl<'a> From<Groups<'a>> for GroupList<'a> {
    fn from(groups: Groups<'a>) -> Self {
        GroupList::Encoded(groups)
    }
}

impl<'a> Iterator for GroupListIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match &mut self.0 {
            GroupListInner::Strings(it) => it.next().map(String::as_str),
            GroupListInner::Strs(it) => it.next().copied(),
            GroupListInner::Encoded(it) => it.next(),
        }
    }
}

impl<'a> Groups<'a> {
    /// Number of groups.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there are no groups.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The group names in order.
    pub fn iter(&self) -> GroupsIter<'a> {
        GroupsIter {
            reader: Reader { rest: self.data },
            remaining: self.count,
        }
    }

    /// Whether `name` is one of the groups (exact, case-sensitive match).
    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|g| g == name)
    }
}

impl<'a> IntoIterator for Groups<'a> {
    type Item = &'a str;
    type IntoIter = GroupsIter<'a>;

    fn into_iter(self) -> GroupsIter<'a> {
        self.iter()
    }
}

impl<'a> Iterator for GroupsIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.remaining = self.remaining.checked_sub(1)?;
        // Checked by `SessionView::decode`; a failure here would only end the iteration early.
        self.reader.str16().ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.remaining)))
    }
}

impl AuthMethod {
    /// Every method, in bit order.
    pub const ALL: [AuthMethod; 20] = [
        AuthMethod::Face,
        AuthMethod::Fpt,
        AuthMethod::Geo,
        AuthMethod::Hwk,
        AuthMethod::Iris,
        AuthMethod::Kba,
        AuthMethod::Mca,
        AuthMethod::Mfa,
        AuthMethod::Otp,
        AuthMethod::Pin,
        AuthMethod::Pwd,
        AuthMethod::Rba,
        AuthMethod::Retina,
        AuthMethod::Sc,
        AuthMethod::Sms,
        AuthMethod::Swk,
        AuthMethod::Tel,
        AuthMethod::User,
        AuthMethod::Vbm,
        AuthMethod::Wia,
    ];

    /// The registered `amr` value.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Face => "face",
            AuthMethod::Fpt => "fpt",
            AuthMethod::Geo => "geo",
            AuthMethod::Hwk => "hwk",
            AuthMethod::Iris => "iris",
            AuthMethod::Kba => "kba",
            AuthMethod::Mca => "mca",
            AuthMethod::Mfa => "mfa",
            AuthMethod::Otp => "otp",
            AuthMethod::Pin => "pin",
            AuthMethod::Pwd => "pwd",
            AuthMethod::Rba => "rba",
            AuthMethod::Retina => "retina",
            AuthMethod::Sc => "sc",
            AuthMethod::Sms => "sms",
            AuthMethod::Swk => "swk",
            AuthMethod::Tel => "tel",
            AuthMethod::User => "user",
            AuthMethod::Vbm => "vbm",
            AuthMethod::Wia => "wia",
        }
    }

    /// The method for an `amr` value; `None` for values outside RFC 8176.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    fn bit(self) -> u32 {
        // `ALL` lists every variant, so the position always exists; 0 is never reached.
        let index = Self::ALL.iter().position(|m| *m == self).unwrap_or(0);
        1 << index
    }
}

impl AuthMethods {
    /// Bits that stand for a method; others are dropped on decode.
    const KNOWN: u32 = (1 << AuthMethod::ALL.len()) - 1;

    /// No methods.
    pub const fn empty() -> Self {
        AuthMethods(0)
    }

    /// The methods named in an `amr` claim; unregistered values are ignored.
    pub fn from_amr<'s>(values: impl IntoIterator<Item = &'s str>) -> Self {
        let mut set = Self::empty();
        for m in values.into_iter().filter_map(AuthMethod::from_name) {
            set.insert(m);
        }
        set
    }

    /// The set for a bit pattern from [`bits`](Self::bits); unknown bits are dropped.
    pub fn from_bits(bits: u32) -> Self {
        AuthMethods(bits & Self::KNOWN)
    }

    /// The bit pattern, one bit per [`AuthMethod::ALL`] position.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Adds `method`.
    pub fn insert(&mut self, method: AuthMethod) {
        self.0 |= method.bit();
    }

    /// Whether `method` is in the set.
    pub fn contains(self, method: AuthMethod) -> bool {
        self.0 & method.bit() != 0
    }

    /// Whether the identity provider reported multiple-factor authentication (`amr` has `mfa`).
    pub fn mfa(self) -> bool {
        self.contains(AuthMethod::Mfa)
    }

    /// The methods in the set.
    pub fn iter(self) -> impl Iterator<Item = AuthMethod> {
        AuthMethod::ALL
            .into_iter()
            .filter(move |m| self.contains(*m))
    }
}

/// Bounds-checked writer into a caller's buffer.
struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), CookieError> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .ok_or(CookieError::BufferTooSmall)?;
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(CookieError::BufferTooSmall)?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    fn put_str16(&mut self, s: &str) -> Result<(), CookieError> {
        let len = u16::try_from(s.len()).map_err(|_| CookieError::TooLarge { len: s.len() })?;
        self.put(&len.to_be_bytes())?;
        self.put(s.as_bytes())
    }
}

/// Reader over authenticated plaintext. Any shortfall is [`CookieError::Malformed`]; slicing goes
/// through `get` so no input can make it panic.
#[derive(Clone, Debug)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CookieError> {
        let head = self.rest.get(..n).ok_or(CookieError::Malformed)?;
        self.rest = self.rest.get(n..).ok_or(CookieError::Malformed)?;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CookieError> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| CookieError::Malformed)
    }

    fn u8(&mut self) -> Result<u8, CookieError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, CookieError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CookieError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn array16(&mut self) -> Result<[u8; 16], CookieError> {
        self.array()
    }

    fn str16(&mut self) -> Result<&'a str, CookieError> {
        let len = u16::from_be_bytes(self.array()?);
        let bytes = self.take(usize::from(len))?;
        std::str::from_utf8(bytes).map_err(|_| CookieError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(groups: &'a [&'a str]) -> SessionRef<'a> {
        SessionRef {
            subject: "00u1abcd",
            user_name: "ada",
            display_name: "Ada Lovelace",
            email: "ada@example.com",
            groups: GroupList::Strs(groups),
            auth_methods: AuthMethods::from_amr(["pwd", "mfa", "otp", "x-unknown"]),
            auth_time: 1_700_000_000,
            issued_at: 1_700_000_005,
            expires_at: 1_700_003_600,
            app_id: "wiki",
            session_id: [7; 16],
        }
    }

    #[test]
    fn round_trip_and_encoded_len() {
        let groups = ["eng", "ops", "é-unicode"];
        let session = sample(&groups);
        let mut buf = [0u8; 512];
        let n = session.encode(&mut buf).expect("fits");
        assert_eq!(n, session.encoded_len().expect("len"));
        let view = SessionView::decode(&buf[..n]).expect("decodes");
        assert_eq!(view.as_session_ref(), session);
        assert_eq!(view.groups.iter().collect::<Vec<_>>(), groups);
        assert!(view.groups.contains("ops"));
        assert!(!view.groups.contains("Ops"));
        assert!(view.auth_methods.mfa());
        assert!(view.auth_methods.contains(AuthMethod::Pwd));
        assert!(!view.auth_methods.contains(AuthMethod::Sms));
    }

    #[test]
    fn empty_groups_round_trip() {
        let session = sample(&[]);
        let mut buf = [0u8; 256];
        let n = session.encode(&mut buf).expect("fits");
        let view = SessionView::decode(&buf[..n]).expect("decodes");
        assert!(view.groups.is_empty());
        assert_eq!(view.groups.iter().next(), None);
    }

    #[test]
    fn every_truncation_is_malformed() {
        let groups = ["eng", "ops"];
        let session = sample(&groups);
        let mut buf = [0u8; 512];
        let n = session.encode(&mut buf).expect("fits");
        for cut in 0..n {
            assert_eq!(
                SessionView::decode(&buf[..cut]),
                Err(CookieError::Malformed),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn trailing_bytes_and_unknown_version_are_malformed() {
        let session = sample(&[]);
        let mut buf = [0u8; 256];
        let n = session.encode(&mut buf).expect("fits");
        assert_eq!(
            SessionView::decode(&buf[..n + 1]),
            Err(CookieError::Malformed)
        );
        buf[0] = 2;
        assert_eq!(SessionView::decode(&buf[..n]), Err(CookieError::Malformed));
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let session = SessionRef {
            subject: "ab",
            ..sample(&[])
        };
        let mut buf = [0u8; 256];
        let n = session.encode(&mut buf).expect("fits");
        // The subject bytes follow the fixed part and its 2-byte length.
        buf[FIXED_LEN + 2] = 0xff;
        assert_eq!(SessionView::decode(&buf[..n]), Err(CookieError::Malformed));
    }

    #[test]
    fn small_buffer_is_reported() {
        let session = sample(&[]);
        let mut buf = [0u8; 10];
        assert_eq!(session.encode(&mut buf), Err(CookieError::BufferTooSmall));
    }

    #[test]
    fn too_many_groups() {
        let names: Vec<String> = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
        let session = SessionRef {
            groups: GroupList::Strings(&names),
            ..sample(&[])
        };
        assert_eq!(
            session.encoded_len(),
            Err(CookieError::TooManyGroups {
                count: MAX_GROUPS + 1,
                max: MAX_GROUPS
            })
        );
    }

    #[test]
    fn group_lists_compare_by_content() {
        let owned = vec!["a".to_owned(), "b".to_owned()];
        let borrowed = ["a", "b"];
        assert_eq!(GroupList::from(&owned), GroupList::Strs(&borrowed));
        assert_ne!(GroupList::from(&owned), GroupList::Strs(&borrowed[..1]));
    }

    #[test]
    fn auth_method_names_round_trip() {
        for m in AuthMethod::ALL {
            assert_eq!(AuthMethod::from_name(m.name()), Some(m));
            let mut set = AuthMethods::empty();
            set.insert(m);
            assert_eq!(set.iter().collect::<Vec<_>>(), [m]);
            assert_eq!(AuthMethods::from_bits(set.bits()), set);
        }
        assert_eq!(
            AuthMethods::from_bits(u32::MAX).iter().count(),
            AuthMethod::ALL.len()
        );
    }

    #[test]
    fn session_expiry_caps_the_token_lifetime() {
        assert_eq!(session_expiry(1_000, 100, 10_000), 1_000);
        assert_eq!(session_expiry(1_000_000, 100, 10_000), 10_100);
        assert_eq!(session_expiry(u64::MAX, u64::MAX - 1, 10), u64::MAX);
    }

    #[test]
    fn from_claims_picks_names() {
        let claims = Claims {
            sub: "s-1".to_owned(),
            email: Some("e@example.com".to_owned()),
            groups: vec!["g".to_owned()],
            amr: vec!["mfa".to_owned()],
            iat: 50,
            exp: 10_000,
            ..Claims::default()
        };
        // An unverified address is not a user name.
        let s = SessionRef::from_claims(&claims, "app", [1; 16], 100, 3_600);
        assert_eq!(s.user_name, "s-1");
        let verified = Claims {
            email_verified: Some(true),
            ..claims.clone()
        };
        let s = SessionRef::from_claims(&verified, "app", [1; 16], 100, 3_600);
        assert_eq!(s.user_name, "e@example.com");
        assert_eq!(s.display_name, "e@example.com");
        assert_eq!(s.auth_time, 50);
        assert_eq!(s.expires_at, 3_700);
        assert!(s.auth_methods.mfa());
        assert_eq!(s.groups.iter().collect::<Vec<_>>(), ["g"]);
    }
}
