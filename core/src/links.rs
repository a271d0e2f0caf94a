//! Internal URLs inside response bodies, rewritten to external ones as the bytes stream by
//! ("translate links in application"): the byte-level half of body translation. The
//! connector's HTML rewriter hands it attribute values and the text of `<script>` and
//! `<style>` elements; CSS and JavaScript bodies go through it whole.
//!
//! What is rewritten: absolute URLs (`http://host:port/prefix/...`), network-path references
//! (`//host:port/prefix/...`) and both in the JSON/JavaScript-escaped form (`http:\/\/host...`)
//! whose origin is an app's internal origin and whose path starts with its internal path
//! prefix. Scheme and host compare ASCII-case-insensitively, the path prefix exactly, and a
//! default port matches written or omitted. A match ending in the host, the port or the bare
//! prefix must be followed by a byte that cannot continue it, so `http://intranet.evil` and
//! `http://intranet@evil` stay as they are. Nothing else is touched.
//!
//! Pure code: bytes in, bytes appended to the caller's `out`. A stream holds back at most
//! [`LinkRules::longest`] bytes between pieces, so memory stays bounded whatever the body's
//! size, and a URL split across pieces is found as if the body came in one piece.

use crate::translate::{Mapping, Origin};

/// One URL prefix to replace.
#[derive(Clone, Debug)]
struct Rule {
    /// What to find; bytes before `fold` compare ASCII-case-insensitively (stored lower-case).
    from: Vec<u8>,
    /// The scheme-and-authority part of `from`.
    fold: usize,
    /// What replaces it.
    to: Vec<u8>,
    /// Whether the byte after a match must not continue a host, port or path segment.
    bounded: bool,
    /// A network-path reference (`//host`): not one after a scheme's colon, which names
    /// another scheme's origin.
    network_path: bool,
}

/// The rewrites of one response: its app's internal origin and those of the other apps the
/// connector publishes, each to its external URL.
#[derive(Clone, Debug)]
pub struct LinkRules {
    /// Longest first, so the first rule that matches at a position is the longest.
    rules: Vec<Rule>,
    /// Bytes (lower-cased) a rule can start with.
    first: [bool; 256],
    /// The first two bytes of the rules (lower-cased; a few): most candidate bytes, such as
    /// an `h` or a `/` in text, are ruled out by the byte after them.
    openings: Vec<[u8; 2]>,
    /// Length of the longest rule.
    longest: usize,
}

/// What the rules say about one position.
enum Found<'r> {
    /// No rule matches here.
    No,
    /// A rule might match once more bytes arrive.
    Undecided,
    /// This rule matches.
    Rule(&'r Rule),
}

