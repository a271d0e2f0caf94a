//! Byte classes of RFC 9110/9112 and word-at-a-time scanners over them.
//!
//! The scanners read thirty-two bytes per step with AVX2 on x86_64 CPUs that have it, sixteen
//! with SSE2 on the others, and eight bytes per step with plain `u64` arithmetic elsewhere and
//! for the tail: a step either proves all its bytes
//! ordinary or points at the first one that is not, which the caller then looks at by itself.

/// RFC 9110 5.6.2: `tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" /
/// "_" / "`" / "|" / "~" / DIGIT / ALPHA`.
pub(crate) static TOKEN: [bool; 256] = alphanumeric_and(b"!#$%&'*+-.^_`|~");

/// A byte-class table: ASCII letters and digits plus `extra`.
const fn alphanumeric_and(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

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
#[inline(always)]
pub(crate) fn find_ctl(bytes: &[u8]) -> usize {
    find_first(bytes, Class::Ctl)
}

/// Length of the token at the start of `bytes`: the index of the first byte that is not a
/// `tchar`, or `bytes.len()`. Field names end there, normally at the colon.
///
/// One table lookup per byte on purpose. The loop's exit is a predicted branch, so the CPU goes
/// on to the value before the name's end is computed; a vector scan would make the value's
/// start wait for a compare-movemask-count chain on every field. Measured against the 16-byte
/// SSE2 scan this replaced, a plain byte loop took the browser-like head (b) of
/// `benches/http1_parse` from 0.88 to 0.99 of httparse and the 59-field head (c) from 0.82 to
/// 0.95; unrolling it eight bytes per step then took (c) to 1.14, also in interleaved
/// rounds.
#[inline(always)]
pub(crate) fn token_len(bytes: &[u8]) -> usize {
    let mut i = 0;
    // Eight lookups per loop step, unrolled: one loop branch per eight bytes.
    while let Some(chunk) = bytes.get(i..i + 8) {
        let chunk: &[u8; 8] = chunk.try_into().expect("8 bytes");
        for (k, &b) in chunk.iter().enumerate() {
            if !TOKEN[b as usize] {
                return i + k;
            }
        }
        i += 8;
    }
    while i < bytes.len() && TOKEN[bytes[i] as usize] {
        i += 1;
    }
    i
}

/// Index of the first byte outside `0x21..=0x7e` (the URI alphabet and then some), or
/// `bytes.len()`. Request targets end at the first SP.
#[inline(always)]
pub(crate) fn find_non_vchar(bytes: &[u8]) -> usize {
    find_first(bytes, Class::NonVchar)
}

/// The byte classes [`find_first`] looks for.
#[derive(Clone, Copy)]
enum Class {
    /// Below 0x20, or 0x7f.
    Ctl,
    /// Outside 0x21..=0x7e.
    NonVchar,
}

impl Class {
    fn matches(self, b: u8) -> bool {
        match self {
            Class::Ctl => b < 0x20 || b == 0x7f,
            Class::NonVchar => !(0x21..=0x7e).contains(&b),
        }
    }

    /// High bit of each byte of the result set where that byte of `w` is in the class. Uses
    /// the classic "has less than" trick, which can flag a byte above a true hit through the
    /// borrow but never one below it, so the lowest flag is exact.
    fn word_mask(self, w: u64) -> u64 {
        let del = has_zero(w ^ (LO * 0x7f));
        match self {
            Class::Ctl => (w.wrapping_sub(LO * 0x20) & !w & HI) | del,
            Class::NonVchar => (w.wrapping_sub(LO * 0x21) & !w & HI) | (w & HI) | del,
        }
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    fn block_mask(self, block: &[u8; 16]) -> u32 {
        match self {
            Class::Ctl => sse2::ctl_mask(block),
            Class::NonVchar => sse2::non_vchar_mask(block),
        }
    }
}

/// Index of the first byte of `bytes` in `class`, or `bytes.len()`: thirty-two bytes per step
/// with AVX2 where the CPU has it, then sixteen with SSE2, then eight, then one.
#[inline(always)]
fn find_first(bytes: &[u8], class: Class) -> usize {
    // Most values end within 32 bytes; those are scanned inline, and only longer ones pay the
    // call into the AVX2 loop.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if let Some(pair) = bytes.get(..32) {
        let hits = pair_mask(pair, class);
        if hits != 0 {
            return hits.trailing_zeros() as usize;
        }
        let start = match avx2::find_first(&bytes[32..], class) {
            Ok(hit) => return 32 + hit,
            Err(rest) => 32 + rest,
        };
        return find_first_from(bytes, start, class);
    }
    find_first_from(bytes, 0, class)
}

/// Hits of `class` in 32 bytes, as a bit per byte.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn pair_mask(pair: &[u8], class: Class) -> u32 {
    let (low, high) = pair.split_at(16);
    class.block_mask(low.try_into().expect("16 bytes"))
        | class.block_mask(high.try_into().expect("16 bytes")) << 16
}

