//! What pre-authentication adds to a request: the service's own session check (find the
//! app's cookie among the browser's, open it, apply the app's policy) and the Cookie rewrite
//! that keeps Gatehouse's cookies from the back end, next to parsing the same ~900-byte
//! browser request head, which every request pays anyway.
//!
//! Run: `cargo bench --bench preauth`. Target (issue 6): the cookie check under 2 µs.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse_core::cookie::GroupList;
use gatehouse_core::{AuthMethods, Keyring, SessionRef};
use gatehouse_http1::{parse_request, Field, Limits, Status};
use gatehouse_service::auth::{check_session, strip_own_cookies, Gate, Scratch};

const CONFIG: &str = r#"
state_dir = "state"
[dev_idp]
[[apps]]
name = "wiki"
external_url = "https://wiki.example.com/"
internal_url = "http://wiki.corp:8080/"
mode = "preauth"
provider = "dev"
[apps.access]
groups = ["wiki-editors", "staff"]
deny_groups = ["contractors"]
networks = ["10.0.0.0/8", "192.0.2.0/24"]
require_mfa = true
max_signin_age = "12h"
"#;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn preauth(c: &mut Criterion) {
    let now = now();
    let config = gatehouse_service::config::parse(Path::new("bench.toml"), CONFIG).unwrap();
    let app = &config.apps[0];
    let keyring = Keyring::new(&[(1, [0x42; 32])]).unwrap();
    let groups = ["engineering", "staff", "vpn-users", "on-call"];
    let session = SessionRef {
        subject: "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        user_name: "jane.doe",
        display_name: "Jane Doe",
        email: "jane.doe@example.test",
        groups: GroupList::Strs(&groups),
        auth_methods: AuthMethods::from_amr(["pwd", "mfa"]),
        auth_time: now - 300,
        issued_at: now - 300,
        expires_at: now + 3600,
        app_id: "wiki",
        session_id: [7; 16],
    };
    let sealed = keyring
        .seal_to_string("__Host-gh-session-wiki", &session)
        .unwrap();
    let head = format!(
        "GET /wiki/Main_Page?action=view HTTP/1.1\r\nHost: wiki.example.com\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
         Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
         Accept-Language: en-GB,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n\
         Referer: https://wiki.example.com/wiki/Help\r\nConnection: keep-alive\r\n\
         Cookie: _ga=GA1.2.1234567890.1700000000; theme=dark; __Host-gh-session-wiki={sealed}; lang=en\r\n\
         Upgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n\
         Sec-Fetch-Site: same-origin\r\nPriority: u=0, i\r\n\r\n"
    );
    println!(
        "request head: {} bytes; session cookie value: {} bytes",
        head.len(),
        sealed.len()
    );
    let limits = Limits::default();
    let client = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    let mut scratch = Scratch::new();

    let mut group = c.benchmark_group("preauth");
    group.bench_function("parse_head", |b| {
        let mut fields = [Field::EMPTY; 64];
        b.iter(|| {
            let Ok(Status::Complete(head)) =
                parse_request(black_box(head.as_bytes()), &mut fields, &limits)
            else {
                panic!("parse")
            };
            black_box(head.fields.as_slice().len())
        })
    });
    group.bench_function("parse_head+session_check", |b| {
        let mut fields = [Field::EMPTY; 64];
        b.iter(|| {
            let Ok(Status::Complete(head)) =
                parse_request(black_box(head.as_bytes()), &mut fields, &limits)
            else {
                panic!("parse")
            };
            let gate = check_session(
                &keyring,
                app,
                head.fields.get_all("cookie"),
                client,
                now,
                &mut scratch.open[..],
                &mut scratch.memo,
            );
            let Gate::Allow(session) = gate else {
                panic!("the session is allowed")
            };
            black_box(session.user_name.len())
        })
    });
    // What the check costs on its own, fields already parsed.
    let mut fields = [Field::EMPTY; 64];
    let Ok(Status::Complete(parsed)) = parse_request(head.as_bytes(), &mut fields, &limits) else {
        panic!("parse")
    };
    let cookie = parsed.fields.get("cookie").unwrap();
    // The first request of a connection opens the cookie in full (base64, binding digest,
    // AES-GCM, decode); later ones on a keep-alive connection that send the same cookie only
    // decode the remembered plaintext again and re-check expiry and policy.
    group.bench_function("session_check_first_on_connection", |b| {
        b.iter(|| {
            let mut memo = gatehouse_core::cookie::OpenMemo::default();
            let gate = check_session(
                &keyring,
                app,
                std::iter::once(black_box(cookie)),
                client,
                now,
                &mut scratch.open[..],
                &mut memo,
            );
            matches!(gate, Gate::Allow(_))
        })
    });
    group.bench_function("session_check_keep_alive", |b| {
        b.iter(|| {
            let gate = check_session(
                &keyring,
                app,
                std::iter::once(black_box(cookie)),
                client,
                now,
                &mut scratch.open[..],
                &mut scratch.memo,
            );
            matches!(gate, Gate::Allow(_))
        })
    });
    group.bench_function("cookie_strip", |b| {
        b.iter(|| strip_own_cookies(std::iter::once(black_box(cookie)), &mut scratch.cookie))
    });
    group.finish();
}

criterion_group!(benches, preauth);
criterion_main!(benches);
