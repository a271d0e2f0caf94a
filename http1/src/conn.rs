//! Connection semantics of the server side (RFC 9112 9): one request at a time, keep-alive,
//! pipelined requests taken from leftover bytes, 100-continue and protocol upgrades.

use crate::chunked::BodyEvent;
use crate::request::parse_request;
use crate::{BodyDecoder, BodyKind, Error, Field, Limits, RequestHead, Status};

/// The server side of one HTTP/1.x connection, without IO.
///
/// Call order, per request:
/// 1. [`ServerConn::handle_input`] with the unconsumed bytes of the read buffer until it yields
///    [`ServerEvent::Request`]; then keep calling it for the body events until
///    [`BodyEvent::End`]. Advance the read buffer by the consumed count after every call.
/// 2. If [`ServerConn::wants_continue`] is true and you will read the body, write
///    [`crate::CONTINUE_100`] and call [`ServerConn::continue_sent`].
/// 3. [`ServerConn::response_head`] when the final response head goes out, then
///    [`ServerConn::response_complete`] when its body has been written: it says whether to
///    read the next request (pipelined bytes may already be in the buffer) or close.
///
/// While a response is outstanding, `handle_input` returns [`ServerEvent::Wait`]: pipelined
/// requests stay in the buffer untouched until their turn.
#[derive(Debug)]
pub struct ServerConn {
    limits: Limits,
    state: ServerState,
}

/// What the input held.
#[derive(Debug)]
pub enum ServerEvent<'b, 'f> {
    /// A piece of the current request's body (see [`BodyEvent`]).
    Body(BodyEvent<'b>),
    /// Not enough input for a request head yet.
    NeedMore,
    /// A new request head.
    Request(RequestHead<'b, 'f>),
    /// The protocol was switched: every byte from here on belongs to the new protocol.
    Upgraded,
    /// The current request is complete; further input waits until its response is done.
    Wait,
}

/// What to do after a response has been written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Close the connection.
    Close,
    /// Read the next request.
    ReadRequest,
    /// Hand the connection (and the unconsumed bytes) to the upgraded protocol.
    Upgraded,
}

#[derive(Debug)]
enum ServerState {
    Body {
        decoder: BodyDecoder,
        request: Current,
    },
    Closed,
    Head,
    Respond {
        request: Current,
        body_done: bool,
    },
    Upgraded,
}

/// What the connection must remember about the request being served.
#[derive(Clone, Copy, Debug)]
struct Current {
    keep_alive: bool,
    upgrade: bool,
    expect_continue: bool,
    continue_sent: bool,
    response_started: bool,
    close_after_response: bool,
    switched: bool,
}

impl ServerConn {
    /// A connection that enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        ServerConn {
            limits,
            state: ServerState::Head,
        }
    }

    /// Feeds the unconsumed input; returns how many bytes were consumed and what they were.
    pub fn handle_input<'b, 'f>(
        &mut self,
        input: &'b [u8],
        fields: &'f mut [Field<'b>],
    ) -> Result<(usize, ServerEvent<'b, 'f>), Error> {
        match &mut self.state {
            ServerState::Head => {
                let result = parse_request(input, fields, &self.limits);
                let head = match result {
                    Ok(Status::Complete(head)) => head,
                    Ok(Status::Partial) => return Ok((0, ServerEvent::NeedMore)),
                    Err(e) => {
                        self.state = ServerState::Closed;
                        return Err(e);
                    }
                };
                let request = Current {
                    keep_alive: head.keep_alive,
                    upgrade: head.upgrade,
                    expect_continue: head.expect_continue,
                    continue_sent: false,
                    response_started: false,
                    close_after_response: false,
                    switched: false,
                };
                self.state = match head.body {
                    BodyKind::Empty => ServerState::Respond {
                        request,
                        body_done: true,
                    },
                    kind => ServerState::Body {
                        decoder: BodyDecoder::new(kind, &self.limits),
                        request,
                    },
                };
                Ok((head.head_len, ServerEvent::Request(head)))
            }
            ServerState::Body { decoder, request } => {
                let (n, event) = match decoder.decode(input) {
                    Ok(decoded) => decoded,
                    Err(e) => {
                        self.state = ServerState::Closed;
                        return Err(e);
                    }
                };
                if event == BodyEvent::End {
                    self.state = ServerState::Respond {
                        request: *request,
                        body_done: true,
                    };
                }
                Ok((n, ServerEvent::Body(event)))
            }
            ServerState::Respond { .. } | ServerState::Closed => Ok((0, ServerEvent::Wait)),
            ServerState::Upgraded => Ok((0, ServerEvent::Upgraded)),
        }
    }

    /// Whether the client waits for `100 Continue` before sending the body we are about to read.
    pub fn wants_continue(&self) -> bool {
        match &self.state {
            ServerState::Body { request, .. } => {
                request.expect_continue && !request.continue_sent && !request.response_started
            }
            _ => false,
        }
    }

    /// Records that `100 Continue` was written.
    pub fn continue_sent(&mut self) {
        if let ServerState::Body { request, .. } = &mut self.state {
            request.continue_sent = true;
        }
    }

    /// Records the final response head (status >= 200, or 101). `close` is true when the
    /// response says `Connection: close` or is close-delimited. Returns whether the protocol
    /// switches after this head.
    pub fn response_head(&mut self, status: u16, close: bool) -> bool {
        let request = match &mut self.state {
            ServerState::Body { request, .. } | ServerState::Respond { request, .. } => request,
            _ => return false,
        };
        request.response_started = true;
        request.close_after_response |= close;
        request.switched = status == 101 && request.upgrade;
        request.switched
    }

    /// The response is fully written: what happens to the connection now.
    pub fn response_complete(&mut self) -> Next {
        let (request, body_done) = match &self.state {
            ServerState::Respond { request, body_done } => (*request, *body_done),
            // The request body was never read to its end, so we cannot find the next request.
            ServerState::Body { .. } => {
                self.state = ServerState::Closed;
                return Next::Close;
            }
            ServerState::Upgraded => return Next::Upgraded,
            ServerState::Closed | ServerState::Head => {
                self.state = ServerState::Closed;
                return Next::Close;
            }
        };
        if request.switched {
            self.state = ServerState::Upgraded;
            return Next::Upgraded;
        }
        // An upgrade that was asked for but refused leaves the client free to have sent bytes
        // of the new protocol already; never read those as the next request.
        if body_done && request.keep_alive && !request.close_after_response && !request.upgrade {
            self.state = ServerState::Head;
            Next::ReadRequest
        } else {
            self.state = ServerState::Closed;
            Next::Close
        }
    }
}
