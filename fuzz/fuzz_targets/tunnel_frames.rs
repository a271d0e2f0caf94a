//! Fuzz target: `gatehouse_tunnel::fuzzing::frames` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tunnel::fuzzing::frames(data));