impl LinkRules {
    /// Rules for `mappings`, the first being the response's own app. Mappings whose internal
    /// host is empty are skipped.
    pub fn new(mappings: &[Mapping<'_>]) -> Self {
        let mut rules = Vec::new();
        for map in mappings {
            if map.internal.host.is_empty() {
                continue;
            }
            add_rules(map, &mut rules);
        }
        // Longest first; a shorter duplicate (another app with the same origin) never wins.
        rules.sort_by_key(|r: &Rule| std::cmp::Reverse(r.from.len()));
        let mut first = [false; 256];
        for rule in &rules {
            first[usize::from(rule.from[0])] = true;
            first[usize::from(rule.from[0].to_ascii_uppercase())] = true;
        }
        let mut openings: Vec<[u8; 2]> = rules.iter().map(|r| [r.from[0], r.from[1]]).collect();
        openings.sort_unstable();
        openings.dedup();
        let longest = rules.first().map_or(0, |r| r.from.len());
        LinkRules {
            rules,
            first,
            openings,
            longest,
        }
    }

    /// Whether there is nothing to rewrite.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The most bytes a [`LinkStream`] holds back between pieces, less one.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// Rewrites a whole value (an attribute, say), appending the result to `out`; returns
    /// whether anything changed.
    pub fn rewrite(&self, input: &[u8], out: &mut Vec<u8>) -> bool {
        let (_, changed) = self.scan(input, true, 0, out);
        changed
    }

    /// Appends `data` rewritten to `out`, up to the first position that cannot be decided
    /// without more bytes (none when `at_end`); returns that position and whether anything
    /// changed. `before` is the byte before `data` (0 at the start).
    fn scan(&self, data: &[u8], at_end: bool, before: u8, out: &mut Vec<u8>) -> (usize, bool) {
        let (mut at, mut literal, mut changed) = (0, 0, false);
        while at < data.len() {
            if !self.first[usize::from(data[at])] {
                at += 1;
                continue;
            }
            let before = if at == 0 { before } else { data[at - 1] };
            match self.find(&data[at..], at_end, before) {
                Found::No => at += 1,
                Found::Undecided => {
                    out.extend_from_slice(&data[literal..at]);
                    return (at, changed);
                }
                Found::Rule(rule) => {
                    out.extend_from_slice(&data[literal..at]);
                    out.extend_from_slice(&rule.to);
                    at += rule.from.len();
                    literal = at;
                    changed = true;
                }
            }
        }
        out.extend_from_slice(&data[literal..]);
        (data.len(), changed)
    }

    /// The longest rule matching at the start of `rest`.
    fn find(&self, rest: &[u8], at_end: bool, before: u8) -> Found<'_> {
        let first = rest[0].to_ascii_lowercase();
        if let Some(second) = rest.get(1) {
            let opening = [first, second.to_ascii_lowercase()];
            if !self.openings.contains(&opening) {
                return Found::No;
            }
        }
        for rule in &self.rules {
            if rule.from[0] != first || (rule.network_path && before == b':') {
                continue;
            }
            let n = rule.from.len();
            let have = rest.len().min(n);
            if !rule_prefix_eq(rule, &rest[..have]) {
                continue;
            }
            if have < n {
                if at_end {
                    continue;
                }
                // A longer rule might match: nothing shorter may be taken before it is known.
                return Found::Undecided;
            }
            if rule.bounded {
                match rest.get(n) {
                    Some(&b) if continues_url_part(b) => continue,
                    Some(_) => {}
                    None if at_end => {}
                    None => return Found::Undecided,
                }
            }
            return Found::Rule(rule);
        }
        Found::No
    }
}

/// A body (or one element's text) being rewritten piece by piece.
#[derive(Debug, Default)]
pub struct LinkStream {
    /// The undecided tail of what came so far: shorter than the longest rule plus one.
    held: Vec<u8>,
    /// The byte before `held` (0 at the start).
    before: u8,
}

impl LinkStream {
    /// A stream at its start.
    pub fn new() -> Self {
        LinkStream::default()
    }

    /// Appends what `input` decides, rewritten, to `out`, holding back an undecided tail.
    pub fn push(&mut self, rules: &LinkRules, input: &[u8], out: &mut Vec<u8>) {
        if rules.is_empty() {
            out.extend_from_slice(input);
            return;
        }
        let (mut rest, mut before) = (input, self.before);
        if !self.held.is_empty() {
            // The held tail with enough of the input behind it to decide every held position.
            let held = self.held.len();
            let take = input.len().min(rules.longest + 1);
            self.held.extend_from_slice(&input[..take]);
            let (decided, _) = rules.scan(&self.held, false, before, out);
            if decided < held {
                // The input was too short to decide the held bytes: it is all held now.
                if decided > 0 {
                    self.before = self.held[decided - 1];
                }
                self.held.drain(..decided);
                return;
            }
            before = self.held[decided - 1];
            self.held.clear();
            rest = &input[decided - held..];
        }
        let (decided, _) = rules.scan(rest, false, before, out);
        self.before = if decided > 0 {
            rest[decided - 1]
        } else {
            before
        };
        self.held.extend_from_slice(&rest[decided..]);
    }

    /// How many bytes are held back now.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Appends the rest, the body having ended.
    pub fn finish(&mut self, rules: &LinkRules, out: &mut Vec<u8>) {
        rules.scan(&self.held, true, self.before, out);
        self.held.clear();
    }
}

/// Whether `b` continues a host, a port or a path segment, so a match ending before it would
/// be a different URL.
fn continues_url_part(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b'%' | b':' | b'@')
}

fn rule_prefix_eq(rule: &Rule, have: &[u8]) -> bool {
    let folded = have.len().min(rule.fold);
    have[..folded]
        .iter()
        .zip(&rule.from[..folded])
        .all(|(a, b)| a.to_ascii_lowercase() == *b)
        && have[folded..] == rule.from[folded..have.len()]
}

