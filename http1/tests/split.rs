//! Every input split at every byte gives the same result as one piece (property tests).

mod support;

use gatehouse_http1::fuzzing::decode_all;
use gatehouse_http1::Error;
use proptest::prelude::*;
use support::parse_req;

/// Feeds `input` to the head parser the way a driver does (append, re-parse) after splitting
/// it at `cut`; the verdict must equal the one-piece verdict.
fn parse_split(input: &[u8], cut: usize) -> Result<Option<support::Req>, Error> {
    match parse_req(&input[..cut]) {
        Ok(None) => parse_req(input),
        Err(e) => Err(e),
        Ok(Some(r)) => Ok(Some(r)),
    }
}

fn field_line() -> impl Strategy<Value = String> {
    ("[A-Za-z][A-Za-z0-9-]{0,12}", "[ -~\t]{0,40}").prop_map(|(n, v)| format!("{n}: {v}\r\n"))
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "OPTIONS"]),
        "/[a-z0-9/?=&%.-]{0,40}",
        prop::collection::vec(field_line(), 0..8),
        prop::sample::select(vec![
            "",
            "Content-Length: 3\r\n",
            "Transfer-Encoding: chunked\r\n",
            "Connection: close\r\n",
        ]),
        any::<bool>(),
    )
        .prop_map(|(m, t, fields, framing, leading)| {
            let mut s = String::new();
            if leading {
                s.push_str("\r\n");
            }
            s.push_str(&format!("{m} {t} HTTP/1.1\r\nHost: example.test\r\n"));
            for f in fields {
                s.push_str(&f);
            }
            s.push_str(framing);
            s.push_str("\r\n");
            s.into_bytes()
        })
}

/// Arbitrary bytes biased towards the characters that matter to the parser.
fn noisy_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(b"GET / HTTP/1.1\r\n:;\t ,Host0aZ\x00\x7f\x80".to_vec()),
            1 => any::<u8>(),
        ],
        0..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn request_heads_give_the_same_result_for_every_split(input in request()) {
        let whole = parse_req(&input);
        prop_assert!(matches!(whole, Ok(Some(_))), "generated heads are valid: {:?}", whole);
        for cut in 0..=input.len() {
            prop_assert_eq!(&parse_split(&input, cut), &whole, "cut at {}", cut);
        }
    }

    #[test]
    fn arbitrary_bytes_give_the_same_result_for_every_split(input in noisy_bytes()) {
        let whole = parse_req(&input);
        for cut in 0..=input.len() {
            prop_assert_eq!(&parse_split(&input, cut), &whole, "cut at {}", cut);
        }
    }

    #[test]
    fn chunked_bodies_give_the_same_result_for_every_split(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..6),
        ext in any::<bool>(),
    ) {
        let mut wire = Vec::new();
        for c in &chunks {
            wire.extend_from_slice(format!("{:x}", c.len()).as_bytes());
            if ext { wire.extend_from_slice(b";a=b"); }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\nT: v\r\n\r\n");
        let whole = decode_all(&wire, wire.len());
        prop_assert_eq!(&whole.0, &chunks.concat());
        prop_assert_eq!(whole.2, Ok(true));
        for step in 1..=wire.len() {
            prop_assert_eq!(&decode_all(&wire, step), &whole);
        }
    }

    #[test]
    fn chunked_noise_gives_the_same_result_for_every_split(
        input in prop::collection::vec(prop::sample::select(b"0123456789abcdefABCDEF;=\" \t\r\nxX:".to_vec()), 0..80),
    ) {
        let whole = decode_all(&input, input.len().max(1));
        for step in 1..=input.len() {
            prop_assert_eq!(&decode_all(&input, step), &whole);
        }
    }
}
