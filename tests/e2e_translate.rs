//! End to end, body translation (`translate_body`): the real service and connector, a Python
//! back end whose pages name internal URLs (tests/support/pages.py), curl and headless
//! Chromium.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::oidc;
use common::*;

/// The stack of these tests: `wiki` (app.test, translated) and `raw` (raw.test, the same back
/// end untranslated) serve the pages back end; `hr` (hr.test/hr/) is another published app,
/// whose internal origin the pages name too.
struct Pages {
    stack: Stack,
    _pages: Proc,
    _hr: Proc,
    own: String,
    other: String,
}

impl Pages {
    fn start(name: &str) -> Pages {
        let (hr, hr_port) = backend(None);
        let other = format!("http://127.0.0.1:{hr_port}");
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pages.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--other", &other])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("pages.py did not start: {line:?}"));
        let pages = Proc {
            child,
            name: "pages".into(),
        };
        let https = free_port();
        let app = |name: &'static str, external: String, internal: String, extra: &str| AppSpec {
            name,
            external,
            internal,
            group: "default",
            extra: extra.to_owned(),
        };
        let apps = [
            app(
                "wiki",
                format!("https://app.test:{https}/"),
                format!("http://127.0.0.1:{port}/"),
                "translate_body = true",
            ),
            app(
                "raw",
                format!("https://raw.test:{https}/"),
                format!("http://127.0.0.1:{port}/"),
                "",
            ),
            app(
                "hr",
                format!("https://hr.test:{https}/hr/"),
                format!("{other}/"),
                "",
            ),
        ];
        let mut stack = Stack::start_on(name, &apps, "", https);
        stack.add_connector("c1", "default");
        stack.wait_ready("app.test", "/next");
        Pages {
            stack,
            _pages: pages,
            _hr: hr,
            own: format!("http://127.0.0.1:{port}"),
            other,
        }
    }

    /// Status line, lower-case header lines and body of `GET path` on `host`.
    fn get(&self, host: &str, path: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["-D", "-", "--compressed"];
        if extra.contains(&"--raw") {
            args.pop();
        }
        let url = self.stack.url(host, path);
        args.extend(extra.iter().filter(|a| **a != "--raw"));
        args.push(&url);
        let out = self.stack.curl(host, &args);
        assert!(out.status.success(), "curl {path}: {}", text(&out));
        let raw = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
        (head.to_ascii_lowercase(), body.to_owned())
    }

    fn external(&self, host: &str) -> String {
        format!("https://{host}:{}", self.stack.https_port)
    }
}