/// The rules of one mapping: for each way of writing the internal origin, the prefix with
/// its slash and the bare prefix, as an absolute URL and a network-path reference, plain and
/// with escaped slashes.
fn add_rules(map: &Mapping<'_>, rules: &mut Vec<Rule>) {
    let (internal, external) = (&map.internal, &map.external);
    let external_authority = authority(external, false);
    let scheme = if internal.https { "https:" } else { "http:" };
    let mut authorities = vec![authority(internal, false)];
    if internal.port == default_port(internal.https) {
        authorities.push(authority(internal, true));
    }
    let internal_bare = internal.path_prefix.trim_end_matches('/');
    let external_bare = external.path_prefix.trim_end_matches('/');
    for auth in &authorities {
        for absolute in [true, false] {
            let (from_origin, to_origin) = if absolute {
                (
                    format!("{scheme}//{auth}"),
                    format!("https://{external_authority}"),
                )
            } else {
                (format!("//{auth}"), format!("//{external_authority}"))
            };
            for escaped in [false, true] {
                let esc = |s: &str| match escaped {
                    true => s.replace('/', "\\/"),
                    false => s.to_owned(),
                };
                let fold = esc(&from_origin).len();
                rules.push(Rule {
                    from: format!("{}{}", esc(&from_origin), esc(internal.path_prefix)).into(),
                    fold,
                    to: format!("{}{}", esc(&to_origin), esc(external.path_prefix)).into(),
                    bounded: false,
                    network_path: !absolute,
                });
                rules.push(Rule {
                    from: format!("{}{}", esc(&from_origin), esc(internal_bare)).into(),
                    fold,
                    to: format!("{}{}", esc(&to_origin), esc(external_bare)).into(),
                    bounded: true,
                    network_path: !absolute,
                });
            }
        }
    }
    for rule in rules.iter_mut() {
        rule.from[..rule.fold].make_ascii_lowercase();
    }
}

/// `host[:port]` of `origin`, lower-case, an IPv6 literal in brackets; the port written when
/// it is not the scheme's default, or always when `port_always`.
fn authority(origin: &Origin<'_>, port_always: bool) -> String {
    let host = origin.host.to_ascii_lowercase();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    if port_always || origin.port != default_port(origin.https) {
        format!("{host}:{}", origin.port)
    } else {
        host
    }
}

