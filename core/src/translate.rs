//! What the connector rewrites between the external and the internal side of a published app.
//!
//! Requests: the target's path prefix and the forwarding fields. Responses: internal URLs in
//! Location, Content-Location, Refresh and Set-Cookie, which the browser could not reach, become
//! external ones ("link translation" for headers). Pure functions: no I/O, and nothing is
//! allocated but what is pushed into the caller's `out`.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

/// One side of a published app: where it is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin<'a> {
    /// Whether the scheme is https (else http).
    pub https: bool,
    /// Host, lower-case; an IPv6 literal without brackets.
    pub host: &'a str,
    /// Port, also when it is the scheme's default.
    pub port: u16,
    /// Path prefix, starting and ending with '/' (just "/" for a whole host).
    pub path_prefix: &'a str,
}

/// Where an app is published and where it really lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping<'a> {
    /// The origin browsers use, served by the service.
    pub external: Origin<'a>,
    /// The origin of the app inside the private network, dialled by the connector.
    pub internal: Origin<'a>,
}

/// Location / Content-Location: if `value` is an absolute URL (or scheme-relative `//host/...`,
/// resolved against the internal scheme) whose scheme+host+port equal the internal origin (host
/// compared ASCII-case-insensitively, default ports 80/443 equal to an omitted port) and whose
/// path starts with the internal path prefix, append the translated URL (external
/// scheme://host[:port if not default] + external prefix + rest of path, query and fragment kept)
/// to `out` and return true. An origin-relative path (`/x`) starting with the internal prefix is
/// rewritten to the external prefix (path only) when the prefixes differ. The bare prefix (`/app`
/// for `/app/`) counts as the prefix and maps to the bare external one. Otherwise leave `out`
/// untouched and return false; URLs with userinfo are never translated.
pub fn translate_location(value: &[u8], map: &Mapping<'_>, out: &mut Vec<u8>) -> bool {
    let (internal, external) = (&map.internal, &map.external);
    let (https, after_scheme) = if let Some(rest) = strip_prefix_ci(value, "http://") {
        (false, rest)
    } else if let Some(rest) = strip_prefix_ci(value, "https://") {
        (true, rest)
    } else if let Some(rest) = value.strip_prefix(b"//") {
        // RFC 3986 4.2: a network-path reference takes the scheme of the request, which the
        // app received on the internal side.
        (internal.https, rest)
    } else if value.first() == Some(&b'/') {
        if internal.path_prefix == external.path_prefix {
            return false;
        }
        let Some((slash, rest)) = after_prefix(value, internal.path_prefix) else {
            return false;
        };
        push_prefix(out, external.path_prefix, slash);
        out.extend_from_slice(rest);
        return true;
    } else {
        return false;
    };
    // RFC 3986 3.2: the authority ends at the first '/', '?' or '#'.
    let end = after_scheme
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(after_scheme.len());
    let (authority, path) = after_scheme.split_at(end);
    let Some((host, port)) = host_port(authority, https) else {
        return false;
    };
    if https != internal.https
        || port != internal.port
        || !host.eq_ignore_ascii_case(internal.host.as_bytes())
    {
        return false;
    }
    let Some((slash, rest)) = after_prefix(path, internal.path_prefix) else {
        return false;
    };
    out.extend_from_slice(if external.https {
        &b"https://"[..]
    } else {
        &b"http://"[..]
    });
    host_value(external, out);
    push_prefix(out, external.path_prefix, slash);
    out.extend_from_slice(rest);
    true
}

/// Refresh: `5; url=http://internal/x` (also `URL=`, quotes, spaces, no `url=` at all): translate
/// the URL part with [`translate_location`] rules; keep the rest byte-for-byte. Returns false,
/// `out` untouched, when there is no URL part or it is not translated.
pub fn translate_refresh(value: &[u8], map: &Mapping<'_>, out: &mut Vec<u8>) -> bool {
    let Some((start, end)) = refresh_url(value) else {
        return false;
    };
    let mark = out.len();
    out.extend_from_slice(&value[..start]);
    if !translate_location(&value[start..end], map, out) {
        out.truncate(mark);
        return false;
    }
    out.extend_from_slice(&value[end..]);
    true
}

