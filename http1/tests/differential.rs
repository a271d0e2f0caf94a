//! Differential test against httparse on valid heads: same method, target, version and fields.

mod support;

use gatehouse_http1::fuzzing::differential;
use proptest::prelude::*;

const BROWSER_GET: &[u8] = b"GET /dashboard/reports?year=2026&q=sales%20Q3 HTTP/1.1\r\n\
Host: app1.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Accept-Language: en-GB,en;q=0.9\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Cookie: theme=dark; __Host-gatehouse=AbCdEf0123456789-_AbCdEf0123456789\r\n\
Sec-Fetch-Site: same-origin\r\n\
Connection: keep-alive\r\n\r\n";

#[test]
fn browser_request_matches_httparse() {
    differential(BROWSER_GET);
    let parsed = support::req(BROWSER_GET);
    assert_eq!(parsed.fields.len(), 8);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn generated_heads_match_httparse(
        method in "[A-Z]{1,8}",
        target in "/[!#-~]{0,60}",
        http10 in any::<bool>(),
        fields in prop::collection::vec(("[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}", "[ -~\t\u{80}-\u{ff}]{0,60}"), 0..20),
    ) {
        let mut head = format!("{method} {target} HTTP/1.{}\r\nHost: h.test\r\n", if http10 { 0 } else { 1 }).into_bytes();
        for (n, v) in &fields {
            head.extend_from_slice(n.as_bytes());
            head.extend_from_slice(b": ");
            // Latin-1 code points become single obs-text bytes.
            head.extend(v.chars().map(|c| c as u32 as u8));
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        differential(&head);
    }
}
