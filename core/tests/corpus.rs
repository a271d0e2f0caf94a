//! Replays the committed fuzz corpora of the core targets and the seeds the fuzz entry points
//! generate with their fixed keys (write those into the corpus with
//! `GATEHOUSE_WRITE_SEEDS=1 cargo test -p gatehouse-core --test corpus`).

use std::path::{Path, PathBuf};

use gatehouse_core::fuzzing;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn replay(target: &str, entry: fn(&[u8]), seeds: Vec<Vec<u8>>) {
    let dir = corpus(target);
    if std::env::var_os("GATEHOUSE_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
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
fn cookie_open_corpus() {
    replay("cookie_open", fuzzing::cookie_open, fuzzing::cookie_seeds());
}

#[test]
fn link_stream_corpus() {
    replay("link_stream", fuzzing::link_stream, fuzzing::link_seeds());
}

#[test]
fn token_verify_corpus() {
    replay(
        "token_verify",
        fuzzing::token_verify,
        fuzzing::token_seeds(),
    );
}

#[test]
fn the_valid_seeds_really_open_and_verify() {
    // Guards against seeds that silently stopped exercising the accept path.
    let keyring_ok = fuzzing::cookie_seeds()
        .iter()
        .filter(|s| {
            let mut scratch = [0u8; gatehouse_core::cookie::SCRATCH_LEN];
            fuzzing::cookie_open(s);
            gatehouse_core::Keyring::new(&[(1, [7u8; 32]), (2, [9u8; 32])])
                .unwrap()
                .open(
                    fuzzing::COOKIE_NAME,
                    fuzzing::APP_ID,
                    s,
                    fuzzing::NOW,
                    &mut scratch,
                )
                .is_ok()
        })
        .count();
    assert_eq!(keyring_ok, 1, "exactly the valid cookie seed opens");
    let verified = fuzzing::token_seeds()
        .iter()
        .filter(|t| {
            let keys = gatehouse_core::Ed25519Signer::from_seed("fuzz-ed", &[5u8; 32]).unwrap();
            let keys = gatehouse_core::KeySet::from_json(keys.jwks_json().as_bytes()).unwrap();
            gatehouse_core::Validation::new(fuzzing::ISSUER, fuzzing::CLIENT_ID)
                .with_nonce("n-0S6_WzA2Mj")
                .verify(std::str::from_utf8(t).unwrap(), &keys, fuzzing::NOW)
                .is_ok()
        })
        .count();
    assert_eq!(verified, 1, "exactly the valid token seed verifies");
}