/// [`find_first`] without AVX2, from index `from` on.
#[inline(always)]
fn find_first_from(bytes: &[u8], from: usize, class: Class) -> usize {
    let mut i = from;
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // Two blocks per step: one branch per 32 bytes on long values (cookies, user agents).
        while let Some(pair) = bytes.get(i..i + 32) {
            let hits = pair_mask(pair, class);
            if hits != 0 {
                return i + hits.trailing_zeros() as usize;
            }
            i += 32;
        }
        if i + 16 <= bytes.len() {
            let hits = class.block_mask(block(bytes, i));
            if hits != 0 {
                return i + hits.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    while i + 8 <= bytes.len() {
        let hits = class.word_mask(word(bytes, i));
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() {
        if class.matches(bytes[i]) {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

/// Sixteen bytes per step with SSE2, which every x86_64 CPU has (it is in the baseline target,
/// and the module is compiled only when `target_feature = "sse2"` is on). The intrinsics take no
/// pointers except the one unaligned load of a borrowed 16-byte array. This is the crate's only
/// `unsafe` besides the AVX2 module below; `tests::word_scanners_agree_with_bytewise_scan_for_every_byte_at_every_position`
/// and the `h1_request_head` fuzz target exercise it.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[allow(unsafe_code)]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };

    /// Loads sixteen bytes into a vector.
    fn load(block: &[u8; 16]) -> __m128i {
        // SAFETY: `block` is 16 readable bytes, and `loadu` has no alignment requirement; sse2
        // is enabled for this compilation (cfg above).
        unsafe { _mm_loadu_si128(block.as_ptr().cast()) }
    }

    /// Bit i set when byte i is below 0x20 or is 0x7f (obs-text bytes are not flagged).
    pub(super) fn ctl_mask(block: &[u8; 16]) -> u32 {
        // SAFETY: sse2 is enabled for this compilation (cfg above), so the CPU has it.
        unsafe { ctl_mask_sse2(load(block)) }
    }

    /// Bit i set when byte i is outside 0x21..=0x7e.
    pub(super) fn non_vchar_mask(block: &[u8; 16]) -> u32 {
        // SAFETY: sse2 is enabled for this compilation (cfg above), so the CPU has it.
        unsafe { non_vchar_mask_sse2(load(block)) }
    }

    #[target_feature(enable = "sse2")]
    fn ctl_mask_sse2(v: __m128i) -> u32 {
        // Signed compares: obs-text bytes (0x80..) are negative, so "below 0x20" must also
        // require "not negative".
        let below = _mm_and_si128(
            _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
            _mm_cmpgt_epi8(v, _mm_set1_epi8(-1)),
        );
        let del = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f));
        _mm_movemask_epi8(_mm_or_si128(below, del)) as u32
    }

    #[target_feature(enable = "sse2")]
    fn non_vchar_mask_sse2(v: __m128i) -> u32 {
        // Negative (0x80..) bytes are below 0x21 in a signed compare, which is what we want.
        let below = _mm_cmplt_epi8(v, _mm_set1_epi8(0x21));
        let del = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f));
        _mm_movemask_epi8(_mm_or_si128(below, del)) as u32
    }
}

/// Thirty-two bytes per step with AVX2, which most x86_64 CPUs in service have but the baseline
/// target does not promise: checked at run time (std caches the answer, so a check is one load).
/// Long field values (cookies, user agents, accept lists) take half the steps of SSE2.
/// `tests::word_scanners_agree_with_bytewise_scan_for_every_byte_at_every_position` and the
/// `h1_request_head` fuzz target exercise it on CPUs that have AVX2, and check the SSE2 path
/// beside it.
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::has_avx2;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::Class;
    use std::arch::x86_64::{
        __m256i, _mm256_and_si256, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8, _mm256_loadu_si256,
        _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8,
    };

    /// Whether the CPU has AVX2.
    #[inline(always)]
    pub(crate) fn has_avx2() -> bool {
        std::is_x86_feature_detected!("avx2")
    }

    /// `Ok(index)` of the first byte in `class` within the whole 32-byte blocks at the start of
    /// `bytes`, or `Err(index)` where those blocks end (0 without AVX2).
    #[inline(always)]
    pub(super) fn find_first(bytes: &[u8], class: Class) -> Result<usize, usize> {
        if bytes.len() < 32 || !has_avx2() {
            return Err(0);
        }
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { find_first_avx2(bytes, class) }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn find_first_avx2(bytes: &[u8], class: Class) -> Result<usize, usize> {
        let mut i = 0;
        while let Some(block) = bytes.get(i..i + 32) {
            // SAFETY: `block` is 32 readable bytes and `loadu` has no alignment requirement.
            let v = unsafe { _mm256_loadu_si256(block.as_ptr().cast::<__m256i>()) };
            let hits = match class {
                Class::Ctl => ctl_mask(v),
                Class::NonVchar => non_vchar_mask(v),
            };
            if hits != 0 {
                return Ok(i + hits.trailing_zeros() as usize);
            }
            i += 32;
        }
        Err(i)
    }

    /// Bit i set when byte i is below 0x20 or is 0x7f (obs-text bytes are not flagged).
    #[target_feature(enable = "avx2")]
    fn ctl_mask(v: __m256i) -> u32 {
        // Signed compares: obs-text bytes (0x80..) are negative, so "below 0x20" must also
        // require "not negative".
        let below = _mm256_and_si256(
            _mm256_cmpgt_epi8(_mm256_set1_epi8(0x20), v),
            _mm256_cmpgt_epi8(v, _mm256_set1_epi8(-1)),
        );
        let del = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(0x7f));
        _mm256_movemask_epi8(_mm256_or_si256(below, del)) as u32
    }

    /// Bit i set when byte i is outside 0x21..=0x7e.
    #[target_feature(enable = "avx2")]
    fn non_vchar_mask(v: __m256i) -> u32 {
        // Negative (0x80..) bytes are below 0x21 in a signed compare, which is what we want.
        let below = _mm256_cmpgt_epi8(_mm256_set1_epi8(0x21), v);
        let del = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(0x7f));
        _mm256_movemask_epi8(_mm256_or_si256(below, del)) as u32
    }
}

