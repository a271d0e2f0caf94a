//! The parse path allocates nothing: a counting global allocator proves it.
// A global allocator cannot be written without `unsafe`; this test binary is the only place
// in the crate that needs it, and it only counts before delegating to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use gatehouse_http1::{
    parse_request, parse_response, BodyDecoder, BodyEvent, BodyKind, Field, HeadWriter, Limits,
    RequestMethod, Status, Version,
};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count<R>(f: impl FnOnce() -> R) -> (R, usize) {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let r = f();
    COUNTING.store(false, Ordering::SeqCst);
    (r, ALLOCATIONS.load(Ordering::SeqCst))
}

#[test]
fn parsing_heads_and_decoding_bodies_allocates_nothing() {
    let request = b"POST /upload?x=1 HTTP/1.1\r\nHost: app.test\r\nUser-Agent: curl/8\r\nCookie: a=b; c=d\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
    let response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
    let mut fields = [Field::EMPTY; 100];
    let mut out = Vec::with_capacity(1024);
    let (ok, allocations) = count(|| {
        let Ok(Status::Complete(head)) = parse_request(request, &mut fields, &Limits::default())
        else {
            return false;
        };
        let _ = head.fields.get("cookie");
        let mut body = BodyDecoder::new(head.body, &Limits::default());
        let mut at = head.head_len;
        let mut data = 0;
        loop {
            match body.decode(&request[at..]) {
                Ok((n, BodyEvent::Data(r))) => {
                    data += r.len();
                    at += n;
                }
                Ok((n, BodyEvent::Trailer(_))) => at += n,
                Ok((_, BodyEvent::End)) => break,
                _ => return false,
            }
        }
        let mut rfields = [Field::EMPTY; 100];
        let Ok(Status::Complete(resp)) = parse_response(response, &mut rfields, &Limits::default())
        else {
            return false;
        };
        let mut w = HeadWriter::request(
            &mut out,
            head.method_str(),
            head.target_str(),
            Version::Http11,
        )
        .unwrap();
        w.fields(gatehouse_http1::end_to_end(head.fields.as_slice()))
            .unwrap();
        w.finish();
        data == 5 && resp.body(RequestMethod::default()) == Ok(BodyKind::Length(5))
    });
    assert!(ok);
    assert_eq!(allocations, 0);
}
