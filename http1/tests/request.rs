//! Request heads against the rules of RFC 9112 sections 2, 3, 5 and 9, and RFC 9110, one test
//! per rule. Framing (section 6) lives in `framing.rs`.

mod support;

use gatehouse_http1::{BodyKind, Error, Limits, TargetForm, Version, FIELD_SLOTS};
use support::{parse_req, parse_req_with, req, req_err};

#[test]
fn rfc9112_3_simple_get_parses_with_fields_as_sent() {
    let r = req(b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nAccept:  text/html \r\n\r\n");
    assert_eq!(r.method, "GET");
    assert_eq!(r.target, "/a?b=c");
    assert_eq!(r.form, TargetForm::Origin);
    assert_eq!(r.version, Version::Http11);
    assert_eq!(r.host.as_deref(), Some(&b"example.com"[..]));
    assert_eq!(r.fields[1], (b"Accept".to_vec(), b"text/html".to_vec()));
    assert_eq!(r.body, BodyKind::Empty);
    assert!(r.keep_alive);
}

#[test]
fn rfc9112_2_2_one_leading_empty_line_is_ignored() {
    let r = req(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.head_len, 29);
    assert_eq!(
        req_err(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Method
    );
}

#[test]
fn rfc9112_2_2_bare_lf_is_rejected_everywhere() {
    assert_eq!(req_err(b"GET / HTTP/1.1\nHost: a\r\n\r\n"), Error::BareLf);
    assert_eq!(req_err(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), Error::BareLf);
    assert_eq!(req_err(b"GET / HTTP/1.1\r\nHost: a\r\n\n"), Error::BareLf);
    assert_eq!(
        req_err(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::BareLf
    );
}

#[test]
fn rfc9112_2_2_bare_cr_is_rejected() {
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"),
        Error::BareCr
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.1\rX\r\nHost: a\r\n\r\n"),
        Error::BareCr
    );
    assert_eq!(req_err(b"GET / HTTP/1.1\r\nHost: a\r\n\rX"), Error::BareCr);
}

#[test]
fn rfc9112_2_2_whitespace_before_first_field_is_rejected() {
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
        Error::ObsFold
    );
}

#[test]
fn rfc9112_2_3_only_http_1_0_and_1_1_are_spoken() {
    assert_eq!(req(b"GET / HTTP/1.0\r\n\r\n").version, Version::Http10);
    assert_eq!(
        req_err(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
        Error::VersionUnsupported
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
        Error::VersionUnsupported
    );
    assert_eq!(Error::VersionUnsupported.status(), 505);
    assert_eq!(
        req_err(b"GET / http/1.1\r\nHost: a\r\n\r\n"),
        Error::RequestLine
    );
    assert_eq!(
        req_err(b"GET / HTTP/11\r\nHost: a\r\n\r\n"),
        Error::RequestLine
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
        Error::RequestLine
    );
}

#[test]
fn rfc9112_3_request_line_has_exactly_one_space_between_parts() {
    assert_eq!(
        req_err(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Target
    );
    assert_eq!(
        req_err(b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::RequestLine
    );
    assert_eq!(
        req_err(b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Method
    );
    assert_eq!(
        req_err(b" GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Method
    );
}

#[test]
fn rfc9112_3_http_0_9_request_line_is_rejected() {
    assert_eq!(req_err(b"GET /\r\n\r\n"), Error::RequestLine);
}

#[test]
fn rfc9110_9_1_method_is_a_token() {
    assert_eq!(
        req(b"M-SEARCH / HTTP/1.1\r\nHost: a\r\n\r\n").method,
        "M-SEARCH"
    );
    assert_eq!(req_err(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), Error::Method);
    assert_eq!(
        req_err(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        Error::Method
    );
}

#[test]
fn rfc9112_3_2_target_forms() {
    assert_eq!(
        req(b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n").form,
        TargetForm::Absolute
    );
    assert_eq!(
        req(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n").form,
        TargetForm::Authority
    );
    assert_eq!(
        req(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").form,
        TargetForm::Asterisk
    );
    assert_eq!(
        req(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").form,
        TargetForm::Origin
    );
}

#[test]
fn rfc9112_3_2_3_authority_form_only_with_connect_and_connect_only_with_it() {
    assert_eq!(
        req_err(b"GET a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Target
    );
    assert_eq!(
        req_err(b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Target
    );
    assert_eq!(
        req_err(b"CONNECT a.example HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Target
    );
    assert_eq!(
        req_err(b"CONNECT user@a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Target
    );
}

#[test]
fn rfc9112_3_2_4_asterisk_form_only_with_options() {
    assert_eq!(req_err(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"), Error::Target);
}

#[test]
fn rfc9112_3_2_2_absolute_form_is_http_or_https_with_an_authority() {
    assert_eq!(
        req_err(b"GET mailto:a@b HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Target
    );
    assert_eq!(
        req_err(b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Target
    );
    assert_eq!(
        req(b"GET HTTPS://a/x HTTP/1.1\r\nHost: a\r\n\r\n").form,
        TargetForm::Absolute
    );
}

#[test]
fn rfc3986_target_bytes_outside_the_uri_alphabet_are_rejected() {
    assert_eq!(
        req_err(b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Target
    );
    assert_eq!(
        req_err(b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Target
    );
    assert_eq!(
        req_err(b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Target
    );
    assert_eq!(
        req_err(b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"),
        Error::Target
    );
}

#[test]
fn rfc9112_3_2_host_is_required_once_in_http_1_1() {
    assert_eq!(req_err(b"GET / HTTP/1.1\r\n\r\n"), Error::HostMissing);
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
        Error::HostDuplicate
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
        Error::HostInvalid
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
        Error::HostInvalid
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n"),
        Error::HostInvalid
    );
    assert!(req(b"GET / HTTP/1.0\r\n\r\n").host.is_none());
    assert_eq!(
        req(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n")
            .host
            .as_deref(),
        Some(&b"[::1]:8080"[..])
    );
}

#[test]
fn rfc9112_5_field_name_is_a_token_followed_directly_by_colon() {
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
        Error::WhitespaceBeforeColon
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"),
        Error::WhitespaceBeforeColon
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n"),
        Error::FieldName
    );
    assert_eq!(req_err(b"GET / HTTP/1.1\r\n: a\r\n\r\n"), Error::FieldName);
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost a\r\n\r\n"),
        Error::WhitespaceBeforeColon
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"),
        Error::FieldName
    );
}

#[test]
fn rfc9112_5_1_value_loses_surrounding_whitespace_only() {
    let r = req(b"GET / HTTP/1.1\r\nHost: a\r\nX: \t a \t b \t\r\nY:\r\nZ:   \r\n\r\n");
    assert_eq!(r.fields[1].1, b"a \t b");
    assert_eq!(r.fields[2].1, b"");
    assert_eq!(r.fields[3].1, b"");
}

#[test]
fn rfc9110_5_5_values_allow_htab_and_obs_text_but_no_other_controls() {
    let r = req(b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\tok\r\n\r\n");
    assert_eq!(r.fields[1].1, b"caf\xc3\xa9\tok");
    for ctl in (0u8..0x20)
        .filter(|&c| c != b'\t' && c != b'\r' && c != b'\n')
        .chain([0x7f])
    {
        let input = [
            &b"GET / HTTP/1.1\r\nHost: a\r\nX: a"[..],
            &[ctl],
            b"b\r\n\r\n",
        ]
        .concat();
        assert_eq!(req_err(&input), Error::FieldValue, "control {ctl:#x}");
    }
}

#[test]
fn rfc9112_5_2_obs_fold_is_rejected() {
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
        Error::ObsFold
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n"),
        Error::ObsFold
    );
}

#[test]
fn limits_request_line_over_8k_is_414_even_before_it_ends() {
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(8200));
    assert_eq!(req_err(long.as_bytes()), Error::RequestLineTooLong);
    assert_eq!(Error::RequestLineTooLong.status(), 414);
    let unfinished = format!("GET /{}", "a".repeat(9000));
    assert_eq!(req_err(unfinished.as_bytes()), Error::RequestLineTooLong);
    let fits = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(8192 - 17));
    assert!(req(fits.as_bytes()).target.len() == 8192 - 16);
}

#[test]
fn limits_header_section_over_64k_or_128_fields_is_431() {
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "v".repeat(64 * 1024)
    );
    assert_eq!(req_err(big.as_bytes()), Error::HeaderSectionTooLarge);
    let unfinished = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "v".repeat(70 * 1024));
    assert_eq!(req_err(unfinished.as_bytes()), Error::HeaderSectionTooLarge);
    // Host counts like any other field: Host and 127 more fit the default limit of 128
    // (FIELD_SLOTS, what the driver's field array holds); one more is 431.
    let head_with = |others: usize| {
        let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..others {
            head.push_str(&format!("X-{i}: v\r\n"));
        }
        head + "\r\n"
    };
    assert_eq!(req(head_with(127).as_bytes()).fields.len(), FIELD_SLOTS);
    let many = head_with(128);
    assert_eq!(req_err(many.as_bytes()), Error::TooManyFields);
    assert_eq!(Error::TooManyFields.status(), 431);
    // A lower limit is kept the same way.
    let limits = Limits {
        fields: 50,
        ..Limits::default()
    };
    assert!(parse_req_with(head_with(49).as_bytes(), &limits)
        .unwrap()
        .is_some());
    assert_eq!(
        parse_req_with(head_with(50).as_bytes(), &limits),
        Err(Error::TooManyFields)
    );
}

#[test]
fn partial_input_is_not_an_error() {
    let full = b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
    for end in 0..full.len() {
        assert_eq!(parse_req(&full[..end]), Ok(None), "prefix of {end} bytes");
    }
}

#[test]
fn rfc9112_9_3_persistence_defaults_per_version() {
    assert!(req(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
    assert!(!req(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!req(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n").keep_alive);
    assert!(!req(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(req(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
}

#[test]
fn rfc9110_10_1_1_expect_100_continue_and_nothing_else() {
    let r = req(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
    assert!(r.expect_continue);
    assert_eq!(
        req_err(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 3\r\n\r\n"),
        Error::ExpectationUnsupported
    );
    assert_eq!(Error::ExpectationUnsupported.status(), 417);
    // HTTP/1.0: the expectation MUST be ignored.
    assert!(
        !req(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
            .expect_continue
    );
}

#[test]
fn rfc9110_7_8_upgrade_needs_the_connection_token_and_http_1_1() {
    assert!(
        req(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .upgrade
    );
    assert!(!req(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").upgrade);
    assert!(!req(b"GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade);
}

#[test]
fn every_error_maps_to_a_client_error_or_501_505() {
    for e in [
        Error::BareLf,
        Error::ObsFold,
        Error::HostMissing,
        Error::ContentLengthInvalid,
    ] {
        assert_eq!(e.status(), 400);
        assert!(!e.reason().is_empty());
    }
    assert_eq!(Error::TransferCodingUnknown.status(), 501);
}

/// RFC 9110 7.2 and RFC 3986 3.2.2: a Host is `uri-host [":" port]` with a port of digits
/// only; an absolute-form target's authority likewise, and without userinfo (RFC 9110 4.2.4).
#[test]
fn rfc9110_7_2_host_and_target_authorities_are_host_and_digit_port() {
    use gatehouse_http1::authority_is_valid;
    for good in [
        &b"example.com"[..],
        b"example.com:8443",
        b"example.com:",
        b"127.0.0.1:80",
        b"[::1]:443",
        b"[2001:db8::1]",
        b"xn--bcher-kva.example",
    ] {
        assert!(
            authority_is_valid(good),
            "{}",
            String::from_utf8_lossy(good)
        );
    }
    for bad in [
        &b""[..],
        b":443",
        b"example.com:https",
        b"example.com:80:80",
        b"example.com:123456",
        b"user@example.com",
        b"[::1",
        b"[]:80",
        b"[::1]x",
        b"exa[mple.com",
    ] {
        assert!(!authority_is_valid(bad), "{}", String::from_utf8_lossy(bad));
    }
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost: example.com:https\r\n\r\n"),
        Error::HostInvalid
    );
    assert_eq!(
        req_err(b"GET http://user@example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"),
        Error::Target
    );
    let r = req(b"GET http://other.test:8443?q HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(r.form, TargetForm::Absolute);
}
