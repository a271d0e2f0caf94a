//! Fuzz target: `gatehouse_http1::fuzzing::response_head` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_http1::fuzzing::response_head(data));
