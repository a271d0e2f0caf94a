//! Body translation (`translate_body`): internal URLs inside HTML, CSS and JavaScript responses
//! become external ones while the body streams through, in bounded memory.
//!
//! HTML goes through lol_html, a streaming HTML rewriter: the values of URL-bearing
//! attributes and the text of `<script>` and `<style>` elements are handed to the app's
//! [`LinkRules`]. CSS and JavaScript bodies go through a [`LinkStream`] whole. The HTML parser
//! is lol_html's, not ours: only a tag split across reads is buffered, up to [`HTML_MEMORY`].

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use encoding_rs::Encoding;
use gatehouse_core::links::{LinkRules, LinkStream};
use lol_html::html_content::{ContentType, Element, TextChunk};
use lol_html::{
    element, text, AsciiCompatibleEncoding, HtmlRewriter, MemorySettings, OutputSink, Settings,
};

/// Most memory lol_html may hold for one response: a start tag split across reads is kept
/// whole until its end arrives. Beyond it the response is cut off (the client sees an
/// incomplete response, never a wrong one).
pub const HTML_MEMORY: usize = 1 << 20;

/// Attributes whose values hold URLs (`content` for `<meta http-equiv="refresh">` and link
/// previews, `style` for `url(...)`).
const URL_ATTRIBUTES: [&str; 13] = [
    "href",
    "src",
    "srcset",
    "action",
    "formaction",
    "poster",
    "data",
    "cite",
    "background",
    "manifest",
    "ping",
    "content",
    "style",
];

/// The elements the attribute handler looks at: those with one of [`URL_ATTRIBUTES`].
const URL_ELEMENTS: &str = "[href], [src], [srcset], [action], [formaction], [poster], [data], \
    [cite], [background], [manifest], [ping], [content], [style]";

/// What a response's Content-Type makes of its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyType {
    /// HTML or XHTML in this (ASCII-compatible) encoding.
    Html(&'static Encoding),
    /// CSS or JavaScript: URLs anywhere in the text.
    Text,
}

/// The body type of a response with this Content-Type value; `None` for bodies left alone
/// (other types, and HTML in an encoding that is not ASCII-compatible, such as UTF-16).
pub fn body_type(content_type: &[u8]) -> Option<BodyType> {
    let text = std::str::from_utf8(content_type).ok()?;
    let mut params = text.split(';');
    let media = params.next()?.trim().to_ascii_lowercase();
    match media.as_str() {
        "text/html" | "application/xhtml+xml" => {
            let charset = params.find_map(|p| {
                let (name, value) = p.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("charset")
                    .then(|| value.trim().trim_matches('"'))
            });
            let encoding = match charset {
                Some(label) => Encoding::for_label(label.as_bytes())?,
                None => encoding_rs::UTF_8,
            };
            AsciiCompatibleEncoding::new(encoding)?;
            Some(BodyType::Html(encoding))
        }
        "text/css"
        | "text/javascript"
        | "application/javascript"
        | "application/x-javascript"
        | "application/ecmascript"
        | "text/ecmascript" => Some(BodyType::Text),
        _ => None,
    }
}

/// Why a body could not be translated.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// lol_html failed: past [`HTML_MEMORY`], or a handler's error.
    #[error("HTML rewriting failed: {0}")]
    Html(#[from] lol_html::errors::RewritingError),
}

/// lol_html's output, collected for the next piece sent into the tunnel.
struct Collect(Rc<RefCell<Vec<u8>>>);

impl OutputSink for Collect {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        self.0.borrow_mut().extend_from_slice(chunk);
    }
}

/// One response body being translated.
pub struct BodyTranslator(Translating);

enum Translating {
    /// Through lol_html; its output gathers in `out`.
    Html {
        rewriter: Box<HtmlRewriter<'static, Collect>>,
        out: Rc<RefCell<Vec<u8>>>,
    },
    /// Through a [`LinkStream`].
    Text {
        rules: Rc<LinkRules>,
        stream: LinkStream,
    },
}