/// RFC 3986 `reg-name` / `IP-literal` / `port` bytes allowed in a Host value.
pub(crate) static HOST: [bool; 256] = alphanumeric_and(b"-._~%!$&'()*+,;=:[]");

/// Whether the token `name` equals `lower`, a name of lower-case letters and `-`, ignoring
/// ASCII case; a word at a time.
///
/// Setting bit 0x20 of a byte maps `A`..`Z` onto `a`..`z` and leaves `-` and lower-case
/// letters alone. The only other byte it maps onto one of those is CR (0x0d, onto `-`), which a
/// token cannot contain, so for a token the comparison is exact.
pub(crate) fn token_equals_lower(name: &[u8], lower: &[u8]) -> bool {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    let len = name.len();
    if len != lower.len() {
        return false;
    }
    if len < 4 {
        return name.iter().zip(lower).all(|(&n, &l)| n | 0x20 == l);
    }
    if len < 8 {
        // Two words that overlap in the middle cover four to seven bytes.
        let fold = FOLD as u32;
        return half_word(name, 0) | fold == half_word(lower, 0)
            && half_word(name, len - 4) | fold == half_word(lower, len - 4);
    }
    // Words at 0, 8, 16, ... and one that ends at the last byte (overlap is harmless).
    let mut at = 0;
    while at + 8 < len {
        if word(name, at) | FOLD != word(lower, at) {
            return false;
        }
        at += 8;
    }
    word(name, len - 8) | FOLD == word(lower, len - 8)
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

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn block(bytes: &[u8], at: usize) -> &[u8; 16] {
    // The callers checked `at + 16 <= bytes.len()`.
    bytes[at..at + 16].try_into().expect("16 bytes")
}

fn half_word(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
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
        for len in 0..72 {
            for pos in 0..len {
                for special in 0..=255u8 {
                    let mut buf = vec![b'a'; len];
                    buf[pos] = special;
                    // A second candidate later on must never hide the first.
                    if pos + 2 < len {
                        buf[pos + 2] = 0;
                    }
                    let (ctl, non_vchar) = (find_ctl_slow(&buf), find_non_vchar_slow(&buf));
                    assert_eq!(find_ctl(&buf), ctl, "{buf:?}");
                    assert_eq!(find_non_vchar(&buf), non_vchar, "{buf:?}");
                    // Without AVX2 (what `find_first` falls back to, or all it has).
                    assert_eq!(find_first_from(&buf, 0, Class::Ctl), ctl, "{buf:?}");
                    assert_eq!(find_first_from(&buf, 0, Class::NonVchar), non_vchar);
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
    fn token_comparison_folds_case_exactly_for_every_token_byte_at_every_position() {
        let names: [&[u8]; 7] = [
            b"te",
            b"host",
            b"expect",
            b"upgrade",
            b"connection",
            b"content-length",
            b"transfer-encoding",
        ];
        for lower in names {
            assert!(token_equals_lower(&lower.to_ascii_uppercase(), lower));
            assert!(!token_equals_lower(&lower[1..], lower));
            for pos in 0..lower.len() {
                for b in (0..=255u8).filter(|&b| TOKEN[b as usize]) {
                    let mut name = lower.to_vec();
                    name[pos] = b;
                    let expected = name.eq_ignore_ascii_case(lower);
                    assert_eq!(token_equals_lower(&name, lower), expected, "{name:?}");
                }
            }
        }
    }

    #[test]
    fn list_elements_skip_empty_ones() {
        let v: Vec<&[u8]> = list_elements(b" , chunked ,, gzip,").collect();
        assert_eq!(v, vec![&b"chunked"[..], b"gzip"]);
    }
}