fn default_port(https: bool) -> u16 {
    if https {
        443
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const INTERNAL: Origin<'static> = Origin {
        https: false,
        host: "intranet.corp",
        port: 8080,
        path_prefix: "/wiki/",
    };
    const EXTERNAL: Origin<'static> = Origin {
        https: true,
        host: "wiki.example.com",
        port: 443,
        path_prefix: "/",
    };
    /// A second published app, on a default port.
    const OTHER_INTERNAL: Origin<'static> = Origin {
        https: true,
        host: "hr.corp",
        port: 443,
        path_prefix: "/",
    };
    const OTHER_EXTERNAL: Origin<'static> = Origin {
        https: true,
        host: "apps.example.com",
        port: 8443,
        path_prefix: "/hr/",
    };

    fn rules() -> LinkRules {
        LinkRules::new(&[
            Mapping {
                external: EXTERNAL,
                internal: INTERNAL,
            },
            Mapping {
                external: OTHER_EXTERNAL,
                internal: OTHER_INTERNAL,
            },
        ])
    }

    fn rewrite(input: &str) -> String {
        let mut out = Vec::new();
        rules().rewrite(input.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn internal_urls_become_external_ones() {
        let cases = [
            (
                "http://intranet.corp:8080/wiki/Page?x=1#top",
                "https://wiki.example.com/Page?x=1#top",
            ),
            (
                "HTTP://Intranet.CORP:8080/wiki/a",
                "https://wiki.example.com/a",
            ),
            ("//intranet.corp:8080/wiki/b", "//wiki.example.com/b"),
            (
                "\"http:\\/\\/intranet.corp:8080\\/wiki\\/c\"",
                "\"https:\\/\\/wiki.example.com\\/c\"",
            ),
            ("http://intranet.corp:8080/wiki", "https://wiki.example.com"),
            (
                "http://intranet.corp:8080/wiki?q",
                "https://wiki.example.com?q",
            ),
            (
                "https://hr.corp/people https://hr.corp:443/x https://hr.corp",
                "https://apps.example.com:8443/hr/people https://apps.example.com:8443/hr/x https://apps.example.com:8443/hr",
            ),
            (
                "url(http://intranet.corp:8080/wiki/bg.png)",
                "url(https://wiki.example.com/bg.png)",
            ),
            (
                "a.png 1x, http://intranet.corp:8080/wiki/b.png 2x",
                "a.png 1x, https://wiki.example.com/b.png 2x",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(rewrite(input), want, "{input}");
        }
    }

    #[test]
    fn other_urls_stay_as_they_are() {
        for input in [
            "http://intranet.corp:8080/wikis/x",
            "http://intranet.corp:8080/Wiki/x",
            "http://intranet.corp:8081/wiki/x",
            "http://intranet.corp/wiki/x",
            "https://intranet.corp:8080/wiki/x",
            "ftp://intranet.corp:8080/wiki/x",
            "https:\\/\\/intranet.corp:8080\\/wiki\\/x",
            "http://intranet.corp.evil.com:8080/wiki/x",
            "http://intranet.corp:8080@evil.com/wiki/x",
            "http://user@intranet.corp:8080/wiki/x",
            "https://hr.corp.evil/x",
            "https://hr.corp:4430/x",
            "https://hr.corp@evil/x",
            "http://hr.corp/x",
            "<p>intranet.corp:8080/wiki/ in text</p>",
        ] {
            assert_eq!(rewrite(input), input);
        }
    }

    #[test]
    fn no_rules_copy_the_input() {
        let rules = LinkRules::new(&[]);
        let mut stream = LinkStream::new();
        let mut out = Vec::new();
        stream.push(&rules, b"http://intranet.corp:8080/wiki/", &mut out);
        stream.finish(&rules, &mut out);
        assert_eq!(out, b"http://intranet.corp:8080/wiki/");
    }

    #[test]
    fn every_split_gives_what_one_piece_gives() {
        let rules = rules();
        let page = b"<a href=\"http://intranet.corp:8080/wiki/A\">x</a> //intranet.corp:8080/wiki \
            https://intranet.corp:8080/wiki/ https:\\/\\/intranet.corp:8080\\/wiki\\/ \
            https://hr.corp https://hr.corpx http:\\/\\/intranet.corp:8080\\/wiki\\/j http://intranet.corp:8080/wiki";
        let mut whole = Vec::new();
        rules.rewrite(page, &mut whole);
        for cut in 0..=page.len() {
            for second in cut..=page.len() {
                let mut stream = LinkStream::new();
                let mut out = Vec::new();
                stream.push(&rules, &page[..cut], &mut out);
                stream.push(&rules, &page[cut..second], &mut out);
                stream.push(&rules, &page[second..], &mut out);
                stream.finish(&rules, &mut out);
                assert_eq!(out, whole, "cut at {cut} and {second}");
            }
        }
    }

    #[test]
    fn a_stream_holds_back_less_than_the_longest_rule() {
        let rules = rules();
        let mut stream = LinkStream::new();
        let mut out = Vec::new();
        for _ in 0..10_000 {
            stream.push(&rules, b"xx http://intranet.corp:8080/wik", &mut out);
            assert!(stream.held.len() <= rules.longest());
        }
    }

    proptest! {
        #[test]
        fn pieces_give_what_one_piece_gives(
            parts in proptest::collection::vec(prop_oneof![
                Just("http://intranet.corp:8080/wiki/".to_owned()),
                Just("//intranet.corp:8080/wiki".to_owned()),
                Just("https://hr.corp".to_owned()),
                Just("https://intranet.corp:8080/wiki/".to_owned()),
                Just("http:\\/\\/intranet.corp:8080\\/wiki\\/".to_owned()),
                "[a-z:/.@\\\\ \"]{0,8}",
            ], 0..24),
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let rules = rules();
            let page = parts.concat().into_bytes();
            let mut whole = Vec::new();
            rules.rewrite(&page, &mut whole);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(page.len())).collect();
            cuts.sort_unstable();
            let mut stream = LinkStream::new();
            let (mut out, mut from) = (Vec::new(), 0);
            for cut in cuts {
                stream.push(&rules, &page[from..cut], &mut out);
                from = cut;
            }
            stream.push(&rules, &page[from..], &mut out);
            stream.finish(&rules, &mut out);
            prop_assert_eq!(out, whole);
        }
    }
}
