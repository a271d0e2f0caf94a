//! Temporary profiling loop.
use gatehouse_http1::{parse_request, Field, Limits, Status};
fn main() {
    let small: &[u8] = b"GET /api/v1/items/42 HTTP/1.1\r\nHost: app1.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
    let browser = std::fs::read("/tmp/browser.txt").unwrap_or_default();
    let buf: &[u8] = if std::env::var("BROWSER").is_ok() {
        &browser
    } else {
        small
    };
    let mut total = 0;
    let theirs = std::env::args().nth(1).is_some();
    for _ in 0..200_000 {
        if theirs {
            let mut fields = [httparse::EMPTY_HEADER; 100];
            let mut req = httparse::Request::new(&mut fields);
            if let Ok(httparse::Status::Complete(n)) = req.parse(std::hint::black_box(buf)) {
                total += n;
            }
        } else {
            let mut fields = [Field::EMPTY; 100];
            if let Ok(Status::Complete(h)) =
                parse_request(std::hint::black_box(buf), &mut fields, &Limits::default())
            {
                total += h.head_len;
            }
        }
    }
    println!("{total}");
}
