//! The one error type of the HTTP/1.1 engine.

use std::fmt;

/// Why a message was rejected.
///
/// Each variant maps to exactly one status code ([`Error::status`]) and one short, fixed reason
/// ([`Error::reason`]) that is safe to show on an error page and to write to a log: neither
/// contains bytes from the peer. After any of these the connection must be closed (RFC 9112 6.3:
/// a message whose framing is in doubt leaves the rest of the stream in doubt too).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// A CR that is not followed by LF.
    BareCr,
    /// An LF that is not preceded by CR (Gatehouse does not accept bare LF as a line end).
    BareLf,
    /// A chunk size takes the body past the size limit (413).
    BodyTooLarge,
    /// A chunk-size line or chunk extension longer than the configured limit.
    ChunkLineTooLong,
    /// A chunk-size that is not hexadecimal or does not fit in 64 bits.
    ChunkSize,
    /// Chunk extensions that break the grammar of RFC 9112 7.1.1.
    ChunkExtension,
    /// Chunk data not followed by CRLF.
    ChunkDataEnd,
    /// A CONNECT request that carries content framing.
    ConnectWithBody,
    /// A Content-Length that is not a plain decimal number, or overflows.
    ContentLengthInvalid,
    /// Several Content-Length values that differ.
    ContentLengthMismatch,
    /// Content-Length and Transfer-Encoding in one message.
    ContentLengthWithTransferEncoding,
    /// An Expect field with an expectation other than `100-continue`.
    ExpectationUnsupported,
    /// A field name that is not a token.
    FieldName,
    /// A field value with a control character.
    FieldValue,
    /// A header section larger than the configured limit.
    HeaderSectionTooLarge,
    /// An HTTP/1.1 request without a Host field.
    HostMissing,
    /// More than one Host field.
    HostDuplicate,
    /// A Host value that is not `uri-host [ ":" port ]`.
    HostInvalid,
    /// The body ended (connection closed) before its declared length.
    IncompleteBody,
    /// A method that is not a token.
    Method,
    /// A field line folded onto the previous one (obs-fold).
    ObsFold,
    /// A request line longer than the configured limit.
    RequestLineTooLong,
    /// A malformed status line or status code.
    StatusLine,
    /// A request target that does not fit its form, or holds bytes outside the URI alphabet.
    Target,
    /// Too many header or trailer fields.
    TooManyFields,
    /// A trailer section larger than the configured limit.
    TrailerSectionTooLarge,
    /// A transfer coding that Gatehouse does not implement.
    TransferCodingUnknown,
    /// A request whose final transfer coding is not chunked, or that applies chunked twice.
    TransferCodingChunkedNotFinal,
    /// A Transfer-Encoding value that is not a list of transfer codings.
    TransferEncodingInvalid,
    /// Transfer-Encoding in an HTTP/1.0 message.
    TransferEncodingInHttp10,
    /// A request line or status line that does not follow `token SP target SP version`.
    RequestLine,
    /// Something other than HTTP/1.0 or HTTP/1.1 in a well-formed version field.
    VersionUnsupported,
    /// Whitespace between a field name and its colon.
    WhitespaceBeforeColon,
}

impl Error {
    /// The status code this rejection maps to.
    pub fn status(self) -> u16 {
        match self {
            Error::RequestLineTooLong => 414,
            Error::HeaderSectionTooLarge | Error::TooManyFields | Error::TrailerSectionTooLarge => {
                431
            }
            Error::ExpectationUnsupported => 417,
            Error::BodyTooLarge => 413,
            Error::TransferCodingUnknown => 501,
            Error::VersionUnsupported => 505,
            // A response we cannot frame is the back end's fault: the client gets 502.
            Error::StatusLine => 502,
            _ => 400,
        }
    }

    /// A short, fixed description for error pages and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Error::BareCr => "bare CR in message",
            Error::BodyTooLarge => "body larger than accepted",
            Error::BareLf => "bare LF in message (CRLF required)",
            Error::ChunkLineTooLong => "chunk-size line too long",
            Error::ChunkSize => "invalid chunk size",
            Error::ChunkExtension => "invalid chunk extension",
            Error::ChunkDataEnd => "chunk data not followed by CRLF",
            Error::ConnectWithBody => "CONNECT request with content",
            Error::ContentLengthInvalid => "invalid Content-Length",
            Error::ContentLengthMismatch => "conflicting Content-Length values",
            Error::ContentLengthWithTransferEncoding => {
                "both Content-Length and Transfer-Encoding present"
            }
            Error::ExpectationUnsupported => "unsupported expectation",
            Error::FieldName => "invalid field name",
            Error::FieldValue => "invalid field value",
            Error::HeaderSectionTooLarge => "header section too large",
            Error::HostMissing => "missing Host field",
            Error::HostDuplicate => "more than one Host field",
            Error::HostInvalid => "invalid Host field",
            Error::IncompleteBody => "message body ended early",
            Error::Method => "invalid method",
            Error::ObsFold => "obsolete line folding",
            Error::RequestLineTooLong => "request line too long",
            Error::StatusLine => "invalid status line",
            Error::Target => "invalid request target",
            Error::TooManyFields => "too many fields",
            Error::TrailerSectionTooLarge => "trailer section too large",
            Error::TransferCodingUnknown => "transfer coding not implemented",
            Error::TransferCodingChunkedNotFinal => "chunked is not the final transfer coding",
            Error::TransferEncodingInvalid => "invalid Transfer-Encoding",
            Error::TransferEncodingInHttp10 => "Transfer-Encoding in HTTP/1.0",
            Error::RequestLine => "malformed request line",
            Error::VersionUnsupported => "HTTP version not supported",
            Error::WhitespaceBeforeColon => "whitespace before colon in field line",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for Error {}
