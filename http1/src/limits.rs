//! Size limits. Every buffer and count the engine accepts from a peer has one.

/// Field lines the monoio driver parses a head into (its array on the stack): the default
/// [`Limits::fields`], so that the limit and the room agree.
pub const FIELD_SLOTS: usize = 128;

/// Caps on what a peer may send. The defaults follow common practice for an edge proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in the request line or status line including CRLF; default 8 KiB. Over it: 414.
    pub start_line: usize,
    /// Bytes in the header section after the start line, including the final empty line;
    /// default 64 KiB. Over it: 431.
    pub header_section: usize,
    /// Field lines in a header or trailer section, Host and every other field counted alike;
    /// default [`FIELD_SLOTS`] (128), as many as the driver's field array holds. Over it: 431.
    pub fields: usize,
    /// Bytes in one chunk-size line including extensions and CRLF; default 4 KiB.
    pub chunk_line: usize,
    /// Bytes of chunk extensions over a whole body; default 16 KiB. Extensions carry no
    /// data, so a peer could otherwise make us parse them forever.
    pub chunk_extensions_total: usize,
    /// Bytes in the trailer section including the final empty line; default 16 KiB.
    pub trailer_section: usize,
    /// Bytes of a chunked body in all; default `u64::MAX` (none). A chunk size that would
    /// take the body past it is refused as soon as its line arrives (413), before any of
    /// its data.
    pub body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            start_line: 8 * 1024,
            header_section: 64 * 1024,
            fields: FIELD_SLOTS,
            chunk_line: 4 * 1024,
            chunk_extensions_total: 16 * 1024,
            trailer_section: 16 * 1024,
            body: u64::MAX,
        }
    }
}
