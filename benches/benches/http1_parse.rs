//! Our HTTP/1.1 head parser side by side with httparse, and chunked decoding throughput.
//!
//! Run: `cargo bench --bench http1_parse`. Each group measures both parsers on the same bytes
//! in the same run; the figures go into `docs/benchmarks.md`.
//!
//! Criterion measures one parser for seconds and then the other, so a machine whose speed drifts
//! (shared cores) can favour either. Before the criterion groups, the heads are therefore also
//! timed in alternating short rounds (`interleaved:` lines), where drift hits both parsers alike.
//! Set `HTTP1_PARSE_INTERLEAVED=0` to skip that part.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use gatehouse_http1::{parse_request, BodyDecoder, BodyEvent, BodyKind, Field, Limits, Status};
use std::hint::black_box;
use std::time::Instant;

/// (a) a small API call, about 100 bytes.
const SMALL_GET: &[u8] = b"GET /api/v1/items/42 HTTP/1.1\r\nHost: app1.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

/// (b) a browser navigation with cookies, about 800 bytes.
const BROWSER: &[u8] = b"GET /dashboard/reports?year=2026&quarter=3&view=summary HTTP/1.1\r\n\
Host: app1.example.com\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
Upgrade-Insecure-Requests: 1\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-User: ?1\r\n\
Sec-Fetch-Dest: document\r\n\
Referer: https://app1.example.com/dashboard\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en-US;q=0.9,en;q=0.8\r\n\
Cookie: theme=dark; lang=en; __Host-gatehouse=AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n\r\n";

/// (c) about 4 KiB with many fields.
fn many_fields() -> Vec<u8> {
    let mut head = b"POST /graphql HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\nContent-Length: 512\r\n".to_vec();
    let mut i = 0;
    while head.len() < 4000 {
        head.extend_from_slice(
            format!(
                "X-Custom-Header-{i:02}: value-{i:02}-abcdefghijklmnopqrstuvwxyz0123456789\r\n"
            )
            .as_bytes(),
        );
        i += 1;
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn ours(buf: &[u8]) -> usize {
    let mut fields = [Field::EMPTY; 100];
    match parse_request(buf, &mut fields, &Limits::default()) {
        Ok(Status::Complete(head)) => head.head_len,
        _ => panic!("bench input must parse"),
    }
}

fn theirs(buf: &[u8]) -> usize {
    let mut fields = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => panic!("bench input must parse"),
    }
}

/// The three heads, named; `large` is [`many_fields`].
fn heads_named(large: &[u8]) -> [(&'static str, &[u8]); 3] {
    [
        ("a_get_100B", SMALL_GET),
        ("b_browser_800B", BROWSER),
        ("c_many_4KiB", large),
    ]
}

fn heads(c: &mut Criterion) {
    let large = many_fields();
    for (name, input) in heads_named(&large) {
        assert_eq!(ours(input), theirs(input));
        let mut group = c.benchmark_group(format!("head/{name}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(BenchmarkId::new("gatehouse", input.len()), input, |b, i| {
            b.iter(|| ours(black_box(i)))
        });
        group.bench_with_input(BenchmarkId::new("httparse", input.len()), input, |b, i| {
            b.iter(|| theirs(black_box(i)))
        });
        group.finish();
    }
}

fn chunked(c: &mut Criterion) {
    // 1 MiB of data in 4 KiB chunks.
    let mut wire = Vec::new();
    for _ in 0..256 {
        wire.extend_from_slice(b"1000\r\n");
        wire.extend_from_slice(&[b'x'; 4096]);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let mut group = c.benchmark_group("chunked/1MiB_in_4KiB_chunks");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("gatehouse", |b| {
        b.iter(|| {
            let mut decoder = BodyDecoder::new(BodyKind::Chunked, &Limits::default());
            let (mut at, mut data) = (0, 0);
            loop {
                match decoder.decode(black_box(&wire[at..])) {
                    Ok((n, BodyEvent::Data(r))) => {
                        data += r.len();
                        at += n;
                    }
                    Ok((_, BodyEvent::End)) => break data,
                    Ok((n, _)) => at += n,
                    Err(e) => panic!("{e}"),
                }
            }
        })
    });
    group.bench_function("httparse", |b| {
        b.iter(|| {
            let (mut at, mut data) = (0, 0);
            loop {
                match httparse::parse_chunk_size(black_box(&wire[at..])) {
                    Ok(httparse::Status::Complete((_, 0))) => break data,
                    Ok(httparse::Status::Complete((n, size))) => {
                        let size = size as usize;
                        data += black_box(&wire[at + n..at + n + size]).len();
                        at += n + size + 2;
                    }
                    _ => panic!("bench input must parse"),
                }
            }
        })
    });
    group.finish();
}

/// Nanoseconds per parse over `n` parses.
fn time_per_parse(parse: fn(&[u8]) -> usize, input: &[u8], n: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        black_box(parse(black_box(input)));
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

/// Both parsers in 1,001 alternating rounds of about 0.4 MB of input each. Prints each one's
/// fastest and median round, the ratio of the fastest rounds and the median of the per-round
/// ratios (httparse time / ours: above 1 means we are faster).
fn interleaved() {
    const ROUNDS: usize = 1001;
    let large = many_fields();
    for (name, input) in heads_named(&large) {
        let n = u32::try_from(400_000 / input.len()).expect("small");
        let (mut us, mut them, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (a, b) = (
                time_per_parse(ours, input, n),
                time_per_parse(theirs, input, n),
            );
            us.push(a);
            them.push(b);
            ratios.push(b / a);
        }
        for v in [&mut us, &mut them, &mut ratios] {
            v.sort_by(f64::total_cmp);
        }
        let mid = ROUNDS / 2;
        println!(
            "interleaved: head/{name:<15} gatehouse {:7.1} ns (median {:7.1}) | httparse {:7.1} ns \
             (median {:7.1}) | ratio {:.3} (median of rounds {:.3})",
            us[0],
            us[mid],
            them[0],
            them[mid],
            them[0] / us[0],
            ratios[mid]
        );
    }
}

criterion_group!(benches, heads, chunked);

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not and only smoke-tests.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    if benchmarking && std::env::var("HTTP1_PARSE_INTERLEAVED").as_deref() != Ok("0") {
        interleaved();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
