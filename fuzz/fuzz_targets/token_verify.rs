//! Fuzz target: `gatehouse_core::fuzzing::token_verify` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_core::fuzzing::token_verify(data));
