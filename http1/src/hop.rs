//! Hop-by-hop fields (RFC 9110 7.6.1): what a proxy must not forward.

use crate::chars;
use crate::Field;

/// Fields that are always connection-specific, whatever the Connection field says
/// (RFC 9110 7.6.1, plus the pre-standard Proxy-Connection).
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` is hop-by-hop in a message with `fields`: one of [`HOP_BY_HOP`] or named by
/// any Connection field of the message. Allocates nothing.
pub fn is_hop_by_hop(name: &[u8], fields: &[Field<'_>]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        || fields
            .iter()
            .filter(|f| f.is("connection"))
            .any(|f| chars::list_elements(f.value).any(|token| token.eq_ignore_ascii_case(name)))
}

/// The fields of a message that a proxy forwards: all but the hop-by-hop ones, in order.
pub fn end_to_end<'f, 'b>(fields: &'f [Field<'b>]) -> impl Iterator<Item = &'f Field<'b>> + 'f {
    fields
        .iter()
        .filter(move |f| !is_hop_by_hop(f.name, fields))
}
