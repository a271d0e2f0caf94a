//! TLS 1.3 application traffic on our own record layer, after rustls did the handshake.
//!
//! Why: rustls 0.23 copies every record it encrypts into a fresh `Vec` and every record it
//! decrypts into another one, a heap allocation per record on the hot path in each direction.
//! Here a received record is decrypted where it was read and a sent one is encrypted where it
//! is written: one copy of the plaintext each way and no allocation. rustls keeps what needs
//! its key schedule: [`KernelConnection`] derives the next keys when either side sends a
//! KeyUpdate, and takes the session tickets a server sends to a client.
//!
//! The record layer is RFC 8446 section 5: outer type `application_data`, legacy version
//! 0x0303, the AEAD nonce the write IV XOR the 64-bit sequence number, the record header as
//! additional data, the real content type after the plaintext followed by zero padding.
//! Only TLS 1.3 with the three AEADs of its cipher suites is taken over; anything else stays on
//! rustls ([`supported`]).

use std::ops::Range;

use bytes::BytesMut;
use ring::aead::{
    Aad, Algorithm, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305,
};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::pki_types::CertificateDer;
use rustls::server::ServerConnectionData;
use rustls::{
    AlertDescription, CipherSuite, ConnectionTrafficSecrets, ContentType, ExtractedSecrets,
    HandshakeType, ProtocolVersion,
};
use zeroize::Zeroize;

/// Alert levels (RFC 8446 6).
const WARNING: u8 = 1;
const FATAL: u8 = 2;

/// Most plaintext bytes in one record (RFC 8446 5.1).
pub(super) const MAX_PLAINTEXT: usize = 16 * 1024;
/// Record header bytes.
const HEADER: usize = 5;
/// AEAD tag bytes (all three AEADs).
const TAG: usize = 16;
/// Most ciphertext bytes in one record (RFC 8446 5.2: 2^14 + 256).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// Limits on what a peer may send that costs us work but carries no data, taken from rustls
/// (its `TemperCounters` and deframer, after BoringSSL) so that our layer is at least as strict:
/// KeyUpdate messages between two non-empty application-data records (rustls resets its count
/// on any application data, an empty record included; we do not, so alternating empty records
/// and KeyUpdates is cut off too).
const MAX_KEY_UPDATES: u8 = 32;
/// Consecutive records with no content.
const MAX_EMPTY_RECORDS: u8 = 32;
/// user_canceled warning alerts over the life of the connection.
const MAX_WARNING_ALERTS: u8 = 4;
/// Longest post-handshake message reassembled across records (rustls: 0xffff).
const MAX_HANDSHAKE_MESSAGE: usize = 0xffff;
/// Handshake message header: type and 24-bit length.
const HANDSHAKE_HEADER: usize = 4;
/// Records a key protects before we replace it whatever its cipher (rustls's soft limit):
/// far from 2^64, where the sequence number would wrap (RFC 8446 5.3).
const SEQ_SOFT_LIMIT: u64 = 0xffff_ffff_ffff_0000;
/// What one record adds to its plaintext when we send it: header, content type, tag.
pub(super) const OVERHEAD: usize = HEADER + 1 + TAG;
/// The KeyUpdate message we send: update_not_requested (RFC 8446 4.6.3).
const KEY_UPDATE: [u8; 5] = [24, 0, 0, 1, 0];
/// Bytes of the record that carries our KeyUpdate.
pub(super) const KEY_UPDATE_RECORD: usize = KEY_UPDATE.len() + OVERHEAD;

/// Whether a connection that negotiated `version` and `suite` can move to [`Tls13Records`].
pub(super) fn supported(version: Option<ProtocolVersion>, suite: Option<CipherSuite>) -> bool {
    version == Some(ProtocolVersion::TLSv1_3)
        && matches!(
            suite,
            Some(
                CipherSuite::TLS13_AES_128_GCM_SHA256
                    | CipherSuite::TLS13_AES_256_GCM_SHA384
                    | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            )
        )
}

/// The key schedule, kept by rustls.
enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn update_rx(&mut self) -> Result<ConnectionTrafficSecrets, rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_rx_secret().map(|(_, s)| s),
            Kernel::Server(k) => k.update_rx_secret().map(|(_, s)| s),
        }
    }

    fn update_tx(&mut self) -> Result<ConnectionTrafficSecrets, rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_tx_secret().map(|(_, s)| s),
            Kernel::Server(k) => k.update_tx_secret().map(|(_, s)| s),
        }
    }
}

/// One direction's key, IV and sequence number.
struct Direction {
    /// The expanded key (AES round keys and GHASH table: 544 bytes), built from `secret` when
    /// needed and dropped while the connection is parked ([`Tls13Records::park`]).
    key: Option<Box<LessSafeKey>>,
    algorithm: &'static Algorithm,
    secret: [u8; 32],
    secret_len: usize,
    iv: [u8; 12],
    seq: u64,
    /// Records this key may protect before it must be replaced (RFC 8446 5.5).
    limit: u64,
}

impl Drop for Direction {
    /// The traffic key and IV do not outlive their use: on a key update the old direction is
    /// dropped, and so is every direction when the connection ends. (ring's expanded key
    /// schedule in `key` offers no way to wipe it; it is freed.)
    fn drop(&mut self) {
        self.wipe();
    }
}

