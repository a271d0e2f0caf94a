//! Two ends of one TLS 1.3 connection in memory, handshaken by rustls through [`Core`] and
//! moved onto our record layer: what the record layer's unit tests and its fuzz target feed.
//! The server presents a fixed self-signed certificate (`http1/testdata/records-*.pem`),
//! which the client takes as its trust anchor.

use std::sync::Arc;

use bytes::BytesMut;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::UnbufferedServerConnection;
use rustls::CipherSuite;

use super::tls::{Core, Session};
use super::tls13::Tls13Records;

const CERT: &[u8] = include_bytes!("../../testdata/records-cert.pem");
const KEY: &[u8] = include_bytes!("../../testdata/records-key.pem");

/// The TLS 1.3 cipher suites our record layer takes over.
pub(crate) const SUITES: [CipherSuite; 3] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
];

/// The client's and the server's record layers of one connection on `suite`, each having
/// read all the other sent (the server's session tickets included).
pub(crate) fn pair(suite: CipherSuite) -> (Box<Tls13Records>, Box<Tls13Records>) {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| s.suite() == suite);
    let provider = Arc::new(provider);
    let cert = CertificateDer::from_pem_slice(CERT).expect("fixture certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("fixture certificate");
    let mut client_config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_config.enable_secret_extraction = true;
    let key = PrivateKeyDer::from_pem_slice(KEY).expect("fixture key");
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("fixture pair");
    server_config.enable_secret_extraction = true;
    let name = ServerName::try_from("localhost").expect("name");
    let client = UnbufferedClientConnection::new(Arc::new(client_config), name).expect("client");
    let server = UnbufferedServerConnection::new(Arc::new(server_config)).expect("server");
    let mut client = Core::new(Session::Client(Box::new(client)), true);
    let mut server = Core::new(Session::Server(Box::new(server)), true);
    let (mut to_client, mut to_server) = (Vec::new(), Vec::new());
    let mut plain = BytesMut::new();
    for _ in 0..8 {
        client
            .process(&mut to_client, &mut plain)
            .expect("client handshake");
        to_server.append(&mut client.queued);
        server
            .process(&mut to_server, &mut plain)
            .expect("server handshake");
        to_client.append(&mut server.queued);
        if !client.is_handshaking() && !server.is_handshaking() && to_server.is_empty() {
            break;
        }
    }
    client.switch_to_records();
    server.switch_to_records();
    match (client.session, server.session) {
        (Session::Records(mut c), Session::Records(s)) => {
            let opened = c
                .open(&mut to_client, &mut plain, &mut Vec::new())
                .expect("session tickets");
            assert_eq!(opened.consumed, to_client.len());
            (c, s)
        }
        _ => panic!("both ends move to our record layer"),
    }
}

/// Fuzz entry point for our record layer's open path (`fuzz/fuzz_targets/tls13_records.rs`).
///
/// The first byte picks the cipher suite; the rest is a script of what a peer does: records
/// sealed with the right key whose inner plaintext (content type, padding, length) is
/// arbitrary, KeyUpdates of both kinds, raw bytes (malformed headers and lengths), bit flips,
/// delivery to our end in pieces of any size, and our end writing back (its KeyUpdate
/// answers included), which the peer must read. Invariants: no panic; what our end reads is
/// a prefix of the application data the peer sealed, as long as nothing was corrupted; once
/// it fails it stays failed.
#[cfg(feature = "fuzzing")]
pub fn fuzz_records(data: &[u8]) {
    let Some((&suite, mut script)) = data.split_first() else {
        return;
    };
    let (mut ours, mut peer) = pair(SUITES[usize::from(suite) % SUITES.len()]);
    let mut take = |n: usize| {
        let (head, rest) = script.split_at(n.min(script.len()));
        script = rest;
        head
    };
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    let mut read = BytesMut::new();
    let mut clean = true;
    let mut failed = false;
    while let Some(&op) = take(1).first() {
        match op % 6 {
            // A record of any inner plaintext, up to a little over the largest allowed.
            0 => {
                let len = take(2).iter().fold(0usize, |a, &b| a << 8 | usize::from(b));
                let inner = take(len % (super::tls13::MAX_PLAINTEXT + 300));
                let sealed = peer.seal_inner(inner, false, &mut wire).is_ok();
                // The content type is the last non-zero byte (zeros after it are padding).
                let kind = inner.iter().rposition(|&b| b != 0);
                if let (true, Some(at)) = (sealed, kind) {
                    if inner[at] == 23 {
                        sent.extend_from_slice(&inner[..at]);
                    }
                }
            }
            // A KeyUpdate, asking for ours or not (or a bad request value).
            1 => {
                let request = take(1).first().copied().unwrap_or(0) % 3;
                let _ = peer.seal_inner(&[24, 0, 0, 1, request, 22], true, &mut wire);
            }
            // Raw bytes, as they come.
            2 => {
                let n = take(1).first().copied().unwrap_or(0);
                wire.extend_from_slice(take(usize::from(n)));
                clean = false;
            }
            // A bit flipped somewhere in what waits to be delivered.
            3 => {
                let at = take(2).iter().fold(0usize, |a, &b| a << 8 | usize::from(b));
                if !wire.is_empty() {
                    let at = at % wire.len();
                    wire[at] ^= 1 << (at % 8);
                    clean = false;
                }
            }
            // Delivery of up to n bytes (all for 0) to our end, which keeps what it did not
            // consume.
            4 => {
                let n = take(1).first().copied().unwrap_or(0);
                let n = match n {
                    0 => wire.len(),
                    n => (usize::from(n) * 97).min(wire.len()),
                };
                if failed {
                    continue;
                }
                let mut piece = wire[..n].to_vec();
                match ours.open(&mut piece, &mut read, &mut Vec::new()) {
                    Ok(opened) => {
                        assert!(opened.consumed <= piece.len());
                        wire.drain(..opened.consumed);
                    }
                    Err(_) => failed = true,
                }
                if clean {
                    assert!(sent.starts_with(&read), "read only what the peer sealed");
                }
            }
            // Our end writes; the peer reads it under the keys it knows.
            _ => {
                if failed {
                    continue;
                }
                let n = usize::from(take(1).first().copied().unwrap_or(0)) * 131;
                let payload = vec![0x5a; n];
                let mut out = vec![0; super::tls13::Tls13Records::sealed_len(n)];
                let written = match ours.encrypt(&[&payload], &mut out) {
                    Ok(Ok(written)) => written,
                    _ => continue,
                };
                let mut echoed = BytesMut::new();
                let opened = peer.open(&mut out[..written], &mut echoed, &mut Vec::new());
                if clean {
                    let opened = opened.expect("the peer reads what we write");
                    assert_eq!(opened.consumed, written);
                    assert!(echoed.iter().all(|&b| b == 0x5a) && echoed.len() == n);
                }
            }
        }
    }
}
