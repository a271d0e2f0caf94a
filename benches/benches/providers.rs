//! ring next to aws-lc-rs on the two jobs a crypto provider does for Gatehouse, in one run:
//!
//! - sealing and opening one full TLS 1.3 record (16 KiB of data and its content type),
//!   which our record layer asks of ring for every byte after the handshake, on each of the
//!   three TLS 1.3 suites;
//! - a whole TLS 1.3 handshake through rustls with that provider on both ends (X25519, an
//!   ECDSA P-256 certificate: what the service presents by default), which is what a new
//!   client connection costs.
//!
//! aws-lc-rs is built only for this bench, so that the default build stays free of its C
//! build: `cargo bench -p gatehouse-benches --features aws-lc --bench providers`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConnection, ServerConnection};

const CERT: &[u8] = include_bytes!("../../http1/testdata/records-cert.pem");
const KEY: &[u8] = include_bytes!("../../http1/testdata/records-key.pem");

/// A full record's plaintext: 2^14 bytes of data and the inner content type.
const RECORD: usize = 16 * 1024 + 1;

/// The additional data of such a record: its header (application data, legacy version,
/// length with the 16-byte tag).
const AAD: [u8; 5] = [23, 3, 3, 0x40, 0x11];

const SUITES: [&str; 3] = ["aes128gcm", "aes256gcm", "chacha20poly1305"];

/// One AEAD of one provider, keyed, sealing and opening in place as our record layer does.
trait RecordKey {
    fn seal(&self, buf: &mut [u8]) -> [u8; 16];
    fn open(&self, buf: &mut [u8]);
}

/// A [`RecordKey`] on one provider's `aead` module: ring and aws-lc-rs share its API.
macro_rules! record_key {
    ($name:ident, $provider:ident) => {
        struct $name($provider::aead::LessSafeKey);

        impl $name {
            fn new(suite: &str) -> Self {
                use $provider::aead::*;
                let alg = match suite {
                    "aes128gcm" => &AES_128_GCM,
                    "aes256gcm" => &AES_256_GCM,
                    _ => &CHACHA20_POLY1305,
                };
                let key = UnboundKey::new(alg, &[7; 32][..alg.key_len()]).expect("key length");
                $name(LessSafeKey::new(key))
            }
        }

        impl RecordKey for $name {
            fn seal(&self, buf: &mut [u8]) -> [u8; 16] {
                use $provider::aead::*;
                let nonce = Nonce::assume_unique_for_key([1; 12]);
                let tag = self
                    .0
                    .seal_in_place_separate_tag(nonce, Aad::from(AAD), buf)
                    .expect("seal");
                tag.as_ref().try_into().expect("16-byte tag")
            }

            fn open(&self, buf: &mut [u8]) {
                use $provider::aead::*;
                let nonce = Nonce::assume_unique_for_key([1; 12]);
                self.0
                    .open_in_place(nonce, Aad::from(AAD), buf)
                    .expect("authentic record");
            }
        }
    };
}

record_key!(RingKey, ring);
record_key!(AwsKey, aws_lc_rs);

fn bench_key(c: &mut Criterion, provider: &str, suite: &str, key: &dyn RecordKey) {
    let mut group = c.benchmark_group(format!("record_{suite}"));
    group.throughput(Throughput::Bytes(RECORD as u64));
    let mut plain = vec![0x5a; RECORD];
    group.bench_function(format!("seal/{provider}"), |b| {
        b.iter(|| black_box(key.seal(black_box(&mut plain))))
    });
    // A record as the peer sends it: ciphertext and tag, opened afresh each time.
    let mut sealed = vec![0x5a; RECORD];
    let tag = key.seal(&mut sealed);
    sealed.extend_from_slice(&tag);
    group.bench_function(format!("open/{provider}"), |b| {
        b.iter_batched_ref(
            || sealed.clone(),
            |record| key.open(black_box(record)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn records(c: &mut Criterion) {
    for suite in SUITES {
        bench_key(c, "ring", suite, &RingKey::new(suite));
        bench_key(c, "aws-lc-rs", suite, &AwsKey::new(suite));
    }
}

/// Client and server configurations on `provider`, TLS 1.3 only, the server presenting the
/// fixture P-256 certificate, which the client trusts.
fn configs(provider: CryptoProvider) -> (Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>) {
    let provider = Arc::new(provider);
    let cert = CertificateDer::from_pem_slice(CERT).expect("fixture certificate");
    let key = PrivateKeyDer::from_pem_slice(KEY).expect("fixture key");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("fixture certificate");
    let client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("fixture pair");
    (Arc::new(client), Arc::new(server))
}

/// One full handshake in memory (no resumption: each client is new).
fn handshake(client_config: &Arc<rustls::ClientConfig>, server_config: &Arc<rustls::ServerConfig>) {
    let name = ServerName::try_from("localhost").expect("name");
    let mut client = ClientConnection::new(client_config.clone(), name).expect("client");
    let mut server = ServerConnection::new(server_config.clone()).expect("server");
    let mut wire = Vec::with_capacity(4096);
    while client.is_handshaking() || server.is_handshaking() {
        wire.clear();
        client.write_tls(&mut wire).expect("client writes");
        let mut input = &wire[..];
        while !input.is_empty() {
            server.read_tls(&mut input).expect("server reads");
        }
        server.process_new_packets().expect("server handshake");
        wire.clear();
        server.write_tls(&mut wire).expect("server writes");
        let mut input = &wire[..];
        while !input.is_empty() {
            client.read_tls(&mut input).expect("client reads");
        }
        client.process_new_packets().expect("client handshake");
    }
    black_box((client, server));
}

fn handshakes(c: &mut Criterion) {
    let mut group = c.benchmark_group("tls13_handshake_p256");
    for (name, provider) in [
        ("ring", rustls::crypto::ring::default_provider()),
        ("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider()),
    ] {
        let (client, server) = configs(provider);
        group.bench_function(name, |b| b.iter(|| handshake(&client, &server)));
    }
    group.finish();
}

criterion_group!(benches, records, handshakes);
criterion_main!(benches);