#[test]
fn links_in_html_css_and_javascript_become_external() {
    let p = Pages::start("translate");
    let (own, other) = (
        p.external("app.test"),
        format!("{}/hr", p.external("hr.test")),
    );
    let (head, body) = p.get("app.test", "/page.html", &[]);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // The length changes: the body goes out chunked.
    assert!(!head.contains("content-length"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    for want in [
        format!(r#"content="3600; url={own}/refreshed""#),
        format!(r#"<link rel="stylesheet" href="{own}/style.css">"#),
        format!(r#"url("{own}/bg.png")"#),
        format!(r#"url({other}/other.png)"#),
        format!(r#"var own = "{own}/api"; var other = '{other}/people';"#),
        format!(r#"<a id="own" href="{own}/page.html?a=1&amp;b=2">"#),
        format!(r#"<a id="other" href="{other}/people">"#),
        r#"<a id="foreign" href="http://example.net/x">"#.to_owned(),
        format!(r#"src="{own}/a.png" srcset="{own}/a.png 1x, {own}/a@2x.png 2x""#),
        format!(r#"<form action="{own}/submit" method="post"><button formaction="{other}/save">"#),
        format!(r#"style="background-image: url('{own}/d.png')""#),
    ] {
        assert!(body.contains(&want), "missing {want} in\n{body}");
    }
    // Text between tags is not a link: it stays, and is the only internal URL left.
    assert_eq!(body.matches(&p.own).count(), 1, "{body}");
    assert!(body.contains(&format!("<p>text {}/untouched</p>", p.own)));
    assert!(!body.contains(&p.other), "{body}");

    let (css_head, css) = p.get("app.test", "/style.css", &[]);
    // The back end's strong validator names its bytes, not the translated ones: it goes out
    // weak. A HEAD announces no length (the translated one is not known without the body).
    assert!(css_head.contains("etag: w/\"css-1\""), "{css_head}");
    let (head_only, _) = p.get("app.test", "/style.css", &["-I"]);
    assert!(head_only.starts_with("http/1.1 200"), "{head_only}");
    assert!(!head_only.contains("content-length"), "{head_only}");
    assert!(head_only.contains("etag: w/\"css-1\""), "{head_only}");
    assert_eq!(
        css,
        format!("a {{ background: url({own}/x.png) }} b {{ background: url('{other}/y.png') }}\n")
    );
    // Other types are left alone.
    let (_, plain) = p.get("app.test", "/plain.txt", &[]);
    assert_eq!(plain, format!("{}/x\n", p.own));
}

#[test]
fn translation_asks_for_identity_and_passes_encoded_bodies_on() {
    let p = Pages::start("translate-encoding");
    let asked = ["-H", "Accept-Encoding: gzip, br", "--raw"];
    let (_, accept) = p.get("app.test", "/accept", &asked);
    assert_eq!(accept, "identity");
    // An app without translation forwards what the client asked for.
    let (_, accept) = p.get("raw.test", "/accept", &asked);
    assert_eq!(accept, "gzip, br");
    // A back end that compresses anyway: the body passes on as it is, still compressed.
    let (head, body) = p.get("app.test", "/gzip.html", &[]);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(
        body.contains(&format!("href=\"{}/page.html", p.own)),
        "{body}"
    );
    // Without translate_body, HTML passes untouched, with its length.
    let (head, body) = p.get("raw.test", "/page.html", &[]);
    assert!(head.contains("content-length"), "{head}");
    assert_eq!(body.matches(&p.own).count(), 11, "{body}");
}

#[test]
fn a_hundred_mib_page_streams_through_in_bounded_memory() {
    let p = Pages::start("translate-big");
    let connector = p.stack.connectors[0].pid();
    let idle = rss_kib(connector);
    let mut child = p
        .stack
        .curl_command("app.test")
        .arg(p.stack.url("app.test", "/big.html?mib=100"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (mut total, mut links, mut internal, mut peak) = (0usize, 0usize, 0usize, idle);
    let own_link = format!("href=\"{}/i\"", p.external("app.test"));
    let internal_link = format!("href=\"{}/i\"", p.own);
    let mut buf = vec![0; 1 << 20];
    let mut carry = String::new();
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
        carry.push_str(std::str::from_utf8(&buf[..n]).expect("ASCII page"));
        // Whole lines only: a link split across reads is counted with its line.
        let cut = carry.rfind('\n').map_or(0, |i| i + 1);
        links += carry[..cut].matches(&own_link).count();
        internal += carry[..cut].matches(&internal_link).count();
        carry.drain(..cut);
        peak = peak.max(rss_kib(connector));
    }
    assert!(child.wait().unwrap().success());
    // 1,638,400 lines of 64 bytes, each one link; every link translated.
    assert_eq!(links, 100 * 16 * 1024, "{total} bytes");
    assert_eq!(internal, 0);
    std::thread::sleep(Duration::from_millis(50));
    eprintln!("connector RSS: idle {idle} KiB, peak {peak} KiB, {total} bytes out");
    assert!(
        peak - idle < 40 * 1024,
        "the connector grew by {} KiB for a 100 MiB page",
        peak - idle
    );
}

#[test]
fn chromium_follows_a_translated_link_to_the_external_url() {
    let p = Pages::start("translate-chromium");
    let start = p.stack.url("app.test", "/start.html");
    let report = oidc::chromium_click(&start, "#go");
    assert_eq!(report["error"], serde_json::Value::Null, "{report}");
    assert_eq!(
        report["url"].as_str().unwrap(),
        format!("{}/next", p.external("app.test")),
        "{report}"
    );
    assert_eq!(report["status"], 200, "{report}");
    assert!(report["text"].as_str().unwrap().contains("landed on next"));
}