impl BodyTranslator {
    /// A translator for a body of `kind` rewriting by `rules`.
    pub fn new(kind: BodyType, rules: Rc<LinkRules>) -> Self {
        let encoding = match kind {
            BodyType::Text => {
                return BodyTranslator(Translating::Text {
                    rules,
                    stream: LinkStream::new(),
                })
            }
            BodyType::Html(encoding) => encoding,
        };
        let encoding = AsciiCompatibleEncoding::new(encoding).unwrap_or_else(|| {
            AsciiCompatibleEncoding::new(encoding_rs::UTF_8).expect("UTF-8 is ASCII-compatible")
        });
        let attribute_rules = rules.clone();
        let mut changed: Vec<(String, String)> = Vec::new();
        let on_element = move |el: &mut Element| {
            // One pass over the attributes; the changes are made after it.
            for attribute in el.attributes() {
                let name = attribute.name();
                if !URL_ATTRIBUTES.contains(&name.as_str()) {
                    continue;
                }
                let mut rewritten = Vec::new();
                if attribute_rules.rewrite(attribute.value().as_bytes(), &mut rewritten) {
                    // Replacements are ASCII and start at ASCII bytes: still UTF-8.
                    changed.push((name, String::from_utf8(rewritten)?));
                }
            }
            for (name, value) in changed.drain(..) {
                el.set_attribute(&name, &value)?;
            }
            Ok(())
        };
        let mut stream = LinkStream::new();
        let mut text_out = Vec::new();
        let on_text = move |t: &mut TextChunk| {
            text_out.clear();
            stream.push(&rules, t.as_str().as_bytes(), &mut text_out);
            if t.last_in_text_node() {
                stream.finish(&rules, &mut text_out);
            }
            if text_out != t.as_str().as_bytes() {
                // A held tail ends before an ASCII byte: what is let out is whole UTF-8.
                t.replace(std::str::from_utf8(&text_out)?, ContentType::Html);
            }
            Ok(())
        };
        let settings = Settings::new()
            .append_element_content_handler(element!(URL_ELEMENTS, on_element))
            .append_element_content_handler(text!("script, style", on_text))
            .with_encoding(encoding)
            .with_memory_settings(MemorySettings::new().with_max_allowed_memory_usage(HTML_MEMORY))
            // Markup that leaves the parser unsure whether it is in text or in a tag is
            // rewritten as lol_html reads it, rather than failing the page.
            .with_strict(false);
        let out = Rc::new(RefCell::new(Vec::new()));
        let rewriter = HtmlRewriter::new(settings, Collect(out.clone()));
        BodyTranslator(Translating::Html {
            rewriter: Box::new(rewriter),
            out,
        })
    }

    /// Translates the next piece of the body; returns what can be sent now (perhaps nothing).
    pub fn write(&mut self, data: &[u8]) -> Result<Bytes, TranslateError> {
        match &mut self.0 {
            Translating::Html { rewriter, out } => {
                rewriter.write(data)?;
                Ok(Bytes::from(std::mem::take(&mut *out.borrow_mut())))
            }
            Translating::Text { rules, stream } => {
                let mut out = Vec::with_capacity(data.len() + 64);
                stream.push(rules, data, &mut out);
                Ok(Bytes::from(out))
            }
        }
    }