impl Direction {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<Self, rustls::Error> {
        let (algorithm, key, iv, limit) = match &secrets {
            // rustls's confidentiality limit for AES-GCM in TLS (its 2^23 is for QUIC): RFC
            // 8446 5.5 allows about 2^24.5 full-size records per key. ChaCha20-Poly1305 has
            // none that a 64-bit sequence number can reach.
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv, 1 << 24),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv, 1 << 24),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&CHACHA20_POLY1305, key, iv, u64::MAX)
            }
            _ => return Err(rustls::Error::General("unsupported TLS 1.3 AEAD".into())),
        };
        let iv: [u8; 12] = iv
            .as_ref()
            .try_into()
            .map_err(|_| rustls::Error::General("bad TLS 1.3 IV".into()))?;
        let key = key.as_ref();
        let mut secret = [0u8; 32];
        secret
            .get_mut(..key.len())
            .ok_or_else(|| rustls::Error::General("bad TLS 1.3 traffic key".into()))?
            .copy_from_slice(key);
        let mut direction = Direction {
            key: None,
            algorithm,
            secret,
            secret_len: key.len(),
            iv,
            seq,
            limit: limit.min(SEQ_SOFT_LIMIT),
        };
        secret.zeroize();
        direction.key()?;
        Ok(direction)
    }

    fn wipe(&mut self) {
        self.secret.zeroize();
        self.iv.zeroize();
    }

    /// The expanded key, built again after a park.
    fn key(&mut self) -> Result<&LessSafeKey, rustls::Error> {
        if self.key.is_none() {
            let key = UnboundKey::new(self.algorithm, &self.secret[..self.secret_len])
                .map_err(|_| rustls::Error::General("bad TLS 1.3 traffic key".into()))?;
            self.key = Some(Box::new(LessSafeKey::new(key)));
        }
        Ok(self.key.as_deref().expect("built above"))
    }

    /// The nonce for the current record; then counts it. Fails, before anything is sealed or
    /// opened, once the sequence number has no successor (RFC 8446 5.3: it must not wrap).
    fn next_nonce(&mut self) -> Result<Nonce, rustls::Error> {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or(rustls::Error::EncryptError)?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// A TLS 1.3 connection after its handshake: both directions' keys and what the handshake
/// told about the peer.
pub(super) struct Tls13Records {
    kernel: Kernel,
    rx: Direction,
    tx: Direction,
    alpn: Option<Vec<u8>>,
    peer_certificates: Option<Vec<CertificateDer<'static>>>,
    /// The peer asked us to update our keys (KeyUpdate with update_requested): our KeyUpdate
    /// goes out before our next application data (RFC 8446 4.6.3). One pending answer covers
    /// any number of requests, so a peer that asks while we send nothing queues nothing.
    key_update_due: bool,
    /// KeyUpdates received since the last non-empty application-data record.
    key_updates: u8,
    /// Records in a row with no content.
    empty_records: u8,
    /// user_canceled alerts received.
    warning_alerts: u8,
    /// The start of a handshake message whose end is in a later record.
    fragment: Vec<u8>,
    /// The peer sent close_notify: whatever follows is ignored (RFC 8446 6.1).
    peer_closed: bool,
}

impl std::fmt::Debug for Tls13Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls13Records")
            .field("rx_seq", &self.rx.seq)
            .field("tx_seq", &self.tx.seq)
            .finish_non_exhaustive()
    }
}

/// The peer's records after the handshake: what [`Tls13Records::open`] found.
#[derive(Debug, Default)]
pub(super) struct Opened {
    /// Bytes of complete records processed (remove them from the read buffer).
    pub(super) consumed: usize,
    /// The peer sent close_notify.
    pub(super) peer_closed: bool,
}

impl Tls13Records {
    pub(super) fn server(
        secrets: ExtractedSecrets,
        kernel: KernelConnection<ServerConnectionData>,
        alpn: Option<Vec<u8>>,
        peer_certificates: Option<Vec<CertificateDer<'static>>>,
    ) -> Result<Self, rustls::Error> {
        Self::new(secrets, Kernel::Server(kernel), alpn, peer_certificates)
    }

    pub(super) fn client(
        secrets: ExtractedSecrets,
        kernel: KernelConnection<ClientConnectionData>,
        alpn: Option<Vec<u8>>,
        peer_certificates: Option<Vec<CertificateDer<'static>>>,
    ) -> Result<Self, rustls::Error> {
        Self::new(secrets, Kernel::Client(kernel), alpn, peer_certificates)
    }

    fn new(
        secrets: ExtractedSecrets,
        kernel: Kernel,
        alpn: Option<Vec<u8>>,
        peer_certificates: Option<Vec<CertificateDer<'static>>>,
    ) -> Result<Self, rustls::Error> {
        let (rx_seq, rx) = secrets.rx;
        let (tx_seq, tx) = secrets.tx;
        Ok(Tls13Records {
            kernel,
            rx: Direction::new(rx_seq, rx)?,
            tx: Direction::new(tx_seq, tx)?,
            alpn,
            peer_certificates,
            key_update_due: false,
            key_updates: 0,
            empty_records: 0,
            warning_alerts: 0,
            fragment: Vec::new(),
            peer_closed: false,
        })
    }

    /// Drops both expanded keys (1.1 KiB) while the connection waits idle; they are built again
    /// from the secrets when it reads or writes.
    pub(super) fn park(&mut self) {
        self.rx.key = None;
        self.tx.key = None;
    }

