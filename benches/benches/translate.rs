//! Body translation (`translate_body`) on a realistic 200 KiB page, next to passing the same
//! bytes through untouched: the page arrives in 16 KiB reads, as from a back end.
//!
//! The page: a head with stylesheets and scripts, an inline script of 20 KiB naming API URLs,
//! an inline style block, then articles with paragraphs, images with srcset and links; about
//! one link in three names an internal origin (the app's own or another published app's).
//!
//! Run: `cargo bench --bench translate`.

use std::hint::black_box;
use std::rc::Rc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatehouse_connector::body::{BodyTranslator, BodyType};
use gatehouse_core::links::LinkRules;
use gatehouse_core::translate::{Mapping, Origin};

const PAGE_SIZE: usize = 200 * 1024;
const READ: usize = 16 * 1024;
const OWN: &str = "http://wiki.corp.internal:8080";
const OTHER: &str = "http://hr.corp.internal";

fn page() -> Vec<u8> {
    let mut page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Team wiki</title>\n\
         <link rel=\"stylesheet\" href=\"{OWN}/static/site.css\">\n\
         <link rel=\"icon\" href=\"/favicon.ico\">\n\
         <script src=\"{OWN}/static/app.js\" defer></script>\n\
         <style>body {{ font: 16px/1.5 sans-serif; margin: 0 auto; max-width: 60em }}\n\
         .hero {{ background: url({OWN}/static/hero.jpg) center/cover }}</style>\n<script>\n"
    );
    let mut i = 0;
    while page.len() < 20 * 1024 {
        page.push_str(&format!(
            "  fetch(\"{OWN}/api/v2/pages/{i}?expand=children\").then(r => r.json()).then(render{i});\n"
        ));
        i += 1;
    }
    page.push_str("</script></head>\n<body><header class=\"hero\"><nav>");
    i = 0;
    while page.len() < PAGE_SIZE {
        let link = match i % 6 {
            0 => format!("{OWN}/pages/{i}"),
            1 => format!("{OTHER}/people/{i}"),
            2 => format!("https://docs.example.net/guide/{i}"),
            _ => format!("/pages/{i}#section"),
        };
        page.push_str(&format!(
            "<article id=\"a{i}\"><h2><a href=\"{link}\">Article {i}</a></h2>\n\
             <p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor \
             incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud \
             exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.</p>\n\
             <img alt=\"figure {i}\" src=\"/img/{i}.png\" srcset=\"/img/{i}.png 1x, /img/{i}@2x.png 2x\" width=\"640\" height=\"360\">\n\
             <p class=\"meta\">Edited by <a href=\"/users/{i}\">user {i}</a> &middot; <span>3 min read</span></p></article>\n"
        ));
        i += 1;
    }
    page.push_str("</nav></header></body></html>\n");
    page.into_bytes()
}

fn rules() -> Rc<LinkRules> {
    let external = |host, prefix| Origin {
        https: true,
        host,
        port: 443,
        path_prefix: prefix,
    };
    Rc::new(LinkRules::new(&[
        Mapping {
            external: external("wiki.example.com", "/"),
            internal: Origin {
                https: false,
                host: "wiki.corp.internal",
                port: 8080,
                path_prefix: "/",
            },
        },
        Mapping {
            external: external("apps.example.com", "/hr/"),
            internal: Origin {
                https: false,
                host: "hr.corp.internal",
                port: 80,
                path_prefix: "/",
            },
        },
    ]))
}

/// All of `page` through `translator`, read by read; returns the bytes out.
fn run(mut translator: BodyTranslator, page: &[u8]) -> usize {
    let mut out = 0;
    for read in page.chunks(READ) {
        out += translator.write(read).expect("translates").len();
    }
    out + translator.end().expect("translates").len()
}

fn translate(c: &mut Criterion) {
    let page = page();
    let rules = rules();
    let mut group = c.benchmark_group("translate_200k_page");
    group.throughput(Throughput::Bytes(page.len() as u64));
    group.bench_function("untouched", |b| {
        // What passthrough costs at most: each read handed on as `Bytes` (a copy here; the
        // connector splits its read buffer instead).
        b.iter(|| {
            page.chunks(READ)
                .map(|read| black_box(Bytes::copy_from_slice(read)).len())
                .sum::<usize>()
        })
    });
    group.bench_function("html", |b| {
        b.iter(|| {
            let translator = BodyTranslator::new(BodyType::Html(encoding_rs::UTF_8), rules.clone());
            black_box(run(translator, black_box(&page)))
        })
    });
    group.bench_function("text_only", |b| {
        // The same bytes as CSS or JavaScript: links found anywhere, no HTML parsing.
        b.iter(|| {
            let translator = BodyTranslator::new(BodyType::Text, rules.clone());
            black_box(run(translator, black_box(&page)))
        })
    });
    group.finish();
}

criterion_group!(benches, translate);
criterion_main!(benches);