/// Set-Cookie: a `Domain=` attribute (case-insensitive name, optional leading dot in the value)
/// equal to the internal host, or a parent domain of the internal host that is not a parent of
/// the external host, is replaced by the external host; a `Path=` attribute starting with the
/// internal path prefix gets the external prefix when the prefixes differ. Everything else
/// byte-for-byte. Returns false (`out` untouched) when nothing changed.
pub fn translate_set_cookie(value: &[u8], map: &Mapping<'_>, out: &mut Vec<u8>) -> bool {
    let (internal, external) = (&map.internal, &map.external);
    let mark = out.len();
    let (mut copied, mut next) = (0, 0);
    // RFC 6265 5.2: the first ';'-separated element is the name=value pair, the rest attributes.
    for (n, part) in value.split(|&b| b == b';').enumerate() {
        let start = next;
        next += part.len() + 1;
        let Some(eq) = part.iter().position(|&b| b == b'=').filter(|_| n > 0) else {
            continue;
        };
        let (_, name) = trim(&part[..eq]);
        let (offset, attr) = trim(&part[eq + 1..]);
        let from = start + eq + 1 + offset;
        if name.eq_ignore_ascii_case(b"domain") && domain_is_internal(attr, map) {
            out.extend_from_slice(&value[copied..from]);
            out.extend_from_slice(external.host.as_bytes());
        } else if name.eq_ignore_ascii_case(b"path") && internal.path_prefix != external.path_prefix
        {
            let Some((slash, rest)) = after_prefix(attr, internal.path_prefix) else {
                continue;
            };
            out.extend_from_slice(&value[copied..from]);
            push_prefix(out, external.path_prefix, slash);
            out.extend_from_slice(rest);
        } else {
            continue;
        }
        copied = from + attr.len();
    }
    if copied == 0 {
        return false;
    }
    out.extend_from_slice(&value[copied..]);
    // Same host on both sides: a "replacement" may give back the very same bytes.
    if out[mark..] == *value {
        out.truncate(mark);
        return false;
    }
    true
}

/// Request target: the external path prefix replaced by the internal one (`/wiki/page?x` with
/// prefixes `/wiki/` -> `/app/` gives `/app/page?x`). Returns false when the target does not
/// start with the external prefix (the service only routes matching requests, so that is a
/// caller bug), when it is not origin-form, or when its path holds a dot segment (`.` or `..`,
/// also percent-encoded, between `/`, `\`, `%2F`, `%5C` or before `;`): a back end that resolves
/// it could serve files outside the internal prefix, and browsers never send one (answer 400).
pub fn translate_target(target: &[u8], map: &Mapping<'_>, out: &mut Vec<u8>) -> bool {
    // RFC 9112 3.2.1: origin-form = absolute-path [ "?" query ]
    if target.first() != Some(&b'/') || has_dot_segment(target) {
        return false;
    }
    let Some(rest) = target.strip_prefix(map.external.path_prefix.as_bytes()) else {
        return false;
    };
    out.extend_from_slice(map.internal.path_prefix.as_bytes());
    out.extend_from_slice(rest);
    true
}

/// Host header value for a side: host (IPv6 in brackets) plus `:port` unless the port is the
/// scheme's default.
pub fn host_value(origin: &Origin<'_>, out: &mut Vec<u8>) {
    let host = origin.host.as_bytes();
    // RFC 3986 3.2.2: an IPv6 literal is bracketed so its colons are not read as the port.
    if host.contains(&b':') {
        out.push(b'[');
        out.extend_from_slice(host);
        out.push(b']');
    } else {
        out.extend_from_slice(host);
    }
    if origin.port != default_port(origin.https) {
        // Writing to a Vec cannot fail.
        let _ = write!(out, ":{}", origin.port);
    }
}

