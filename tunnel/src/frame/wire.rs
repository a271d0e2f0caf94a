//! Reading and writing the primitive fields frames are made of (all integers big-endian).

use bytes::Bytes;

use crate::FrameError;

/// A cursor over a frame payload that fails with [`FrameError::Truncated`] instead of panicking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self.pos.checked_add(n).ok_or(FrameError::Truncated)?;
        let out = self.buf.get(self.pos..end).ok_or(FrameError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A string with a one-byte length prefix.
    pub(crate) fn str8(&mut self) -> Result<&'a str, FrameError> {
        let n = self.u8()?;
        std::str::from_utf8(self.bytes(n.into())?).map_err(|_| FrameError::NotUtf8)
    }

    /// A string with a two-byte length prefix.
    pub(crate) fn str16(&mut self) -> Result<&'a str, FrameError> {
        std::str::from_utf8(self.bytes16()?).map_err(|_| FrameError::NotUtf8)
    }

    /// Bytes with a one-byte length prefix.
    pub(crate) fn bytes8(&mut self) -> Result<&'a [u8], FrameError> {
        let n = self.u8()?;
        self.bytes(n.into())
    }

    /// Bytes with a two-byte length prefix.
    pub(crate) fn bytes16(&mut self) -> Result<&'a [u8], FrameError> {
        let n = self.u16()?;
        self.bytes(n.into())
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<(), FrameError> {
        match self.pos == self.buf.len() {
            true => Ok(()),
            false => Err(FrameError::TrailingBytes),
        }
    }
}

/// Writes a field with a one-byte length prefix; `value` must be at most 255 bytes (the
/// encoders check lengths first and fail with [`FrameError::InvalidValue`]).
pub(crate) fn put8(dst: &mut Vec<u8>, value: &[u8]) -> Result<(), FrameError> {
    let n = u8::try_from(value.len()).map_err(|_| FrameError::InvalidValue)?;
    dst.push(n);
    dst.extend_from_slice(value);
    Ok(())
}

/// Writes a field with a two-byte length prefix.
pub(crate) fn put16(dst: &mut Vec<u8>, value: &[u8]) -> Result<(), FrameError> {
    let n = u16::try_from(value.len()).map_err(|_| FrameError::InvalidValue)?;
    dst.extend_from_slice(&n.to_be_bytes());
    dst.extend_from_slice(value);
    Ok(())
}

/// A sub-slice of `payload` as `Bytes` sharing its memory (no copy).
pub(crate) fn share(payload: &Bytes, part: &[u8]) -> Bytes {
    payload.slice_ref(part)
}