    pub(super) fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    pub(super) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.peer_certificates.as_deref()
    }

    /// Whether the peer asked for a KeyUpdate that we have not sent yet.
    pub(super) fn key_update_due(&self) -> bool {
        self.key_update_due
    }

    /// Decrypts the complete records at the start of `incoming` in place and appends their
    /// application data to `plain`. Nothing is sent from here: a KeyUpdate the peer asks for
    /// is sent by the next write ([`Tls13Records::answer_key_update`],
    /// [`Tls13Records::encrypt`]). On error the alert for the peer, when one applies, is in
    /// `alerts`. After close_notify everything is consumed unread (RFC 8446 6.1: "Any data
    /// received after a closure alert has been received MUST be ignored").
    pub(super) fn open(
        &mut self,
        incoming: &mut [u8],
        plain: &mut BytesMut,
        alerts: &mut Vec<u8>,
    ) -> Result<Opened, rustls::Error> {
        let mut consumed = 0;
        while !self.peer_closed {
            let Some((kind, body, len)) = self.open_one(&mut incoming[consumed..], alerts)? else {
                break;
            };
            let body = &incoming[consumed + body.start..consumed + body.end];
            consumed += len;
            self.count_empty(body.is_empty(), alerts)?;
            // RFC 8446 5.1: a handshake message split over records is not interleaved with
            // other record types.
            if !self.fragment.is_empty() && kind != ContentType::Handshake {
                return Err(self.fail(alerts, AlertDescription::UnexpectedMessage));
            }
            match kind {
                ContentType::ApplicationData => {
                    if !body.is_empty() {
                        self.key_updates = 0;
                    }
                    plain.extend_from_slice(body);
                }
                ContentType::Alert => self.alert(body, alerts)?,
                ContentType::Handshake => self.handshake(body, alerts)?,
                _ => return Err(self.fail(alerts, AlertDescription::UnexpectedMessage)),
            }
        }
        if self.peer_closed {
            consumed = incoming.len();
        }
        Ok(Opened {
            consumed,
            peer_closed: self.peer_closed,
        })
    }

    /// Decrypts the record at the start of `buf`: (inner content type, its plaintext's range in
    /// `buf`, the record's length), or `None` if the record is not complete yet.
    fn open_one(
        &mut self,
        buf: &mut [u8],
        alerts: &mut Vec<u8>,
    ) -> Result<Option<(ContentType, Range<usize>, usize)>, rustls::Error> {
        let Some(header) = buf.get(..HEADER) else {
            return Ok(None);
        };
        let header: [u8; HEADER] = header.try_into().expect("five bytes");
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        // After the handshake every record is protected, so its outer type is
        // application_data (RFC 8446 5.2); a plaintext alert or change_cipher_spec here is
        // an unexpected message. The legacy version is ignored (RFC 8446 5.1); the header is
        // authenticated as it came, as the additional data.
        if header[0] != u8::from(ContentType::ApplicationData) {
            return Err(self.fail(alerts, AlertDescription::UnexpectedMessage));
        }
        if len > MAX_CIPHERTEXT {
            return Err(self.fail(alerts, AlertDescription::RecordOverflow));
        }
        if len < TAG + 1 {
            return Err(self.fail(alerts, AlertDescription::DecodeError));
        }
        let Some(ciphertext) = buf.get_mut(HEADER..HEADER + len) else {
            return Ok(None);
        };
        let Ok(nonce) = self.rx.next_nonce() else {
            // The peer's sequence number would wrap: it should have updated its keys.
            return Err(self.fail(alerts, AlertDescription::UnexpectedMessage));
        };
        let Ok(plaintext) = self
            .rx
            .key()?
            .open_in_place(nonce, Aad::from(header), ciphertext)
        else {
            return Err(self.fail(alerts, AlertDescription::BadRecordMac));
        };
        // The real content type is the last non-zero byte; zeros after it are padding.
        // RFC 8446 5.4: the inner plaintext (content, type, padding) is at most 2^14 + 1 bytes.
        if plaintext.len() > MAX_PLAINTEXT + 1 {
            return Err(self.fail(alerts, AlertDescription::RecordOverflow));
        }
        let Some(last) = plaintext.iter().rposition(|&b| b != 0) else {
            return Err(self.fail(alerts, AlertDescription::UnexpectedMessage));
        };
        let kind = ContentType::from(plaintext[last]);
        Ok(Some((kind, HEADER..HEADER + last, HEADER + len)))
    }

    /// Counts a record with no content; too many in a row end the connection.
    fn count_empty(&mut self, empty: bool, alerts: &mut Vec<u8>) -> Result<(), rustls::Error> {
        if !empty {
            self.empty_records = 0;
            return Ok(());
        }
        self.empty_records += 1;
        if self.empty_records > MAX_EMPTY_RECORDS {
            return Err(self.fail(alerts, AlertDescription::UnexpectedMessage));
        }
        Ok(())
    }

    /// An alert from the peer: close_notify ends its side; user_canceled is allowed a few
    /// times; anything else is an error alert.
    fn alert(&mut self, body: &[u8], alerts: &mut Vec<u8>) -> Result<(), rustls::Error> {
        let [level, description] = body else {
            return Err(self.fail(alerts, AlertDescription::DecodeError));
        };
        if !matches!(*level, WARNING | FATAL) {
            return Err(self.fail(alerts, AlertDescription::IllegalParameter));
        }
        match AlertDescription::from(*description) {
            AlertDescription::CloseNotify => self.peer_closed = true,
            // RFC 8446 6.1: user_canceled is followed by close_notify; sent as fatal, it ends
            // the connection like any fatal alert.
            AlertDescription::UserCanceled if *level == WARNING => {
                self.warning_alerts += 1;
                if self.warning_alerts > MAX_WARNING_ALERTS {
                    return Err(self.fail(alerts, AlertDescription::UnexpectedMessage));
                }
            }
            // RFC 8446 6.2: every other alert is an error alert, whatever its level, and
            // ends the connection; none is sent in answer.
            other => return Err(rustls::Error::AlertReceived(other)),
        }
        Ok(())
    }

    /// The content of a handshake record: messages after the handshake (KeyUpdate, and
    /// NewSessionTicket to a client), reassembled when one spans records.
    fn handshake(&mut self, body: &[u8], alerts: &mut Vec<u8>) -> Result<(), rustls::Error> {
        // RFC 8446 5.1: handshake records are never empty.
        if body.is_empty() {
            return Err(self.fail(alerts, AlertDescription::UnexpectedMessage));
        }
        if self.fragment.is_empty() {
            // The usual case: whole messages in this record.
            let left = self.handshake_messages(body, alerts)?;
            self.fragment.extend_from_slice(&body[body.len() - left..]);
            return Ok(());
        }
        // A message begun in an earlier record: the new piece is appended once, and the
        // fragment moves only when a message in it is complete (so a peer that sends a large
        // message a byte per record costs linear work, not a copy of it per record).
        let mut fragment = std::mem::take(&mut self.fragment);
        fragment.extend_from_slice(body);
        let left = self.handshake_messages(&fragment, alerts)?;
        let done = fragment.len() - left;
        fragment.drain(..done);
        self.fragment = fragment;
        Ok(())
    }

    /// Handles the whole messages at the start of `data`; returns how many bytes are left at
    /// its end (the start of a message to be continued). A message header is checked as soon
    /// as it is complete: its type must be one this end takes after the handshake, and its
    /// length within bounds, before any of its body is kept.
    fn handshake_messages(
        &mut self,
        mut data: &[u8],
        alerts: &mut Vec<u8>,
    ) -> Result<usize, rustls::Error> {
        while let Some(header) = data.get(..HANDSHAKE_HEADER) {
            let len =
                usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
            let expected = match (HandshakeType::from(header[0]), &self.kernel) {
                (HandshakeType::KeyUpdate, _) => len == 1,
                (HandshakeType::NewSessionTicket, Kernel::Client(_)) => true,
                _ => return Err(self.fail(alerts, AlertDescription::UnexpectedMessage)),
            };
            if !expected || len > MAX_HANDSHAKE_MESSAGE {
                return Err(self.fail(alerts, AlertDescription::DecodeError));
            }
            let Some(message) = data.get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + len) else {
                break;
            };
            let rest = &data[HANDSHAKE_HEADER + len..];
            self.handshake_message(header[0], message, rest.is_empty(), alerts)?;
            data = rest;
        }
        Ok(data.len())
    }

    /// One whole handshake message; `ends_record` says whether it ends its record.
    fn handshake_message(
        &mut self,
        kind: u8,
        message: &[u8],
        ends_record: bool,
        alerts: &mut Vec<u8>,
    ) -> Result<(), rustls::Error> {
        match (HandshakeType::from(kind), &mut self.kernel) {
            (HandshakeType::KeyUpdate, _) => {
                // RFC 8446 4.6.3: request_update is 0 or 1; anything else is an
                // illegal_parameter. The message is exactly that byte.
                let requested = match message {
                    [0] => false,
                    [1] => true,
                    [_] => return Err(self.fail(alerts, AlertDescription::IllegalParameter)),
                    _ => return Err(self.fail(alerts, AlertDescription::DecodeError)),
                };
                // RFC 8446 5.1: a KeyUpdate must end its record (the keys change after it).
                if !ends_record {
                    return Err(self.fail(alerts, AlertDescription::UnexpectedMessage));
                }
                self.key_updates += 1;
                if self.key_updates > MAX_KEY_UPDATES {
                    return Err(self.fail(alerts, AlertDescription::UnexpectedMessage));
                }
                let secrets = match self.kernel.update_rx() {
                    Ok(secrets) => secrets,
                    Err(e) => {
                        let _ = self.fail(alerts, AlertDescription::InternalError);
                        return Err(e);
                    }
                };
                self.rx = Direction::new(0, secrets)?;
                self.key_update_due |= requested;
            }
            (HandshakeType::NewSessionTicket, Kernel::Client(kernel)) => {
                if let Err(e) = kernel.handle_new_session_ticket(message) {
                    let _ = self.fail(alerts, AlertDescription::DecodeError);
                    return Err(e);
                }
            }
            _ => return Err(self.fail(alerts, AlertDescription::UnexpectedMessage)),
        }
        Ok(())
    }

    /// Seals the KeyUpdate the peer asked for, if one is due, into `out` (at least
    /// [`KEY_UPDATE_RECORD`] bytes). Returns the bytes written.
    pub(super) fn answer_key_update(&mut self, out: &mut [u8]) -> Result<usize, rustls::Error> {
        if !self.key_update_due {
            return Ok(0);
        }
        self.key_update_due = false;
        self.update_tx(out)
    }

    /// Sends KeyUpdate (update_not_requested) under the current key, then switches to the next.
    /// Returns the bytes written to `out`.
    fn update_tx(&mut self, out: &mut [u8]) -> Result<usize, rustls::Error> {
        let n = self.seal(ContentType::Handshake, &KEY_UPDATE, out)?;
        let secrets = self.kernel.update_tx()?;
        self.tx = Direction::new(0, secrets)?;
        Ok(n)
    }

    /// Queues a fatal alert for the peer and returns the error it stands for.
    fn fail(&mut self, alerts: &mut Vec<u8>, description: AlertDescription) -> rustls::Error {
        let alert = [FATAL, u8::from(description)];
        // The error returned says what went wrong; an alert that cannot be sealed is not sent.
        let _ = append_sealed(alerts, alert.len() + OVERHEAD, |out| {
            self.seal(ContentType::Alert, &alert, out)
        });
        match description {
            AlertDescription::BadRecordMac => rustls::Error::DecryptError,
            AlertDescription::RecordOverflow => rustls::Error::PeerSentOversizedRecord,
            other => rustls::Error::General(format!("peer's TLS record: {other:?}")),
        }
    }

    /// Encrypts one record of `kind` holding `plaintext` (at most [`MAX_PLAINTEXT`]) into the
    /// start of `out`, which has room for it plus [`OVERHEAD`]. Returns the record's length.
    fn seal(
        &mut self,
        kind: ContentType,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, rustls::Error> {
        self.seal_with(kind, plaintext.len(), out, |body| {
            body.copy_from_slice(plaintext)
        })
    }

    /// Like [`Tls13Records::seal`] for `len` bytes of plaintext that `fill` writes into the
    /// record's body, where they are then encrypted: the plaintext is copied once, from
    /// wherever it lies straight into its place in the record.
    fn seal_with(
        &mut self,
        kind: ContentType,
        len: usize,
        out: &mut [u8],
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<usize, rustls::Error> {
        let inner = len + 1;
        let record = inner + TAG;
        if len > MAX_PLAINTEXT || out.len() < HEADER + record {
            return Err(rustls::Error::EncryptError);
        }
        let header = [
            u8::from(ContentType::ApplicationData),
            3,
            3,
            (record >> 8) as u8,
            record as u8,
        ];
        out[..HEADER].copy_from_slice(&header);
        fill(&mut out[HEADER..HEADER + len]);
        out[HEADER + len] = u8::from(kind);
        let nonce = self.tx.next_nonce()?;
        let tag = self
            .tx
            .key()?
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[HEADER..HEADER + inner])
            .map_err(|_| rustls::Error::EncryptError)?;
        out[HEADER + inner..HEADER + record].copy_from_slice(tag.as_ref());
        Ok(HEADER + record)
    }

    /// Bytes that [`Tls13Records::encrypt`] writes for `plaintext` bytes (a KeyUpdate that
    /// may come first included).
    pub(super) fn sealed_len(plaintext: usize) -> usize {
        plaintext + plaintext.div_ceil(MAX_PLAINTEXT).max(1) * OVERHEAD + KEY_UPDATE_RECORD
    }

    /// Encrypts `parts`, taken as one byte sequence, as application data records into `out`:
    /// every record but the last full, each gathered from the parts straight into its place.
    /// A KeyUpdate goes first when the peer asked for one or the key reached its limit.
    /// Returns the bytes written, or `Err(needed)` if `out` is smaller than
    /// [`Tls13Records::sealed_len`] of their total.
    pub(super) fn encrypt(
        &mut self,
        parts: &[&[u8]],
        out: &mut [u8],
    ) -> Result<Result<usize, usize>, rustls::Error> {
        let mut remaining: usize = parts.iter().map(|p| p.len()).sum();
        let needed = Self::sealed_len(remaining);
        if out.len() < needed {
            return Ok(Err(needed));
        }
        let mut written = 0;
        let mut source = Gather::new(parts);
        while remaining > 0 {
            if self.key_update_due || self.tx.seq >= self.tx.limit {
                // One update serves both reasons; after it the sequence starts at 0, far
                // below any limit, so at most one is written per call.
                self.key_update_due = false;
                written += self.update_tx(&mut out[written..])?;
            }
            let len = remaining.min(MAX_PLAINTEXT);
            written += self.seal_with(
                ContentType::ApplicationData,
                len,
                &mut out[written..],
                |body| source.fill(body),
            )?;
            remaining -= len;
        }
        Ok(Ok(written))
    }

    /// Seals `inner` as the whole inner plaintext of a record (content, type byte, padding:
    /// any bytes at all) and appends the record to `wire`, as a peer that breaks the rules
    /// might; with `key_update`, then moves to the next sending key.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn seal_inner(
        &mut self,
        inner: &[u8],
        key_update: bool,
        wire: &mut Vec<u8>,
    ) -> Result<(), rustls::Error> {
        let (content, kind) = match inner.split_last() {
            Some((&kind, content)) => (content, ContentType::from(kind)),
            None => return Err(rustls::Error::EncryptError),
        };
        append_sealed(wire, inner.len() + OVERHEAD, |out| {
            self.seal(kind, content, out)
        })?;
        if key_update {
            let secrets = self.kernel.update_tx()?;
            self.tx = Direction::new(0, secrets)?;
        }
        Ok(())
    }

    /// Encrypts a close_notify alert into `out` (at least [`OVERHEAD`] + 2 bytes).
    pub(super) fn close_notify(&mut self, out: &mut [u8]) -> Result<usize, rustls::Error> {
        let alert = [WARNING, u8::from(AlertDescription::CloseNotify)];
        self.seal(ContentType::Alert, &alert, out)
    }
}

