//! Fuzz target: our TLS 1.3 record layer's open path, driven by a scripted peer
//! (`gatehouse_http1::fuzzing::tls13_records`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_http1::fuzzing::tls13_records(data));
