//! The cookie key file: `<id> <64 hex digits>` per line, current key first.

use std::io::ErrorKind;
use std::path::Path;

use super::{Keyring, KeyringError, KEY_LEN};
use crate::{hex, secret_file};

/// Id of the key written to a new file.
const FIRST_KEY_ID: u8 = 1;

const HEADER: &str = "# Gatehouse session cookie keys: `<id 0-255> <64 hex digits>` per line.\n\
# The first key seals new cookies; every key listed opens them. To rotate, add a line with a\n\
# new id on top, and delete the old line once sessions sealed with it have expired.\n";

pub(super) fn load_or_create(path: &Path) -> Result<Keyring, KeyringError> {
    let key = Keyring::generate_key()?;
    let text = format!("{HEADER}{FIRST_KEY_ID} {}\n", hex::encode(&key));
    match secret_file::create_new(path, text.as_bytes()) {
        Ok(()) => Keyring::new(&[(FIRST_KEY_ID, key)]),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => load(path),
        Err(e) => Err(io_error(path, e)),
    }
}

fn load(path: &Path) -> Result<Keyring, KeyringError> {
    let bytes = secret_file::read(path).map_err(|e| io_error(path, e))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| io_error(path, std::io::Error::new(ErrorKind::InvalidData, e)))?;
    Keyring::new(&parse(&text)?)
}

/// The keys of a key file, in file order.
pub(super) fn parse(text: &str) -> Result<Vec<(u8, [u8; KEY_LEN])>, KeyringError> {
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason| KeyringError::Format {
            line: index + 1,
            reason,
        };
        let mut fields = line.split_whitespace();
        let (Some(id), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("expected `<id> <hex key>`"));
        };
        let id = id
            .parse::<u8>()
            .map_err(|_| bad("key id is not a number from 0 to 255"))?;
        let key = hex::decode_array::<KEY_LEN>(key)
            .ok_or_else(|| bad("key is not 64 hexadecimal digits"))?;
        keys.push((id, key));
    }
    Ok(keys)
}

fn io_error(path: &Path, source: std::io::Error) -> KeyringError {
    KeyringError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_in_order_and_skips_comments() {
        let text = format!("# c\n\n2 {}\n  1 {}  \n", "ab".repeat(32), "CD".repeat(32));
        let keys = parse(&text).expect("parses");
        assert_eq!(keys, vec![(2, [0xab; 32]), (1, [0xcd; 32])]);
    }

    #[test]
    fn reports_the_bad_line() {
        let cases = [
            "1".to_owned(),
            format!("1 {} extra", "00".repeat(32)),
            format!("256 {}", "00".repeat(32)),
            format!("x {}", "00".repeat(32)),
            format!("1 {}", "00".repeat(31)),
            format!("1 {}zz", "00".repeat(31)),
        ];
        for case in cases {
            let text = format!("# header\n{case}\n");
            match parse(&text) {
                Err(KeyringError::Format { line: 2, .. }) => {}
                other => panic!("{case:?}: {other:?}"),
            }
        }
    }
}
