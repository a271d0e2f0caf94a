//! A minimal HTTP/1.1 client: one request, the whole (bounded) response. Enough for OpenID
//! discovery, JWKS and token calls; the proxy path streams with [`super::Conn`] directly.

use std::time::Instant;

use bytes::BytesMut;

use super::{Conn, ConnError, Transport};
use crate::{BodyDecoder, HeadWriter, Limits, RequestMethod, Version};

/// A request to send.
#[derive(Clone, Debug)]
pub struct ClientRequest<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The origin-form target, e.g. `/.well-known/openid-configuration`.
    pub target: &'a str,
    /// The Host field value.
    pub host: &'a str,
    /// Further fields (not Host, Content-Length or Connection: those are set here).
    pub fields: &'a [(&'a str, &'a [u8])],
    /// The body; sent with a Content-Length.
    pub body: &'a [u8],
}

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientResponse {
    /// The status code.
    pub status: u16,
    /// Field names (lower-cased) and values, in order.
    pub fields: Vec<(String, Vec<u8>)>,
    /// The body, decoded from its transfer coding.
    pub body: Vec<u8>,
}

impl ClientResponse {
    /// The first value of field `name` (give it lower-case).
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Connects to the first address of `address` that answers before `deadline`. Name
/// resolution blocks the thread briefly: callers use this off the request path.
pub async fn connect<A: std::net::ToSocketAddrs + std::fmt::Display>(
    address: A,
    deadline: Instant,
) -> Result<monoio::net::TcpStream, String> {
    let addrs: Vec<std::net::SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?
        .collect();
    let mut last = format!("{address}: no address");
    for addr in addrs {
        match monoio::time::timeout_at(deadline.into(), monoio::net::TcpStream::connect(addr)).await
        {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: timed out"),
        }
    }
    Err(last)
}

/// Sends `request` on `io` and reads the whole response, whose body may be at most
/// `max_body` bytes. The connection is not reused (`Connection: close`), which keeps this
/// client simple; it is not on any per-request path.
pub async fn fetch<S: Transport>(
    io: S,
    request: &ClientRequest<'_>,
    max_body: usize,
    deadline: Option<Instant>,
) -> Result<ClientResponse, ConnError> {
    let mut head = Vec::with_capacity(256 + request.body.len());
    let mut w = HeadWriter::request(&mut head, request.method, request.target, Version::Http11)?;
    w.field(b"Host", request.host.as_bytes())?;
    for (name, value) in request.fields {
        w.field(name.as_bytes(), value)?;
    }
    if !request.body.is_empty() || matches!(request.method, "POST" | "PUT" | "PATCH") {
        w.field_u64(b"Content-Length", request.body.len() as u64)?;
    }
    w.field(b"Connection", b"close")?;
    w.finish();
    head.extend_from_slice(request.body);

    let mut conn = Conn::new(io, BytesMut::with_capacity(16 * 1024), Limits::default());
    conn.write_vec(head).await.0?;
    let method = RequestMethod {
        head: request.method == "HEAD",
        connect: false,
    };
    loop {
        let (status, fields, body_kind) = conn
            .read_response_head(deadline, |h| {
                let fields = h
                    .fields
                    .as_slice()
                    .iter()
                    .map(|f| {
                        (
                            String::from_utf8_lossy(f.name).to_ascii_lowercase(),
                            f.value.to_vec(),
                        )
                    })
                    .collect::<Vec<_>>();
                (h.status, fields, h.body(method))
            })
            .await?;
        // RFC 9110 15.2: a client MUST be able to parse interim responses, and ignores them.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let mut decoder = BodyDecoder::new(body_kind?, &Limits::default());
        let mut body = Vec::new();
        while let Some(chunk) = conn.next_body_chunk(&mut decoder, deadline).await? {
            if body.len() + chunk.len() > max_body {
                return Err(ConnError::BodyTooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        return Ok(ClientResponse {
            status,
            fields,
            body,
        });
    }
}
