//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/*`) through the same entry points
//! the fuzz targets use, so CI catches a regression on any input a fuzzer ever kept.

use std::path::Path;

use gatehouse_http1::fuzzing;

fn replay(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry_path in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry_path.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        entry(&data);
        count += 1;
    }
    assert!(count > 0, "no corpus for {target}");
}

#[test]
fn h1_request_head_corpus() {
    replay("h1_request_head", fuzzing::request_head);
}

#[test]
fn h1_response_head_corpus() {
    replay("h1_response_head", fuzzing::response_head);
}

#[test]
fn h1_chunked_corpus() {
    replay("h1_chunked", fuzzing::chunked);
}

#[test]
fn h1_differential_corpus() {
    replay("h1_differential", fuzzing::differential);
}

#[test]
fn tls13_records_corpus() {
    replay("tls13_records", fuzzing::tls13_records);
}