/// A read position in a sequence of byte slices taken as one.
pub(super) struct Gather<'a> {
    parts: &'a [&'a [u8]],
    index: usize,
    offset: usize,
}

impl<'a> Gather<'a> {
    pub(super) fn new(parts: &'a [&'a [u8]]) -> Self {
        Gather {
            parts,
            index: 0,
            offset: 0,
        }
    }

    /// What is left of the part at the read position, past any finished or empty parts (the
    /// caller knows some bytes are left).
    pub(super) fn current(&mut self) -> &'a [u8] {
        while self.offset == self.parts[self.index].len() {
            self.index += 1;
            self.offset = 0;
        }
        &self.parts[self.index][self.offset..]
    }

    /// Moves past `n` bytes of [`Gather::current`].
    pub(super) fn advance(&mut self, n: usize) {
        self.offset += n;
    }

    /// Copies the next `dst.len()` bytes into `dst` (the caller knows that many are left).
    pub(super) fn fill(&mut self, dst: &mut [u8]) {
        let mut filled = 0;
        while filled < dst.len() {
            let part = self.current();
            let n = part.len().min(dst.len() - filled);
            dst[filled..filled + n].copy_from_slice(&part[..n]);
            filled += n;
            self.advance(n);
        }
    }
}

/// Appends to `queued` what `seal` writes into `room` fresh bytes; nothing on error.
fn append_sealed<E>(
    queued: &mut Vec<u8>,
    room: usize,
    seal: impl FnOnce(&mut [u8]) -> Result<usize, E>,
) -> Result<(), E> {
    let start = queued.len();
    queued.resize(start + room, 0);
    match seal(&mut queued[start..]) {
        Ok(n) => {
            queued.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            queued.truncate(start);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tls_pair::{pair, SUITES};
    use super::*;

    /// One record of `kind` holding `content`, sealed by `from`.
    fn record(from: &mut Tls13Records, kind: ContentType, content: &[u8]) -> Vec<u8> {
        let mut out = vec![0; content.len() + OVERHEAD];
        let n = from.seal(kind, content, &mut out).expect("seal");
        out.truncate(n);
        out
    }

    /// A KeyUpdate from `from` (asking for ours when `requested`); `from` then sends under its
    /// next key, as a peer would.
    fn key_update(from: &mut Tls13Records, requested: bool) -> Vec<u8> {
        let wire = record(
            from,
            ContentType::Handshake,
            &[24, 0, 0, 1, requested.into()],
        );
        let secrets = from.kernel.update_tx().expect("next key");
        from.tx = Direction::new(0, secrets).expect("key");
        wire
    }

    /// What `to` reads from `wire`: its plaintext, or the error and the alert it queued.
    fn open_all(to: &mut Tls13Records, wire: &mut [u8]) -> Result<(Vec<u8>, Opened), String> {
        let mut plain = BytesMut::new();
        let mut alerts = Vec::new();
        match to.open(wire, &mut plain, &mut alerts) {
            Ok(opened) => Ok((plain.to_vec(), opened)),
            Err(e) => Err(format!("{e:?} alert {}", alerts.len())),
        }
    }

    /// The alert description `to` sent in `alerts`, decrypted by `peer`.
    fn alert_sent(peer: &mut Tls13Records, alerts: &mut [u8]) -> AlertDescription {
        let Err(rustls::Error::AlertReceived(description)) =
            peer.open(alerts, &mut BytesMut::new(), &mut Vec::new())
        else {
            panic!("an alert");
        };
        description
    }

    /// Feeds `wire` to `to` and returns the error with the alert it sent, opened by `peer`.
    fn refused(
        to: &mut Tls13Records,
        peer: &mut Tls13Records,
        wire: &mut [u8],
    ) -> AlertDescription {
        let mut alerts = Vec::new();
        to.open(wire, &mut BytesMut::new(), &mut alerts)
            .expect_err("refused");
        alert_sent(peer, &mut alerts)
    }

    /// Requests for a key update, however many, are answered by one KeyUpdate, sent only
    /// when we write: opening never produces output.
    #[test]
    fn key_update_requests_queue_one_answer_sent_by_the_next_write() {
        for suite in SUITES {
            let (mut client, mut server) = pair(suite);
            let mut wire: Vec<u8> = (0..5).flat_map(|_| key_update(&mut client, true)).collect();
            wire.extend(record(&mut client, ContentType::ApplicationData, b"ping"));
            let (plain, _) = open_all(&mut server, &mut wire).unwrap();
            assert_eq!(plain, b"ping");
            assert!(server.key_update_due(), "{suite:?}");
            let mut out = vec![0; Tls13Records::sealed_len(4)];
            let n = server.encrypt(&[b"pong"], &mut out).unwrap().unwrap();
            assert!(!server.key_update_due());
            // One KeyUpdate record, then the data record, which the client reads under the
            // key the KeyUpdate announced.
            assert_eq!(n, KEY_UPDATE_RECORD + 4 + OVERHEAD, "{suite:?}");
            let (plain, _) = open_all(&mut client, &mut out[..n]).unwrap();
            assert_eq!(plain, b"pong");
        }
    }

    /// rustls's limit: 32 KeyUpdates between application data; the 33rd is refused. Empty
    /// application-data records in between do not reset the count, non-empty ones do.
    #[test]
    fn key_updates_without_data_between_are_limited_to_32() {
        let (mut client, mut server) = pair(SUITES[0]);
        let mut wire = Vec::new();
        for _ in 0..32 {
            wire.extend(key_update(&mut client, false));
            wire.extend(record(&mut client, ContentType::ApplicationData, b""));
        }
        open_all(&mut server, &mut wire).expect("32 are allowed");
        let mut wire = key_update(&mut client, false);
        assert_eq!(
            refused(&mut server, &mut client, &mut wire),
            AlertDescription::UnexpectedMessage
        );

        let (mut client, mut server) = pair(SUITES[0]);
        let mut wire = Vec::new();
        for _ in 0..100 {
            wire.extend(key_update(&mut client, true));
            wire.extend(record(&mut client, ContentType::ApplicationData, b"x"));
        }
        let (plain, _) = open_all(&mut server, &mut wire).expect("data resets the count");
        assert_eq!(plain.len(), 100);
    }

    /// At most 32 empty records in a row (rustls's limit); data in between resets the count.
    #[test]
    fn empty_records_in_a_row_are_limited_to_32() {
        let (mut client, mut server) = pair(SUITES[1]);
        let mut wire: Vec<u8> = (0..32)
            .flat_map(|_| record(&mut client, ContentType::ApplicationData, b""))
            .collect();
        wire.extend(record(&mut client, ContentType::ApplicationData, b"x"));
        wire.extend((0..32).flat_map(|_| record(&mut client, ContentType::ApplicationData, b"")));
        open_all(&mut server, &mut wire).expect("32 in a row are allowed");
        let mut wire = record(&mut client, ContentType::ApplicationData, b"");
        assert_eq!(
            refused(&mut server, &mut client, &mut wire),
            AlertDescription::UnexpectedMessage
        );
    }

    /// user_canceled is a warning rustls takes 4 times; the 5th is refused. Any other alert
    /// ends the connection whatever its level, and gets no alert in answer.
    #[test]
    fn warning_alerts_are_limited_and_other_alerts_end_the_connection() {
        let (mut client, mut server) = pair(SUITES[2]);
        let canceled = [WARNING, u8::from(AlertDescription::UserCanceled)];
        let mut wire: Vec<u8> = (0..4)
            .flat_map(|_| record(&mut client, ContentType::Alert, &canceled))
            .collect();
        open_all(&mut server, &mut wire).expect("4 are allowed");
        let mut wire = record(&mut client, ContentType::Alert, &canceled);
        assert_eq!(
            refused(&mut server, &mut client, &mut wire),
            AlertDescription::UnexpectedMessage
        );

        let (mut client, mut server) = pair(SUITES[2]);
        let warning = [WARNING, u8::from(AlertDescription::HandshakeFailure)];
        let mut wire = record(&mut client, ContentType::Alert, &warning);
        let mut alerts = Vec::new();
        let error = server
            .open(&mut wire, &mut BytesMut::new(), &mut alerts)
            .unwrap_err();
        assert_eq!(
            error,
            rustls::Error::AlertReceived(AlertDescription::HandshakeFailure)
        );
        assert!(alerts.is_empty(), "no alert answers an alert");

        // user_canceled sent as fatal ends the connection; a level that is neither is refused.
        let (mut client, mut server) = pair(SUITES[2]);
        let fatal = [FATAL, u8::from(AlertDescription::UserCanceled)];
        let mut wire = record(&mut client, ContentType::Alert, &fatal);
        let error = server
            .open(&mut wire, &mut BytesMut::new(), &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            error,
            rustls::Error::AlertReceived(AlertDescription::UserCanceled)
        );
        let (mut client, mut server) = pair(SUITES[2]);
        let mut wire = record(&mut client, ContentType::Alert, &[3, 0]);
        assert_eq!(
            refused(&mut server, &mut client, &mut wire),
            AlertDescription::IllegalParameter
        );
    }

    /// RFC 8446 6.1: data after close_notify is ignored, even a record that would not open.
    #[test]
    fn data_after_close_notify_is_ignored() {
        let (mut client, mut server) = pair(SUITES[0]);
        let mut wire = record(&mut client, ContentType::ApplicationData, b"before");
        let close = [WARNING, u8::from(AlertDescription::CloseNotify)];
        wire.extend(record(&mut client, ContentType::Alert, &close));
        wire.extend(record(&mut client, ContentType::ApplicationData, b"after"));
        wire.extend(b"\x17\x03\x03\x00\x20 not a record at all");
        let (plain, opened) = open_all(&mut server, &mut wire).unwrap();
        assert_eq!(plain, b"before");
        assert!(opened.peer_closed);
        assert_eq!(
            opened.consumed,
            wire.len(),
            "everything after is consumed unread"
        );
        let mut more = record(&mut client, ContentType::ApplicationData, b"later");
        let (plain, opened) = open_all(&mut server, &mut more).unwrap();
        assert!(plain.is_empty() && opened.consumed == more.len());
    }

    /// A NewSessionTicket message in handshake records.
    fn ticket(ticket_len: usize) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(3600u32.to_be_bytes()); // lifetime
        body.extend(7u32.to_be_bytes()); // age_add
        body.extend([1, 9]); // nonce
        body.extend(u16::try_from(ticket_len).unwrap().to_be_bytes());
        body.extend((0..ticket_len).map(|i| i as u8));
        body.extend([0, 0]); // no extensions
        let len = body.len();
        let mut message = vec![4, (len >> 16) as u8, (len >> 8) as u8, len as u8];
        message.extend(body);
        message
    }

    /// Handshake messages split over records (a session ticket larger than a record, or cut
    /// anywhere by a peer such as OpenSSL with a small max_send_fragment) are reassembled; a
    /// KeyUpdate may span records as long as it ends one.
    #[test]
    fn handshake_messages_split_across_records_are_reassembled() {
        for cut in [1, 3, 4, 5, 100, 16 * 1024] {
            let (mut client, mut server) = pair(SUITES[0]);
            let message = ticket(20_000);
            let mut wire = Vec::new();
            for piece in message.chunks(cut.min(MAX_PLAINTEXT)) {
                wire.extend(record(&mut server, ContentType::Handshake, piece));
            }
            wire.extend(record(&mut server, ContentType::ApplicationData, b"after"));
            let (plain, _) = open_all(&mut client, &mut wire).expect("reassembled");
            assert_eq!(plain, b"after", "cut every {cut}");
        }
        let (mut client, mut server) = pair(SUITES[0]);
        let mut wire = record(&mut client, ContentType::Handshake, &[24, 0]);
        let mut rest = record(&mut client, ContentType::Handshake, &[0, 1, 1]);
        let secrets = client.kernel.update_tx().unwrap();
        client.tx = Direction::new(0, secrets).unwrap();
        wire.append(&mut rest);
        wire.extend(record(
            &mut client,
            ContentType::ApplicationData,
            b"new key",
        ));
        let (plain, _) = open_all(&mut server, &mut wire).expect("KeyUpdate over two records");
        assert_eq!(plain, b"new key");
        assert!(server.key_update_due());
    }

    /// A split message is not interleaved with other records, a KeyUpdate ends its record, and
    /// no message may claim more than 64 KiB.
    #[test]
    fn malformed_handshake_content_is_refused_with_the_rfc_alert() {
        let (mut client, mut server) = pair(SUITES[0]);
        let mut wire = record(&mut server, ContentType::Handshake, &ticket(100)[..50]);
        wire.extend(record(
            &mut server,
            ContentType::ApplicationData,
            b"between",
        ));
        assert_eq!(
            refused(&mut client, &mut server, &mut wire),
            AlertDescription::UnexpectedMessage
        );

        let (mut client, mut server) = pair(SUITES[0]);
        let mut wire = record(&mut server, ContentType::Handshake, &[4, 1, 0, 0, 0]);
        assert_eq!(
            refused(&mut client, &mut server, &mut wire),
            AlertDescription::DecodeError
        );

        let (mut client, mut server) = pair(SUITES[0]);
        let mut both = vec![24, 0, 0, 1, 0];
        both.extend(ticket(10));
        let mut wire = record(&mut client, ContentType::Handshake, &both);
        assert_eq!(
            refused(&mut server, &mut client, &mut wire),
            AlertDescription::UnexpectedMessage
        );

        let (mut client, mut server) = pair(SUITES[0]);
        let mut wire = record(&mut client, ContentType::Handshake, &[24, 0, 0, 1, 2]);
        assert_eq!(
            refused(&mut server, &mut client, &mut wire),
            AlertDescription::IllegalParameter
        );

        // A server takes no session ticket: refused as soon as the header says so, before the
        // rest of the message arrives (nothing of it is kept).
        let (mut client, mut server) = pair(SUITES[0]);
        let mut wire = record(&mut client, ContentType::Handshake, &ticket(10));
        assert_eq!(
            refused(&mut server, &mut client, &mut wire),
            AlertDescription::UnexpectedMessage
        );
        let (mut client, mut server) = pair(SUITES[0]);
        let mut wire = record(&mut client, ContentType::Handshake, &ticket(60_000)[..10]);
        assert_eq!(
            refused(&mut server, &mut client, &mut wire),
            AlertDescription::UnexpectedMessage
        );
        // A KeyUpdate of another length is refused at its header too.
        let (mut client, mut server) = pair(SUITES[0]);
        let mut wire = record(&mut client, ContentType::Handshake, &[24, 0, 0, 200, 0]);
        assert_eq!(
            refused(&mut server, &mut client, &mut wire),
            AlertDescription::DecodeError
        );
    }

    /// At the confidentiality limit of its key, the sender updates it before the next record
    /// (the peer reads on across the change); the same at rustls's soft limit for a cipher
    /// without one (ChaCha20-Poly1305), well before the sequence number could wrap.
    #[test]
    fn sequence_numbers_roll_over_to_a_new_key_at_the_limit() {
        for (suite, limit) in [(SUITES[0], 1 << 24), (SUITES[2], SEQ_SOFT_LIMIT)] {
            let (mut client, mut server) = pair(suite);
            assert_eq!(server.tx.limit, limit);
            // Both ends agree on the sequence number, as if that many records had passed.
            server.tx.seq = limit - 2;
            client.rx.seq = limit - 2;
            let data = vec![5u8; 3 * MAX_PLAINTEXT];
            let mut out = vec![0; Tls13Records::sealed_len(data.len())];
            let n = server.encrypt(&[&data], &mut out).unwrap().unwrap();
            assert_eq!(
                n,
                3 * (MAX_PLAINTEXT + OVERHEAD) + KEY_UPDATE_RECORD,
                "{suite:?}"
            );
            assert_eq!(
                server.tx.seq, 1,
                "two records under the old key, one under the new"
            );
            let (plain, _) = open_all(&mut client, &mut out[..n]).unwrap();
            assert!(plain == data);
            assert_eq!(client.rx.seq, 1);
        }
    }

    /// Near 2^64 nothing wraps: a sequence number with no successor can neither seal nor open
    /// a record; both fail cleanly (the receiver with an alert) instead of reusing a nonce.
    #[test]
    fn sequence_numbers_never_wrap_near_2_to_the_64() {
        let (mut client, mut server) = pair(SUITES[2]);
        server.tx.seq = u64::MAX;
        let mut out = [0u8; 64];
        assert_eq!(
            server.seal(ContentType::ApplicationData, b"x", &mut out),
            Err(rustls::Error::EncryptError)
        );
        assert_eq!(server.tx.seq, u64::MAX, "no nonce used");

        server.tx.seq = u64::MAX - 1;
        client.rx.seq = u64::MAX - 1;
        let mut wire = record(&mut server, ContentType::ApplicationData, b"last");
        assert_eq!(open_all(&mut client, &mut wire).unwrap().0, b"last");
        assert_eq!(client.rx.seq, u64::MAX);
        let mut wire = vec![23, 3, 3, 0, 17];
        wire.extend([0u8; 17]);
        let mut alerts = Vec::new();
        assert!(client
            .open(&mut wire, &mut BytesMut::new(), &mut alerts)
            .is_err());
        assert!(!alerts.is_empty(), "the peer is told");
    }

    /// What a direction's destructor does (on a key update and at the end) leaves neither
    /// key nor IV behind.
    #[test]
    fn wiping_a_direction_zeroes_its_key_and_iv() {
        let (mut client, _server) = pair(SUITES[0]);
        assert!(client.rx.secret.iter().any(|&b| b != 0));
        client.rx.wipe();
        assert!(client.rx.secret.iter().all(|&b| b == 0));
        assert!(client.rx.iv.iter().all(|&b| b == 0));
    }
}
