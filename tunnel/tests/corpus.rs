//! Replays the committed fuzz corpora of the tunnel targets.

use std::path::Path;

use gatehouse_tunnel::fuzzing;

/// Replays the corpus (writing the seeds into it first when `GATEHOUSE_WRITE_SEEDS` is set).
fn replay(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let seeds = fuzzing::seeds();
    if std::env::var_os("GATEHOUSE_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds.iter().enumerate() {
            // The frame target takes the bytes without the control byte.
            let bytes = if target == "tunnel_frames" {
                &seed[1..]
            } else {
                &seed[..]
            };
            std::fs::write(dir.join(format!("seed-{i}")), bytes).unwrap();
        }
    }
    for seed in &seeds {
        entry(seed);
    }
    let mut count = 0;
    for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        entry(&std::fs::read(file.unwrap().path()).unwrap());
        count += 1;
    }
    assert!(count > 0, "no corpus for {target}");
}

#[test]
fn tunnel_frames_corpus() {
    replay("tunnel_frames", fuzzing::frames);
}

#[test]
fn tunnel_connection_corpus() {
    replay("tunnel_connection", fuzzing::connection);
}
