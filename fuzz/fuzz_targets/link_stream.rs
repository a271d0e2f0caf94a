//! Fuzz target: `gatehouse_core::fuzzing::link_stream` (body link translation, piece by piece
//! against whole) on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_core::fuzzing::link_stream(data));