/// X-Forwarded-For value: the client's IP (no port; IPv6 without brackets; an IPv4-mapped IPv6
/// address as plain IPv4), exactly one value (the service is the edge, it never trusts a
/// client-supplied chain).
pub fn forwarded_for(client: SocketAddr, out: &mut Vec<u8>) {
    // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; back ends log and match the
    // IPv4 form. Writing to a Vec cannot fail.
    let _ = write!(out, "{}", client.ip().to_canonical());
}

/// RFC 7239 Forwarded value: `for=192.0.2.1;host=wiki.example.com;proto=https`, IPv6 as
/// `for="[2001:db8::1]"`, host quoted when it has a port or other chars outside token. An empty
/// host, or one with control characters, is left out.
pub fn forwarded(client: SocketAddr, external_host: &[u8], https: bool, out: &mut Vec<u8>) {
    // RFC 7239 6: an IPv6 node is bracketed and, as ':' is not a token char, quoted.
    // Writing to a Vec cannot fail.
    let _ = match client.ip().to_canonical() {
        IpAddr::V4(ip) => write!(out, "for={ip}"),
        IpAddr::V6(ip) => write!(out, "for=\"[{ip}]\""),
    };
    // A control character cannot be carried in a quoted-string (RFC 9110 5.6.4); dropping the
    // parameter is better than splitting the field.
    let printable = external_host
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    if !external_host.is_empty() && printable {
        out.extend_from_slice(b";host=");
        if external_host.iter().all(|&b| is_tchar(b)) {
            out.extend_from_slice(external_host);
        } else {
            out.push(b'"');
            for &b in external_host {
                if b == b'"' || b == b'\\' {
                    out.push(b'\\');
                }
                out.push(b);
            }
            out.push(b'"');
        }
    }
    out.extend_from_slice(if https {
        &b";proto=https"[..]
    } else {
        &b";proto=http"[..]
    });
}

/// Request field names the service never forwards from a client, because the proxy sets them or
/// because back ends trust them for routing: every `X-Forwarded-*` (For, Host, Proto, Port,
/// Prefix, Server, Uri, User, Email, Groups, Ssl, Scheme, ...), Forwarded, X-Real-IP,
/// X-Original-URL, X-Rewrite-URL, X-Original-Host, X-Envoy-Original-Path, X-Client-IP,
/// True-Client-IP, `X-Gatehouse-*` and `X-MS-Client-Principal*`. Case-insensitive, and names
/// spelled with '_' instead of '-' match too (back ends that fold '_' to '-' must not be fooled).
pub fn is_proxy_controlled(name: &[u8]) -> bool {
    const NAMES: [&str; 8] = [
        "forwarded",
        "true-client-ip",
        "x-client-ip",
        "x-envoy-original-path",
        "x-original-host",
        "x-original-url",
        "x-real-ip",
        "x-rewrite-url",
    ];
    const PREFIXES: [&str; 3] = ["x-forwarded-", "x-gatehouse-", "x-ms-client-principal"];
    NAMES.iter().any(|n| folded_eq(name, n))
        || PREFIXES
            .iter()
            .any(|p| name.get(..p.len()).is_some_and(|head| folded_eq(head, p)))
}

fn default_port(https: bool) -> u16 {
    if https {
        443
    } else {
        80
    }
}

/// `name` equals `lower` (lower-case, '-' spelled) ignoring ASCII case and '_' for '-'.
fn folded_eq(name: &[u8], lower: &str) -> bool {
    name.len() == lower.len()
        && name.iter().zip(lower.bytes()).all(|(&n, l)| {
            let n = if n == b'_' {
                b'-'
            } else {
                n.to_ascii_lowercase()
            };
            n == l
        })
}

