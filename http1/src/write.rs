//! Serialising heads into a caller-provided buffer.
//!
//! Every name and value is checked on the way out, so a value that came from configuration or
//! from a token claim can never split a head (no CR, LF or NUL reaches the wire).

use crate::chars;
use crate::{Error, Field, Version};

/// Writes one head into `dst`. Start with [`HeadWriter::request`] or
/// [`HeadWriter::response`], add fields, then [`HeadWriter::finish`].
#[derive(Debug)]
pub struct HeadWriter<'d> {
    dst: &'d mut Vec<u8>,
}

impl<'d> HeadWriter<'d> {
    /// Starts a request head: `method SP target SP version CRLF`.
    pub fn request(
        dst: &'d mut Vec<u8>,
        method: &str,
        target: &str,
        version: Version,
    ) -> Result<Self, Error> {
        if !chars::is_token(method.as_bytes()) {
            return Err(Error::Method);
        }
        let t = target.as_bytes();
        if t.is_empty() || chars::find_non_vchar(t) != t.len() {
            return Err(Error::Target);
        }
        dst.extend_from_slice(method.as_bytes());
        dst.push(b' ');
        dst.extend_from_slice(t);
        dst.push(b' ');
        dst.extend_from_slice(version.as_str().as_bytes());
        dst.extend_from_slice(b"\r\n");
        Ok(HeadWriter { dst })
    }

    /// Starts a response head: `version SP status SP reason CRLF`.
    pub fn response(
        dst: &'d mut Vec<u8>,
        version: Version,
        status: u16,
        reason: &str,
    ) -> Result<Self, Error> {
        if !(100..=999).contains(&status) || !chars::is_field_value(reason.as_bytes()) {
            return Err(Error::StatusLine);
        }
        dst.extend_from_slice(version.as_str().as_bytes());
        dst.push(b' ');
        dst.extend_from_slice(&[
            b'0' + (status / 100) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
        ]);
        dst.push(b' ');
        dst.extend_from_slice(reason.as_bytes());
        dst.extend_from_slice(b"\r\n");
        Ok(HeadWriter { dst })
    }

    /// Adds one field line.
    pub fn field(&mut self, name: &[u8], value: &[u8]) -> Result<&mut Self, Error> {
        write_field(name, value, self.dst)?;
        Ok(self)
    }

    /// Adds every field of `fields`.
    pub fn fields<'a, 'b: 'a>(
        &mut self,
        fields: impl IntoIterator<Item = &'a Field<'b>>,
    ) -> Result<&mut Self, Error> {
        for f in fields {
            write_field(f.name, f.value, self.dst)?;
        }
        Ok(self)
    }

    /// Adds a field whose value is a decimal number (Content-Length), without formatting
    /// machinery.
    pub fn field_u64(&mut self, name: &[u8], value: u64) -> Result<&mut Self, Error> {
        let mut digits = [0u8; 20];
        self.field(name, decimal(value, &mut digits))
    }

    /// Ends the head with the empty line.
    pub fn finish(self) {
        self.dst.extend_from_slice(b"\r\n");
    }
}

/// The interim response a server sends when the client expects 100-continue.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Writes `name: value CRLF` after checking both.
pub(crate) fn write_field(name: &[u8], value: &[u8], dst: &mut Vec<u8>) -> Result<(), Error> {
    if !chars::is_token(name) {
        return Err(Error::FieldName);
    }
    if !chars::is_field_value(value) || value.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(Error::FieldValue);
    }
    dst.reserve(name.len() + value.len() + 4);
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
    Ok(())
}

/// `value` in decimal, written at the end of `digits` (no allocation, no formatting
/// machinery): for status codes and lengths in heads.
pub fn decimal(value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    let mut n = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[at..]
}
