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
/// Most bytes of answers (KeyUpdates) waiting to be sent before a peer that keeps asking for
/// more is cut off.
const MAX_QUEUED: usize = 16 * 1024;
/// What one record adds to its plaintext when we send it: header, content type, tag.
pub(super) const OVERHEAD: usize = HEADER + 1 + TAG;
/// The KeyUpdate message we send: update_not_requested (RFC 8446 4.6.3).
const KEY_UPDATE: [u8; 5] = [24, 0, 0, 1, 0];

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

impl Direction {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<Self, rustls::Error> {
        let (algorithm, key, iv, limit) = match &secrets {
            // rustls's confidentiality limit for AES-GCM; ChaCha20-Poly1305 has none that a
            // 64-bit sequence number can reach.
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv, 1 << 23),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv, 1 << 23),
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
            limit,
        };
        direction.key()?;
        Ok(direction)
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

    /// The nonce for the current record; then counts it.
    fn next_nonce(&mut self) -> Result<Nonce, rustls::Error> {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        // RFC 8446 5.3: the sequence number must not wrap.
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

    /// Decrypts the complete records at the start of `incoming` in place. Application data
    /// goes to `plain`; records to send in answer (a KeyUpdate) to `queued`. Stops after
    /// close_notify. On error, an alert for the peer is in `queued` when one applies.
    pub(super) fn open(
        &mut self,
        incoming: &mut [u8],
        plain: &mut BytesMut,
        queued: &mut Vec<u8>,
    ) -> Result<Opened, rustls::Error> {
        let mut opened = Opened::default();
        while !opened.peer_closed {
            let Some(record) = self.open_one(&mut incoming[opened.consumed..], queued)? else {
                break;
            };
            let (kind, body, len) = record;
            let body = &incoming[opened.consumed + body.start..opened.consumed + body.end];
            match kind {
                ContentType::ApplicationData => plain.extend_from_slice(body),
                ContentType::Alert => opened.peer_closed = self.alert(body, queued)?,
                ContentType::Handshake => self.handshake(body, queued)?,
                _ => return Err(self.fail(queued, AlertDescription::UnexpectedMessage)),
            }
            opened.consumed += len;
        }
        Ok(opened)
    }

    /// Decrypts the record at the start of `buf`: (inner content type, its plaintext's range in
    /// `buf`, the record's length), or `None` if the record is not complete yet.
    fn open_one(
        &mut self,
        buf: &mut [u8],
        queued: &mut Vec<u8>,
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
            return Err(self.fail(queued, AlertDescription::UnexpectedMessage));
        }
        if len > MAX_CIPHERTEXT {
            return Err(self.fail(queued, AlertDescription::RecordOverflow));
        }
        if len < TAG + 1 {
            return Err(self.fail(queued, AlertDescription::DecodeError));
        }
        let Some(ciphertext) = buf.get_mut(HEADER..HEADER + len) else {
            return Ok(None);
        };
        let nonce = self.rx.next_nonce()?;
        let Ok(plaintext) = self
            .rx
            .key()?
            .open_in_place(nonce, Aad::from(header), ciphertext)
        else {
            return Err(self.fail(queued, AlertDescription::BadRecordMac));
        };
        // The real content type is the last non-zero byte; zeros after it are padding.
        // RFC 8446 5.4: the inner plaintext (content, type, padding) is at most 2^14 + 1 bytes.
        if plaintext.len() > MAX_PLAINTEXT + 1 {
            return Err(self.fail(queued, AlertDescription::RecordOverflow));
        }
        let Some(last) = plaintext.iter().rposition(|&b| b != 0) else {
            return Err(self.fail(queued, AlertDescription::UnexpectedMessage));
        };
        if last > MAX_PLAINTEXT {
            return Err(self.fail(queued, AlertDescription::RecordOverflow));
        }
        let kind = ContentType::from(plaintext[last]);
        Ok(Some((kind, HEADER..HEADER + last, HEADER + len)))
    }

    /// An alert from the peer: `Ok(true)` for close_notify, an error for anything fatal.
    fn alert(&mut self, body: &[u8], queued: &mut Vec<u8>) -> Result<bool, rustls::Error> {
        let [_level, description] = body else {
            return Err(self.fail(queued, AlertDescription::DecodeError));
        };
        match AlertDescription::from(*description) {
            AlertDescription::CloseNotify => Ok(true),
            // RFC 8446 6.1: user_canceled is followed by close_notify.
            AlertDescription::UserCanceled => Ok(false),
            other => Err(rustls::Error::AlertReceived(other)),
        }
    }

    /// Handshake messages after the handshake: KeyUpdate, and NewSessionTicket to a client.
    fn handshake(&mut self, mut body: &[u8], queued: &mut Vec<u8>) -> Result<(), rustls::Error> {
        // RFC 8446 5.1: handshake records are never empty.
        if body.is_empty() {
            return Err(self.fail(queued, AlertDescription::UnexpectedMessage));
        }
        while !body.is_empty() {
            // We take whole messages only; rustls, OpenSSL and BoringSSL never split these.
            if body.len() < 4 {
                return Err(self.fail(queued, AlertDescription::DecodeError));
            }
            let kind = body[0];
            let len = u32::from_be_bytes([0, body[1], body[2], body[3]]) as usize;
            let Some(message) = body.get(4..4 + len) else {
                return Err(self.fail(queued, AlertDescription::DecodeError));
            };
            let rest = &body[4 + len..];
            match (HandshakeType::from(kind), &self.kernel) {
                (HandshakeType::KeyUpdate, _) => {
                    // RFC 8446 5.1: a KeyUpdate must end its record (the keys change after it).
                    let requested = match message {
                        [0] => false,
                        [1] => true,
                        _ => return Err(self.fail(queued, AlertDescription::IllegalParameter)),
                    };
                    if !rest.is_empty() {
                        return Err(self.fail(queued, AlertDescription::UnexpectedMessage));
                    }
                    let secrets = self.kernel.update_rx()?;
                    self.rx = Direction::new(0, secrets)?;
                    if requested {
                        // Answers wait in `queued` until we next write: a peer that keeps
                        // asking while we send nothing would grow it without end.
                        if queued.len() > MAX_QUEUED {
                            return Err(self.fail(queued, AlertDescription::UnexpectedMessage));
                        }
                        append_sealed(queued, KEY_UPDATE.len() + OVERHEAD, |out| {
                            self.update_tx(out)
                        })?;
                    }
                }
                (HandshakeType::NewSessionTicket, Kernel::Client(_)) => {
                    if let Kernel::Client(kernel) = &mut self.kernel {
                        kernel.handle_new_session_ticket(message)?;
                    }
                }
                _ => return Err(self.fail(queued, AlertDescription::UnexpectedMessage)),
            }
            body = rest;
        }
        Ok(())
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
    fn fail(&mut self, queued: &mut Vec<u8>, description: AlertDescription) -> rustls::Error {
        let alert = [FATAL, u8::from(description)];
        // The error returned says what went wrong; an alert that cannot be sealed is not sent.
        let _ = append_sealed(queued, alert.len() + OVERHEAD, |out| {
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
        plaintext
            + plaintext.div_ceil(MAX_PLAINTEXT).max(1) * OVERHEAD
            + KEY_UPDATE.len()
            + OVERHEAD
    }

    /// Encrypts `parts`, taken as one byte sequence, as application data records into `out`:
    /// every record but the last full, each gathered from the parts straight into its place.
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
            if self.tx.seq >= self.tx.limit {
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