fn strip_prefix_ci<'v>(value: &'v [u8], prefix: &str) -> Option<&'v [u8]> {
    let (head, rest) = value.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix.as_bytes()).then_some(rest)
}

/// Host and port of an authority, `None` when it is not a plain `host[:port]`.
fn host_port(authority: &[u8], https: bool) -> Option<(&[u8], u16)> {
    // Userinfo is refused rather than skipped: parsers disagree on where it ends
    // (`http://a@b@c/`, `http://a\@b/`), and a translated URL must mean one thing.
    if authority.contains(&b'@') {
        return None;
    }
    let (host, port) = if let [b'[', literal @ ..] = authority {
        let close = literal.iter().position(|&b| b == b']')?;
        (&literal[..close], &literal[close + 1..])
    } else {
        let colon = authority
            .iter()
            .position(|&b| b == b':')
            .unwrap_or(authority.len());
        authority.split_at(colon)
    };
    let port = match port {
        // RFC 3986 6.2.3: an empty port is the scheme's default.
        [] | [b':'] => default_port(https),
        [b':', digits @ ..] if digits.iter().all(u8::is_ascii_digit) => {
            digits.iter().try_fold(0u16, |n, &d| {
                n.checked_mul(10)?.checked_add(u16::from(d - b'0'))
            })?
        }
        _ => return None,
    };
    Some((host, port))
}

/// What follows `prefix` in `path` (a path, possibly with query and fragment), and whether the
/// prefix matched with its trailing '/' (else as the bare `/app`, followed by nothing, '?' or
/// '#'). An empty path, or only a query or fragment, is `/` (RFC 3986 6.2.3).
fn after_prefix<'v>(path: &'v [u8], prefix: &str) -> Option<(bool, &'v [u8])> {
    let prefix = prefix.as_bytes();
    if matches!(path.first(), None | Some(b'?' | b'#')) {
        return (prefix == b"/").then_some((true, path));
    }
    if let Some(rest) = path.strip_prefix(prefix) {
        return Some((true, rest));
    }
    let bare = prefix.strip_suffix(b"/").filter(|bare| !bare.is_empty())?;
    let rest = path.strip_prefix(bare)?;
    matches!(rest.first(), None | Some(b'?' | b'#')).then_some((false, rest))
}

