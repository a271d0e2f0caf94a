//! Lower-case hexadecimal, for key files, certificate serial numbers, pins and request ids.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes exactly `N` bytes of hex (either case); `None` on a wrong length or a non-hex digit.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (dst, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *dst = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = [0x00, 0x01, 0x7f, 0x80, 0xab, 0xff];
        let text = encode(&bytes);
        assert_eq!(text, "00017f80abff");
        assert_eq!(decode_array::<6>(&text), Some(bytes));
        assert_eq!(decode_array::<6>("00017F80ABFF"), Some(bytes));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode_array::<2>("abc"), None);
        assert_eq!(decode_array::<2>("abcg"), None);
        assert_eq!(decode_array::<2>("abcdef"), None);
        assert_eq!(decode_array::<1>("é"), None);
    }
}
