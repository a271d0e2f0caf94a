//! Error and status pages: say which check failed, carry the request id, leak nothing internal.

/// The reason phrase of a status code (RFC 9110 15), for status lines and pages.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends a complete response (head and HTML body) for an error to `out`.
///
/// `title` says which check failed, `detail` what the user can do; both are escaped.
pub fn error_page(
    out: &mut Vec<u8>,
    status: u16,
    title: &str,
    detail: &str,
    request_id: &str,
    close: bool,
) {
    error_page_with(out, status, title, detail, request_id, close, &[]);
}

/// [`error_page`] that also sets cookies (`Set-Cookie` values).
pub fn error_page_with(
    out: &mut Vec<u8>,
    status: u16,
    title: &str,
    detail: &str,
    request_id: &str,
    close: bool,
    cookies: &[String],
) {
    let mut body = String::with_capacity(512);
    body.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>");
    escape_into(&mut body, title);
    body.push_str("</title></head><body><h1>");
    escape_into(&mut body, title);
    body.push_str("</h1><p>");
    escape_into(&mut body, detail);
    body.push_str("</p><p><small>Status ");
    body.push_str(&status.to_string());
    body.push_str(" &middot; request id <code>");
    escape_into(&mut body, request_id);
    body.push_str("</code> &middot; Gatehouse</small></p></body></html>\n");
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Request-Id: {request_id}\r\n",
            reason(status),
            body.len(),
        )
        .as_bytes(),
    );
    end_head(out, cookies, close);
    out.extend_from_slice(body.as_bytes());
}

/// [`error_page`] for a limit: 429 or 503 with `Retry-After: retry_after` seconds.
pub fn retry_page(
    out: &mut Vec<u8>,
    status: u16,
    title: &str,
    detail: &str,
    request_id: &str,
    retry_after: u64,
    close: bool,
) {
    error_page(out, status, title, detail, request_id, close);
    // The head ends with an empty line: put the field in front of it.
    if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
        let field = format!("\r\nRetry-After: {retry_after}");
        out.splice(end..end, field.into_bytes());
    }
}

/// Appends a redirect to `location` (already a valid URL or path), setting `cookies`.
pub fn redirect(
    out: &mut Vec<u8>,
    status: u16,
    location: &str,
    cookies: &[String],
    request_id: &str,
    close: bool,
) {
    // Locations embed provider metadata and request paths: never let a control byte start
    // a header line of its own.
    let location = if location.bytes().any(|b| b < 0x20 || b == 0x7f) {
        "/"
    } else {
        location
    };
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\nLocation: {location}\r\nContent-Length: 0\r\nCache-Control: no-store\r\nX-Request-Id: {request_id}\r\n",
            reason(status),
        )
        .as_bytes(),
    );
    end_head(out, cookies, close);
}

/// Appends a 200 response with `body` of `content_type`.
pub fn document(out: &mut Vec<u8>, content_type: &str, body: &[u8], with_body: bool, close: bool) {
    out.extend_from_slice(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: max-age=300\r\n",
            body.len()
        )
        .as_bytes(),
    );
    end_head(out, &[], close);
    if with_body {
        out.extend_from_slice(body);
    }
}

fn end_head(out: &mut Vec<u8>, cookies: &[String], close: bool) {
    for cookie in cookies {
        // Cookie values are ours (base64url and fixed attributes): no CR or LF can appear.
        if !cookie.bytes().any(|b| b == b'\r' || b == b'\n') {
            out.extend_from_slice(b"Set-Cookie: ");
            out.extend_from_slice(cookie.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The robots.txt every published host answers with: no crawler indexes a published app.
pub const ROBOTS_TXT: &[u8] = b"User-agent: *\nDisallow: /";

/// Appends the robots.txt response (body only for GET; `close`: the connection closes after
/// it, and the response says so).
pub fn robots(out: &mut Vec<u8>, with_body: bool, close: bool) {
    out.extend_from_slice(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nCache-Control: max-age=3600\r\n",
            ROBOTS_TXT.len()
        )
        .as_bytes(),
    );
    end_head(out, &[], close);
    if with_body {
        out.extend_from_slice(ROBOTS_TXT);
    }
}

/// `text` safe inside HTML text and quoted attributes (`& < > " '` escaped, control
/// characters as spaces).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    escape_into(&mut out, text);
    out
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_and_carry_the_request_id() {
        let mut out = Vec::new();
        error_page(
            &mut out,
            502,
            "No connector <online>",
            "group \"x\"",
            "abc",
            true,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(text.contains("No connector &lt;online&gt;"));
        assert!(text.contains("group &quot;x&quot;"));
        assert!(text.contains("X-Request-Id: abc\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn answers_on_a_closing_connection_say_so() {
        for close in [false, true] {
            let mut robots_txt = Vec::new();
            robots(&mut robots_txt, true, close);
            let mut limited = Vec::new();
            retry_page(&mut limited, 429, "Too many", "Slow down", "abc", 2, close);
            for out in [robots_txt, limited] {
                let text = String::from_utf8(out).unwrap();
                let (head, body) = text.split_once("\r\n\r\n").unwrap();
                assert_eq!(head.contains("\r\nConnection: close"), close, "{head}");
                assert!(
                    head.contains(&format!("Content-Length: {}", body.len())),
                    "{head}"
                );
            }
        }
        let mut limited = Vec::new();
        retry_page(&mut limited, 429, "Too many", "Slow down", "abc", 2, true);
        let text = String::from_utf8(limited).unwrap();
        assert!(text.contains("\r\nRetry-After: 2\r\n"), "{text}");
    }
}
