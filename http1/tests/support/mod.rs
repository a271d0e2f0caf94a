//! Helpers shared by the integration tests: parse into owned summaries so tests can compare
//! results without juggling buffer lifetimes.
#![allow(dead_code, unreachable_pub)]

use gatehouse_http1::{
    parse_request, parse_response, BodyKind, Error, Field, Limits, RequestMethod, Status,
    TargetForm, Version,
};

/// An owned copy of a parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub form: TargetForm,
    pub version: Version,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    pub host: Option<Vec<u8>>,
    pub body: BodyKind,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub upgrade: bool,
    pub head_len: usize,
}

pub fn parse_req_with(input: &[u8], limits: &Limits) -> Result<Option<Req>, Error> {
    let mut fields = [Field::EMPTY; 128];
    Ok(match parse_request(input, &mut fields, limits)? {
        Status::Partial => None,
        Status::Complete(h) => Some(Req {
            method: h.method_str().to_owned(),
            target: h.target_str().to_owned(),
            form: h.form,
            version: h.version,
            fields: h
                .fields
                .as_slice()
                .iter()
                .map(|f| (f.name.to_vec(), f.value.to_vec()))
                .collect(),
            host: h.host.map(<[u8]>::to_vec),
            body: h.body,
            keep_alive: h.keep_alive,
            expect_continue: h.expect_continue,
            upgrade: h.upgrade,
            head_len: h.head_len,
        }),
    })
}

pub fn parse_req(input: &[u8]) -> Result<Option<Req>, Error> {
    parse_req_with(input, &Limits::default())
}

/// A head that must parse completely.
#[track_caller]
pub fn req(input: &[u8]) -> Req {
    match parse_req(input) {
        Ok(Some(r)) => r,
        other => panic!(
            "expected a complete head for {:?}, got {other:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

/// A head that must be rejected; returns why.
#[track_caller]
pub fn req_err(input: &[u8]) -> Error {
    match parse_req(input) {
        Err(e) => e,
        other => panic!(
            "expected an error for {:?}, got {other:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

/// An owned copy of a parsed response head plus its framing for a GET.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resp {
    pub status: u16,
    pub reason: Vec<u8>,
    pub version: Version,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    pub body_get: Result<BodyKind, Error>,
    pub body_head: Result<BodyKind, Error>,
    pub reusable: bool,
    pub head_len: usize,
}

pub fn parse_resp(input: &[u8]) -> Result<Option<Resp>, Error> {
    let mut fields = [Field::EMPTY; 128];
    Ok(
        match parse_response(input, &mut fields, &Limits::default())? {
            Status::Partial => None,
            Status::Complete(h) => Some(Resp {
                status: h.status,
                reason: h.reason.to_vec(),
                version: h.version,
                fields: h
                    .fields
                    .as_slice()
                    .iter()
                    .map(|f| (f.name.to_vec(), f.value.to_vec()))
                    .collect(),
                body_get: h.body(RequestMethod::default()),
                body_head: h.body(RequestMethod {
                    head: true,
                    connect: false,
                }),
                reusable: h.reusable(RequestMethod::default()),
                head_len: h.head_len,
            }),
        },
    )
}

#[track_caller]
pub fn resp(input: &[u8]) -> Resp {
    match parse_resp(input) {
        Ok(Some(r)) => r,
        other => panic!("expected a complete response head, got {other:?}"),
    }
}
