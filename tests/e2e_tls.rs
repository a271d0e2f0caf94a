//! End to end, the service's TLS front under abuse: the real `gatehouse` service and connector
//! processes, rustls clients that misbehave, curl as the well-behaved neighbour.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A rustls client of the front, trusting the stack's CA, with its handshake done.
fn handshaken(stack: &Stack) -> (rustls::ClientConnection, TcpStream) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(stack.ca_file()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(APP_HOST).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", stack.https_port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    while client.is_handshaking() {
        client.complete_io(&mut sock).unwrap();
    }
    (client, sock)
}

/// TLS-1 in THREATS.md, as the issue put it: a client completes the handshake, stops
/// reading, floods KeyUpdate requests (with a byte of a request head now and then, so the
/// head deadline is what ends it) and waits for the header timeout. The service stays up and
/// keeps serving everyone else, and what the flooder finally reads holds nothing but this
/// connection's own records: every complete one opens, and their text is our 408 page.
#[test]
fn a_key_update_flood_from_a_client_that_does_not_read_hurts_nobody() {
    let (stack, _backend) = echo_stack("tls-flood", "[limits]\nheader_timeout = \"2s\"\n");

    let stack = Arc::new(stack);
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let stack = stack.clone();
            std::thread::spawn(move || {
                let (mut client, mut sock) = handshaken(&stack);
                let head = b"GET /echo/flood HTTP/1.1\r\nHost: app.test\r\nX-Pad: ";
                let started = Instant::now();
                let mut updates = 0u64;
                let mut sent = 0;
                while started.elapsed() < Duration::from_secs(4) {
                    // 30 KeyUpdates, then one byte of the head (data resets the limit of 32).
                    for _ in 0..30 {
                        client.refresh_traffic_keys().unwrap();
                    }
                    updates += 30;
                    let byte = head.get(sent).copied().unwrap_or(b'a');
                    client.writer().write_all(&[byte]).unwrap();
                    sent += 1;
                    let mut wire = Vec::new();
                    while client.wants_write() {
                        client.write_tls(&mut wire).unwrap();
                    }
                    if sock.write_all(&wire).is_err() {
                        break;
                    }
                }
                // Only now read what the service sent, all of it, to the end.
                let mut wire = Vec::new();
                let _ = sock.read_to_end(&mut wire);
                let mut wire = &wire[..];
                let mut plain = Vec::new();
                while !wire.is_empty() {
                    if client.read_tls(&mut wire).unwrap() == 0 {
                        break;
                    }
                    if let Err(e) = client.process_new_packets() {
                        assert!(
                            matches!(e, rustls::Error::AlertReceived(_)),
                            "every record the service sent opens: {e:?}"
                        );
                        break;
                    }
                    let _ = client.reader().read_to_end(&mut plain);
                }
                (updates, String::from_utf8_lossy(&plain).into_owned())
            })
        })
        .collect();

    // Meanwhile the others are served.
    let until = Instant::now() + Duration::from_secs(5);
    let mut served = 0;
    while Instant::now() < until {
        assert_eq!(stack.status(APP_HOST, "/echo/neighbour"), "200");
        served += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    for flooder in flooders {
        let (updates, text) = flooder.join().unwrap();
        assert!(updates > 1000, "{updates} KeyUpdates");
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "only our own answer: {text:?}"
        );
    }
    assert!(served > 10);
    assert_eq!(stack.status(APP_HOST, "/echo/after"), "200");
    let log = stack.log("service");
    assert!(!log.contains("panicked"), "{log}");
}
