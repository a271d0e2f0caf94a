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
    from_text(&load_or_create_text(path)?)
}

/// The text of the key file at `path`, created (mode 0600) with one fresh key when it does
/// not exist.
pub fn load_or_create_text(path: &Path) -> Result<String, KeyringError> {
    let read = || {
        let bytes = secret_file::read(path)?;
        String::from_utf8(bytes).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
    };
    match read() {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        other => return other.map_err(|e| io_error(path, e)),
    }
    let text = first()?;
    match secret_file::create_new(path, text.as_bytes()) {
        Ok(()) => Ok(text),
        // Another process created it in between: theirs counts.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read().map_err(|e| io_error(path, e)),
        Err(e) => Err(io_error(path, e)),
    }
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

/// The key file text with a fresh key on top (it seals from now on) and every key of `text`
/// kept after it (they still open), and the new key's id: one more than the current key's,
/// skipping ids in use.
pub fn rotated(text: &str) -> Result<(String, u8), KeyringError> {
    let mut keys = parse(text)?;
    let current = keys.first().map_or(0, |(id, _)| *id);
    let id = (1..=255u16)
        .map(|step| current.wrapping_add(step as u8))
        .find(|id| keys.iter().all(|(used, _)| used != id))
        .ok_or(KeyringError::Full)?;
    keys.insert(0, (id, Keyring::generate_key()?));
    Ok((render(&keys), id))
}

/// The key file text without key `id`. The current key cannot be retired: rotate first.
pub fn retired(text: &str, id: u8) -> Result<String, KeyringError> {
    let mut keys = parse(text)?;
    match keys.iter().position(|(key_id, _)| *key_id == id) {
        None => Err(KeyringError::NoSuchKey(id)),
        Some(0) => Err(KeyringError::RetireCurrent(id)),
        Some(at) => {
            keys.remove(at);
            Ok(render(&keys))
        }
    }
}

/// A keyring from key file text.
pub fn from_text(text: &str) -> Result<Keyring, KeyringError> {
    Keyring::new(&parse(text)?)
}

/// A fresh key file text with one key.
pub fn first() -> Result<String, KeyringError> {
    Ok(render(&[(FIRST_KEY_ID, Keyring::generate_key()?)]))
}

fn render(keys: &[(u8, [u8; KEY_LEN])]) -> String {
    let mut text = HEADER.to_owned();
    for (id, key) in keys {
        text.push_str(&format!("{id} {}\n", hex::encode(key)));
    }
    text
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
    fn rotation_puts_a_new_key_on_top_and_keeps_the_others() {
        let text = first().expect("first");
        let (text, id) = rotated(&text).expect("rotates");
        assert_eq!(id, 2);
        let ids: Vec<u8> = parse(&text).expect("parses").iter().map(|k| k.0).collect();
        assert_eq!(ids, [2, 1]);
        // Ids wrap and skip those in use.
        let text = format!("255 {}\n0 {}\n", "11".repeat(32), "22".repeat(32));
        assert_eq!(rotated(&text).expect("rotates").1, 1);
        let text = retired(&rotated(&text).expect("rotates").0, 255).expect("retires");
        let ids: Vec<u8> = parse(&text).expect("parses").iter().map(|k| k.0).collect();
        assert_eq!(ids, [1, 0]);
        assert!(matches!(
            retired(&text, 1),
            Err(KeyringError::RetireCurrent(1))
        ));
        assert!(matches!(retired(&text, 9), Err(KeyringError::NoSuchKey(9))));
        let full: String = (0..=255u16)
            .map(|id| format!("{id} {}\n", "00".repeat(32)))
            .collect();
        assert!(matches!(rotated(&full), Err(KeyringError::Full)));
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