/// Writes `prefix`, or when `slash` is false its bare form (`/wiki` for `/wiki/`, `/` for `/`).
fn push_prefix(out: &mut Vec<u8>, prefix: &str, slash: bool) {
    let prefix = match prefix.strip_suffix('/') {
        Some(bare) if !slash && !bare.is_empty() => bare,
        _ => prefix,
    };
    out.extend_from_slice(prefix.as_bytes());
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_ws(value: &[u8], mut i: usize) -> usize {
    while value.get(i).copied().is_some_and(is_ws) {
        i += 1;
    }
    i
}

/// `s` without leading and trailing whitespace, and the offset where that starts.
fn trim(s: &[u8]) -> (usize, &[u8]) {
    let start = s.iter().position(|&b| !is_ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_ws(b)).map_or(start, |p| p + 1);
    (start, &s[start..end])
}

/// The span of the URL in a Refresh value, after the HTML "shared declarative refresh steps":
/// time, optional ';' or ',', optional `url =`, then a URL that may be quoted.
fn refresh_url(value: &[u8]) -> Option<(usize, usize)> {
    let mut i = skip_ws(value, 0);
    let time = i;
    while value
        .get(i)
        .is_some_and(|b| b.is_ascii_digit() || *b == b'.')
    {
        i += 1;
    }
    if i == time
        || value
            .get(i)
            .is_some_and(|&b| !is_ws(b) && b != b';' && b != b',')
    {
        return None;
    }
    i = skip_ws(value, i);
    if matches!(value.get(i), Some(b';' | b',')) {
        i = skip_ws(value, i + 1);
    }
    if let Some(after) = strip_prefix_ci(&value[i..], "url") {
        let eq = skip_ws(value, value.len() - after.len());
        if value.get(eq) == Some(&b'=') {
            i = skip_ws(value, eq + 1);
        }
    }
    let (start, end) = match value.get(i) {
        Some(&quote @ (b'"' | b'\'')) => {
            let start = i + 1;
            let len = value[start..].iter().position(|&b| b == quote);
            (start, len.map_or(value.len(), |len| start + len))
        }
        _ => {
            let mut end = value.len();
            while end > i && is_ws(value[end - 1]) {
                end -= 1;
            }
            (i, end)
        }
    };
    (start < end).then_some((start, end))
}

/// Whether a Domain attribute value names the internal host, or a parent of it that does not
/// also cover the external host (then the cookie already reaches the browser unchanged).
fn domain_is_internal(attr: &[u8], map: &Mapping<'_>) -> bool {
    // RFC 6265 5.2.3: "If the first character of the attribute-value string is '.', let
    // cookie-domain be the attribute-value without the leading '.'"
    let domain = attr.strip_prefix(b".").unwrap_or(attr);
    let (internal, external) = (map.internal.host.as_bytes(), map.external.host.as_bytes());
    !domain.is_empty()
        && (domain.eq_ignore_ascii_case(internal)
            || (is_parent(domain, internal)
                && !is_parent(domain, external)
                && !domain.eq_ignore_ascii_case(external)))
}

/// RFC 6265 5.1.3 domain-match, strict: `host` ends with "." + `domain`.
fn is_parent(domain: &[u8], host: &[u8]) -> bool {
    host.len() > domain.len()
        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
        && host[host.len() - domain.len() - 1] == b'.'
}

/// Whether the path of `target` has a `.` or `..` segment once decoded the way lenient back ends
/// do: `%2E` as '.', `\`, `%2F` and `%5C` as '/', and `;` (path parameters) ending the segment.
fn has_dot_segment(target: &[u8]) -> bool {
    let path = target.split(|&b| b == b'?').next().unwrap_or(target);
    let separator = |s: &[u8]| match s {
        [b'/' | b'\\', ..] => Some(1),
        [b'%', b'2', b'f' | b'F', ..] | [b'%', b'5', b'c' | b'C', ..] => Some(3),
        _ => None,
    };
    let dot = |s: &[u8]| match s {
        [b'.', ..] => Some(1),
        [b'%', b'2', b'e' | b'E', ..] => Some(3),
        _ => None,
    };
    for i in 0..path.len() {
        let Some(mut j) = separator(&path[i..]).map(|len| i + len) else {
            continue;
        };
        let mut dots = 0;
        while let Some(len) = dot(&path[j..]) {
            (j, dots) = (j + len, dots + 1);
        }
        if (1..=2).contains(&dots)
            && (j == path.len() || path[j] == b';' || separator(&path[j..]).is_some())
        {
            return true;
        }
    }
    false
}

fn is_tchar(b: u8) -> bool {
    // RFC 9110 5.6.2: tchar
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Translate = fn(&[u8], &Mapping<'_>, &mut Vec<u8>) -> bool;

    const fn o(
        https: bool,
        host: &'static str,
        port: u16,
        prefix: &'static str,
    ) -> Origin<'static> {
        Origin {
            https,
            host,
            port,
            path_prefix: prefix,
        }
    }
    const EXT: Origin<'static> = o(true, "wiki.example.com", 443, "/");
    const INT: Origin<'static> = o(false, "wiki.corp", 8080, "/");
    const MAP: Mapping<'static> = Mapping {
        external: EXT,
        internal: INT,
    };
    const PREFIXED: Mapping<'static> = Mapping {
        external: o(true, "example.com", 443, "/wiki/"),
        internal: o(false, "wiki.corp", 8080, "/app/"),
    };

    /// Runs `f` over `(input, expected)` on a non-empty `out`: it must append exactly the
    /// expected bytes, or leave `out` alone for `None`.
    fn check(f: Translate, map: &Mapping<'_>, cases: &[(&str, Option<&str>)]) {
        for &(input, want) in cases {
            let mut out = b"~".to_vec();
            let done = f(input.as_bytes(), map, &mut out);
            let got = done.then(|| String::from_utf8_lossy(&out[1..]).into_owned());
            assert_eq!(got.as_deref(), want, "{input}");
            assert!(done || out == b"~", "{input}");
        }
    }

    #[test]
    fn location_translated() {
        let x = Some("https://wiki.example.com/x?q=1#f");
        let cases = [
            ("http://wiki.corp:8080/x?q=1#f", x),
            ("HTTP://Wiki.CORP:8080/x?q=1#f", x),
            ("//wiki.corp:8080/x?q=1#f", x),
            ("http://wiki.corp:8080", Some("https://wiki.example.com/")),
            (
                "http://wiki.corp:8080?a",
                Some("https://wiki.example.com/?a"),
            ),
            // Same prefixes: a relative path needs nothing.
            ("/x", None),
        ];
        check(translate_location, &MAP, &cases);
        // Default ports: omitted, explicit and empty are the same origin.
        let ports = Mapping {
            internal: o(false, "wiki.corp", 80, "/"),
            external: o(true, "wiki.example.com", 8443, "/"),
        };
        let to = Some("https://wiki.example.com:8443/x");
        let cases = [
            ("http://wiki.corp/x", to),
            ("http://wiki.corp:80/x", to),
            ("http://wiki.corp:/x", to),
        ];
        check(translate_location, &ports, &cases);
        let tls = Mapping {
            internal: o(true, "wiki.corp", 443, "/"),
            external: EXT,
        };
        let to = Some("https://wiki.example.com/x");
        let cases = [
            ("https://wiki.corp/x", to),
            ("//wiki.corp:443/x", to),
            ("http://wiki.corp/x", None),
        ];
        check(translate_location, &tls, &cases);
        let v6 = Mapping {
            internal: o(false, "fd00::1", 8080, "/"),
            external: EXT,
        };
        check(
            translate_location,
            &v6,
            &[
                ("http://[FD00::1]:8080/x", to),
                ("http://fd00::1:8080/x", None),
            ],
        );
    }

    #[test]
    fn location_prefixes() {
        let cases = [
            (
                "http://wiki.corp:8080/app/page?x#y",
                Some("https://example.com/wiki/page?x#y"),
            ),
            (
                "http://wiki.corp:8080/app?x",
                Some("https://example.com/wiki?x"),
            ),
            ("/app/page?x", Some("/wiki/page?x")),
            ("/app", Some("/wiki")),
            ("/apple", None),
            ("/other/app/", None),
            ("http://wiki.corp:8080/", None),
            ("http://wiki.corp:8080/apple", None),
        ];
        check(translate_location, &PREFIXED, &cases);
        let to_root = Mapping {
            external: EXT,
            internal: PREFIXED.internal,
        };
        check(
            translate_location,
            &to_root,
            &[("/app", Some("/")), ("/app/a", Some("/a"))],
        );
    }

    #[test]
    fn location_untouched() {
        let cases = [
            "http://other.corp:8080/",
            "http://wiki.corp:8081/",
            "http://wiki.corp/",
            "https://wiki.corp:8080/",
            "http://wiki.corp:8080.evil.com/",
            "http://evil@wiki.corp:8080/",
            "http://wiki.corp:8080@evil.com/",
            "http://wiki.corp:8080\\@evil.com/",
            "http://wiki.corp:8080\\evil.com",
            "http://wiki.corp:98080/",
            "http://wiki.corp.:8080/",
            "ftp://wiki.corp:8080/",
            "http:/wiki.corp:8080/",
            " http://wiki.corp:8080/",
            "x/y",
            "",
        ];
        check(translate_location, &MAP, &cases.map(|c| (c, None)));
    }

    #[test]
    fn refresh() {
        let cases = [
            (
                "5; url=http://wiki.corp:8080/x",
                Some("5; url=https://wiki.example.com/x"),
            ),
            (
                "0;URL='http://wiki.corp:8080/x'",
                Some("0;URL='https://wiki.example.com/x'"),
            ),
            (
                " 3 , Url = \"http://wiki.corp:8080/x\" ",
                Some(" 3 , Url = \"https://wiki.example.com/x\" "),
            ),
            (
                "1.5 http://wiki.corp:8080/x  ",
                Some("1.5 https://wiki.example.com/x  "),
            ),
            (
                "0;http://wiki.corp:8080/",
                Some("0;https://wiki.example.com/"),
            ),
            ("5", None),
            ("5; url=", None),
            ("5; url=http://other/", None),
            ("x; url=http://wiki.corp:8080/", None),
            ("5x;url=/x", None),
            ("", None),
        ];
        check(translate_refresh, &MAP, &cases);
        check(
            translate_refresh,
            &PREFIXED,
            &[("1;url=/app/x", Some("1;url=/wiki/x"))],
        );
    }

    #[test]
    fn set_cookie_domain() {
        let cases = [
            (
                "a=b; Domain=.corp; Path=/",
                Some("a=b; Domain=wiki.example.com; Path=/"),
            ),
            (
                "a=b; domain=wiki.corp",
                Some("a=b; domain=wiki.example.com"),
            ),
            (
                "a=b; Domain=Wiki.Corp; Secure",
                Some("a=b; Domain=wiki.example.com; Secure"),
            ),
            (
                "a=b;DOMAIN = .wiki.corp ;x",
                Some("a=b;DOMAIN = wiki.example.com ;x"),
            ),
            ("a=b", None),
            ("a=b; Domain=other.corp", None),
            ("a=b; Domain=iki.corp", None),
            ("a=b; Domain=example.com", None),
            ("a=b; Domain=", None),
            // The first element is the cookie itself, whatever its name.
            ("domain=wiki.corp; Secure", None),
        ];
        check(translate_set_cookie, &MAP, &cases);
        // A parent shared by both hosts already reaches the browser.
        let shared = Mapping {
            internal: o(false, "wiki.int.example.com", 80, "/"),
            external: EXT,
        };
        let cases = [
            ("a=b; Domain=example.com", None),
            (
                "a=b; Domain=.int.example.com",
                Some("a=b; Domain=wiki.example.com"),
            ),
        ];
        check(translate_set_cookie, &shared, &cases);
        // Same host on both sides: nothing changes.
        let same = Mapping {
            internal: o(false, "wiki.example.com", 80, "/"),
            external: EXT,
        };
        check(
            translate_set_cookie,
            &same,
            &[("a=b; Domain=wiki.example.com", None)],
        );
    }

    #[test]
    fn set_cookie_path() {
        let cases = [
            (
                "a=b; Path=/app/; HttpOnly",
                Some("a=b; Path=/wiki/; HttpOnly"),
            ),
            ("a=b; path=/app", Some("a=b; path=/wiki")),
            (
                "a=b; Path=/app/x; Domain=.corp",
                Some("a=b; Path=/wiki/x; Domain=example.com"),
            ),
            ("a=b; Path=/", None),
            ("a=b; Path=/apple", None),
            ("Path=/app/; Secure", None),
        ];
        check(translate_set_cookie, &PREFIXED, &cases);
        check(translate_set_cookie, &MAP, &[("a=b; Path=/x", None)]);
    }

    #[test]
    fn target() {
        let cases = [
            ("/wiki/page?x", Some("/app/page?x")),
            ("/wiki/", Some("/app/")),
            (
                "/wiki/.well-known/a..b?q=/../",
                Some("/app/.well-known/a..b?q=/../"),
            ),
            ("/wiki", None),
            ("/other/", None),
            ("*", None),
            ("http://example.com/wiki/", None),
            ("", None),
            ("/wiki/../admin", None),
            ("/wiki/.", None),
            ("/wiki/%2E%2e/admin", None),
            ("/wiki/..%2fadmin", None),
            ("/wiki/..\\admin", None),
            ("/wiki/..;/admin", None),
            ("/wiki/x/%2e?q", None),
        ];
        check(translate_target, &PREFIXED, &cases);
        check(translate_target, &MAP, &[("/x?y", Some("/x?y"))]);
    }

    #[test]
    fn host_values() {
        let cases = [
            (EXT, "wiki.example.com"),
            (INT, "wiki.corp:8080"),
            (o(false, "wiki.corp", 80, "/"), "wiki.corp"),
            (o(true, "wiki.corp", 80, "/"), "wiki.corp:80"),
            (o(false, "fd00::1", 8080, "/"), "[fd00::1]:8080"),
        ];
        for (origin, want) in cases {
            let mut out = Vec::new();
            host_value(&origin, &mut out);
            assert_eq!(out, want.as_bytes(), "{want}");
        }
    }

    #[test]
    fn forwarding_values() {
        let cases = [
            ("192.0.2.1:1234", "192.0.2.1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[::ffff:192.0.2.1]:1", "192.0.2.1"),
        ];
        for (client, want) in cases {
            let mut out = Vec::new();
            forwarded_for(client.parse().unwrap(), &mut out);
            assert_eq!(out, want.as_bytes(), "{client}");
        }
        let cases: [(&str, &[u8], bool, &str); 5] = [
            (
                "192.0.2.1:9",
                b"wiki.example.com",
                true,
                "for=192.0.2.1;host=wiki.example.com;proto=https",
            ),
            (
                "[2001:db8::1]:9",
                b"example.com:8443",
                false,
                "for=\"[2001:db8::1]\";host=\"example.com:8443\";proto=http",
            ),
            (
                "192.0.2.1:9",
                b"[::1]:8\"x",
                true,
                "for=192.0.2.1;host=\"[::1]:8\\\"x\";proto=https",
            ),
            ("192.0.2.1:9", b"a\r\nb", true, "for=192.0.2.1;proto=https"),
            ("192.0.2.1:9", b"", true, "for=192.0.2.1;proto=https"),
        ];
        for (client, host, https, want) in cases {
            let mut out = Vec::new();
            forwarded(client.parse().unwrap(), host, https, &mut out);
            assert_eq!(out, want.as_bytes(), "{want}");
        }
    }

    #[test]
    fn proxy_controlled() {
        let controlled = [
            "X-Forwarded-For",
            "x_forwarded_for",
            "X_FORWARDED-HOST",
            "x-forwarded-proto",
            "X-Forwarded-Groups",
            "x-forwarded-ssl",
            "Forwarded",
            "X-Real-IP",
            "x_real_ip",
            "X-Original-URL",
            "x-rewrite-url",
            "X-Original-Host",
            "X-Envoy-Original-Path",
            "X-Client-IP",
            "True_Client_IP",
            "X-Gatehouse-User",
            "x_gatehouse_",
            "X-MS-CLIENT-PRINCIPAL",
            "X-MS-CLIENT-PRINCIPAL-NAME",
            "x_ms_client_principal_id",
        ];
        for name in controlled {
            assert!(is_proxy_controlled(name.as_bytes()), "{name}");
        }
        let free = [
            "Accept",
            "Cookie",
            "X-Forwarded",
            "Forwarded-For",
            "X-Gatehouse",
            "X-Real-IPs",
            "X-MS-Client",
            "",
        ];
        for name in free {
            assert!(!is_proxy_controlled(name.as_bytes()), "{name}");
        }
    }
}
