//! RESPONSE: the response head of a stream, connector to service. Payload: `status (16)`,
//! body length (see `fields`), fields. END_STREAM: no DATA follows.

use bytes::Bytes;

use super::fields::{self, BodyLength, FieldIter};
use super::{finish_header, reserve_header, wire::Reader, FrameType, END_STREAM};
use crate::{FrameError, StreamId};

/// A decoded RESPONSE frame; fields are read in place from the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The stream.
    pub stream: StreamId,
    /// END_STREAM: the response has no body frames.
    pub end: bool,
    /// The HTTP status code (100 to 999).
    pub status: u16,
    /// The body length the back end announced.
    pub body: BodyLength,
    payload: Bytes,
    fields_at: usize,
    field_count: u16,
}

/// What goes into a RESPONSE frame.
#[derive(Clone, Debug)]
pub struct ResponseParts<F> {
    /// The stream.
    pub stream: StreamId,
    /// END_STREAM.
    pub end: bool,
    /// The status code.
    pub status: u16,
    /// The body length.
    pub body: BodyLength,
    /// The fields (name, value), in order.
    pub fields: F,
}

impl Response {
    /// Decodes the payload.
    pub fn decode(stream: StreamId, end: bool, payload: Bytes) -> Result<Self, FrameError> {
        let mut r = Reader::new(&payload);
        let status = r.u16()?;
        if !(100..=999).contains(&status) {
            return Err(FrameError::InvalidValue);
        }
        let body = BodyLength::decode(&mut r)?;
        let (fields_at, field_count) = fields::validate(&mut r)?;
        r.finish()?;
        Ok(Response {
            stream,
            end,
            status,
            body,
            payload,
            fields_at,
            field_count,
        })
    }

    /// The fields, in order.
    pub fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.payload, self.fields_at, self.field_count)
    }

    /// Encodes this frame again (for relaying or tests).
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        ResponseParts {
            stream: self.stream,
            end: self.end,
            status: self.status,
            body: self.body,
            fields: self.fields(),
        }
        .encode(dst)
    }
}

impl<'a, F: IntoIterator<Item = (&'a [u8], &'a [u8])>> ResponseParts<F> {
    /// Encodes the frame.
    pub fn encode(self, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        if !(100..=999).contains(&self.status) {
            return Err(FrameError::InvalidValue);
        }
        let start = reserve_header(dst);
        dst.extend_from_slice(&self.status.to_be_bytes());
        self.body.encode(dst);
        fields::encode(dst, self.fields)?;
        let flags = if self.end { END_STREAM } else { 0 };
        finish_header(dst, start, FrameType::Response, flags, self.stream)
    }
}