    /// The end of the body: returns the rest.
    pub fn end(self) -> Result<Bytes, TranslateError> {
        match self.0 {
            Translating::Html { rewriter, out } => {
                rewriter.end()?;
                Ok(Bytes::from(std::mem::take(&mut *out.borrow_mut())))
            }
            Translating::Text { rules, mut stream } => {
                let mut out = Vec::new();
                stream.finish(&rules, &mut out);
                Ok(Bytes::from(out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_core::translate::{Mapping, Origin};

    use super::*;

    fn rules() -> Rc<LinkRules> {
        Rc::new(LinkRules::new(&[
            Mapping {
                external: Origin {
                    https: true,
                    host: "wiki.example.com",
                    port: 443,
                    path_prefix: "/",
                },
                internal: Origin {
                    https: false,
                    host: "wiki.corp",
                    port: 80,
                    path_prefix: "/",
                },
            },
            Mapping {
                external: Origin {
                    https: true,
                    host: "apps.example.com",
                    port: 443,
                    path_prefix: "/hr/",
                },
                internal: Origin {
                    https: false,
                    host: "hr.corp",
                    port: 8080,
                    path_prefix: "/",
                },
            },
        ]))
    }

    const PAGE: &str = r#"<!doctype html>
<html><head>
<meta http-equiv="refresh" content="30; url=http://wiki.corp/home">
<link rel="stylesheet" href="http://wiki.corp/site.css">
<style>body { background: url("http://wiki.corp/bg.png") } .hr { background: url(//hr.corp:8080/x.png) }</style>
<script>var api = "http://wiki.corp/api"; var hr = 'http://hr.corp:8080/people'; if (a < b) {}</script>
</head><body>
<a href="http://wiki.corp/page?a=1&amp;b=2">page</a>
<a href='HTTP://WIKI.CORP/Upper'>upper</a>
<a href="http://wiki.corp.evil.com/x">not ours</a>
<img src="http://wiki.corp/a.png" srcset="http://wiki.corp/a.png 1x, http://wiki.corp/a@2x.png 2x">
<form action="http://hr.corp:8080/apply" method="post"><button formaction="http://wiki.corp/save">go</button></form>
<p>Plain text naming http://wiki.corp/ stays as written.</p>
<div style="background-image: url('http://wiki.corp/d.png')"></div>
</body></html>
"#;

    const TRANSLATED: &str = r#"<!doctype html>
<html><head>
<meta http-equiv="refresh" content="30; url=https://wiki.example.com/home">
<link rel="stylesheet" href="https://wiki.example.com/site.css">
<style>body { background: url("https://wiki.example.com/bg.png") } .hr { background: url(//apps.example.com/hr/x.png) }</style>
<script>var api = "https://wiki.example.com/api"; var hr = 'https://apps.example.com/hr/people'; if (a < b) {}</script>
</head><body>
<a href="https://wiki.example.com/page?a=1&amp;b=2">page</a>
<a href="https://wiki.example.com/Upper">upper</a>
<a href="http://wiki.corp.evil.com/x">not ours</a>
<img src="https://wiki.example.com/a.png" srcset="https://wiki.example.com/a.png 1x, https://wiki.example.com/a@2x.png 2x">
<form action="https://apps.example.com/hr/apply" method="post"><button formaction="https://wiki.example.com/save">go</button></form>
<p>Plain text naming http://wiki.corp/ stays as written.</p>
<div style="background-image: url('https://wiki.example.com/d.png')"></div>
</body></html>
"#;

    fn translate(kind: BodyType, pieces: &[&[u8]]) -> String {
        let mut translator = BodyTranslator::new(kind, rules());
        let mut out = Vec::new();
        for piece in pieces {
            out.extend_from_slice(&translator.write(piece).unwrap());
        }
        out.extend_from_slice(&translator.end().unwrap());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn html_links_become_external_at_every_split() {
        let html = BodyType::Html(encoding_rs::UTF_8);
        let page = PAGE.as_bytes();
        assert_eq!(translate(html, &[page]), TRANSLATED);
        for cut in 0..=page.len() {
            let got = translate(html, &[&page[..cut], &page[cut..]]);
            assert_eq!(got, TRANSLATED, "cut at {cut}");
        }
        // One byte per read.
        let bytes: Vec<&[u8]> = page.chunks(1).collect();
        assert_eq!(translate(html, &bytes), TRANSLATED);
    }

    #[test]
    fn css_and_javascript_bodies_are_translated_whole() {
        let css = b"a { background: url(http://wiki.corp/x.png) } b { background: url(http://other/y.png) }";
        let want = "a { background: url(https://wiki.example.com/x.png) } b { background: url(http://other/y.png) }";
        for cut in 0..=css.len() {
            assert_eq!(translate(BodyType::Text, &[&css[..cut], &css[cut..]]), want);
        }
    }

    #[test]
    fn content_types_choose_the_translation() {
        assert_eq!(
            body_type(b"text/html; charset=UTF-8"),
            Some(BodyType::Html(encoding_rs::UTF_8))
        );
        assert_eq!(
            body_type(b"TEXT/HTML;charset=\"windows-1252\""),
            Some(BodyType::Html(encoding_rs::WINDOWS_1252))
        );
        assert_eq!(body_type(b"text/html; charset=utf-16"), None);
        assert_eq!(body_type(b"text/html; charset=nonsense"), None);
        assert_eq!(body_type(b"text/css"), Some(BodyType::Text));
        assert_eq!(
            body_type(b"application/javascript; charset=utf-8"),
            Some(BodyType::Text)
        );
        assert_eq!(body_type(b"application/json"), None);
        assert_eq!(body_type(b"image/png"), None);
    }

    #[test]
    fn a_legacy_encoding_survives_translation() {
        // "café" in windows-1252 next to a link, in an attribute and in a script.
        let page = b"<p>caf\xe9</p><a title=\"caf\xe9\" href=\"http://wiki.corp/x\">x</a><script>s='caf\xe9 http://wiki.corp/y'</script>";
        let mut translator =
            BodyTranslator::new(BodyType::Html(encoding_rs::WINDOWS_1252), rules());
        let mut out = translator.write(page).unwrap().to_vec();
        out.extend_from_slice(&translator.end().unwrap());
        assert_eq!(
            out,
            b"<p>caf\xe9</p><a title=\"caf\xe9\" href=\"https://wiki.example.com/x\">x</a><script>s='caf\xe9 https://wiki.example.com/y'</script>"
        );
    }

    #[test]
    fn a_tag_past_the_memory_limit_fails_the_body() {
        let mut translator = BodyTranslator::new(BodyType::Html(encoding_rs::UTF_8), rules());
        translator.write(b"<a href=\"").unwrap();
        let long = vec![b'x'; 64 * 1024];
        let failed = (0..2 * HTML_MEMORY / long.len()).any(|_| translator.write(&long).is_err());
        assert!(failed, "a start tag past {HTML_MEMORY} bytes is refused");
    }
}
