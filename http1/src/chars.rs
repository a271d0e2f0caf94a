//! Byte classes of RFC 9110/9112 and word-at-a-time scanners over them.
//!
//! The scanners read eight bytes per step with plain `u64` arithmetic (no `unsafe`, no SIMD
//! intrinsics): a step either proves all eight bytes ordinary or points at the first one that is
//! not, which the caller then looks at byte by byte.

/// RFC 9110 5.6.2: `tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" /
/// "_" / "`" / "|" / "~" / DIGIT / ALPHA`.
pub(crate) static TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// Whether `bytes` is a non-empty token.
pub(crate) fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| TOKEN[b as usize])
}

/// RFC 9110 5.5: `field-vchar = VCHAR / obs-text`, plus SP and HTAB inside a value.
pub(crate) fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// Whether every byte may appear inside a field value (no CR, LF, NUL or other CTL).
pub(crate) fn is_field_value(bytes: &[u8]) -> bool {
    find_ctl(bytes) == bytes.len() || bytes.iter().all(|&b| is_field_value_byte(b))
}

/// Index of the first byte below 0x20 or equal to 0x7f, or `bytes.len()`.
///
/// Field values stop at CR; HTAB is the one control that may occur inside them, so callers
/// treat a HTAB hit as "keep going".
pub(crate) fn find_ctl(bytes: &[u8]) -> usize {
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let w = word(bytes, i);
        // Bytes below 0x20: the classic "has less than" trick. It can flag a byte above a true
        // hit through the borrow, never one below it, so the lowest flag is exact.
        let below = w.wrapping_sub(LO * 0x20) & !w & HI;
        let del = has_zero(w ^ (LO * 0x7f));
        let hits = below | del;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x20 || b == 0x7f {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

/// Index of the first byte outside `0x21..=0x7e` (the URI alphabet and then some), or
/// `bytes.len()`. Request targets end at the first SP.
pub(crate) fn find_non_vchar(bytes: &[u8]) -> usize {
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let w = word(bytes, i);
        let below = w.wrapping_sub(LO * 0x21) & !w & HI;
        let high = w & HI;
        let del = has_zero(w ^ (LO * 0x7f));
        let hits = below | high | del;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() {
        let b = bytes[i];
        if !(0x21..=0x7e).contains(&b) {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

/// RFC 3986 `reg-name` / `IP-literal` / `port` bytes allowed in a Host value.
pub(crate) fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
        )
}

/// Strips optional whitespace (SP / HTAB) from both ends.
pub(crate) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |p| p + 1);
    &bytes[start..end]
}

/// Splits a comma-separated field value into its non-empty, OWS-trimmed elements
/// (RFC 9110 5.6.1: recipients ignore empty list elements).
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

fn has_zero(w: u64) -> u64 {
    w.wrapping_sub(LO) & !w & HI
}

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find_ctl_slow(bytes: &[u8]) -> usize {
        bytes
            .iter()
            .position(|&b| b < 0x20 || b == 0x7f)
            .unwrap_or(bytes.len())
    }

    fn find_non_vchar_slow(bytes: &[u8]) -> usize {
        bytes
            .iter()
            .position(|&b| !(0x21..=0x7e).contains(&b))
            .unwrap_or(bytes.len())
    }

    #[test]
    fn word_scanners_agree_with_bytewise_scan_for_every_byte_at_every_position() {
        for len in 0..20 {
            for pos in 0..len {
                for special in 0..=255u8 {
                    let mut buf = vec![b'a'; len];
                    buf[pos] = special;
                    // A second candidate later on must never hide the first.
                    if pos + 2 < len {
                        buf[pos + 2] = 0;
                    }
                    assert_eq!(find_ctl(&buf), find_ctl_slow(&buf), "{buf:?}");
                    assert_eq!(find_non_vchar(&buf), find_non_vchar_slow(&buf), "{buf:?}");
                }
            }
        }
    }

    #[test]
    fn obs_text_is_a_field_value_byte_but_not_a_target_byte() {
        assert_eq!(find_ctl(&[0x80, 0xff, b'a']), 3);
        assert_eq!(find_non_vchar(&[b'a', 0x80]), 1);
    }

    #[test]
    fn list_elements_skip_empty_ones() {
        let v: Vec<&[u8]> = list_elements(b" , chunked ,, gzip,").collect();
        assert_eq!(v, vec![&b"chunked"[..], b"gzip"]);
    }
}
