//! The session cookie path allocates nothing.
//!
//! Sealing, opening (good and bad values) and re-sealing run under a counting global allocator;
//! any allocation made on the test thread while counting fails the test.
// A global allocator cannot be written without `unsafe`; this test binary is the only place in
// the crate that needs it (the workspace denies `unsafe_code`, `src/lib.rs` forbids it), and it
// only counts before delegating to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use gatehouse_core::cookie::{
    AuthMethods, CookieError, GroupList, Keyring, SessionRef, MAX_COOKIE_VALUE_LEN, SCRATCH_LEN,
};

const NAME: &str = "__Host-gatehouse";
const APP: &str = "wiki";
const NOW: u64 = 1_700_000_000;

/// Forwards to the system allocator and counts calls made while this thread is counting.
struct Counting;

thread_local! {
    // Const-initialised and without destructors: reading them never allocates, so the
    // allocator can use them without recursing into itself.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: while a thread shuts down its thread-locals may already be gone.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every method forwards its arguments unchanged to `System`, so this allocator meets the
// `GlobalAlloc` contract exactly as `System` does; the counting only touches the thread-locals
// above, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract; forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract; forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract; forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with the number of allocations it made on this thread.
fn allocations_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let result = f();
    COUNTING.with(|c| c.set(false));
    (result, ALLOCATIONS.with(Cell::get))
}

fn session<'a>(groups: &'a [&'a str]) -> SessionRef<'a> {
    SessionRef {
        subject: "00u1abcd",
        user_name: "ada",
        display_name: "Ada Lovelace",
        email: "ada@example.com",
        groups: GroupList::Strs(groups),
        auth_methods: AuthMethods::from_amr(["pwd", "mfa"]),
        auth_time: NOW - 10,
        issued_at: NOW,
        expires_at: NOW + 3_600,
        app_id: APP,
        session_id: [3; 16],
    }
}

#[test]
fn counting_allocator_sees_allocations() {
    // Control: the harness must notice an allocation, or the zeros below prove nothing.
    let (v, n) = allocations_during(|| vec![1u8; 64]);
    assert_eq!(v.len(), 64);
    assert!(n >= 1);
}

#[test]
fn seal_and_open_do_not_allocate() {
    let keyring = Keyring::new(&[(2, [7; 32]), (1, [9; 32])]).expect("keys");
    let groups = ["eng", "ops", "admins"];
    let session = session(&groups);
    let mut scratch = [0u8; SCRATCH_LEN];
    let mut out = [0u8; MAX_COOKIE_VALUE_LEN];
    let mut open_scratch = [0u8; SCRATCH_LEN];
    let mut reseal_out = [0u8; MAX_COOKIE_VALUE_LEN];

    // Warm-up outside the count: the first use of the system RNG and CPU feature detection.
    keyring
        .seal(NAME, &session, &mut scratch, &mut out)
        .expect("seals");

    let (sealed, n) = allocations_during(|| {
        keyring
            .seal(NAME, &session, &mut scratch, &mut out)
            .map(str::len)
    });
    assert_eq!(n, 0, "seal allocated");
    let len = sealed.expect("seals");

    let (opened, n) = allocations_during(|| {
        let view = keyring.open(NAME, APP, &out[..len], NOW, &mut open_scratch)?;
        // Read everything, groups included, while counting.
        let group_bytes: usize = view.groups.iter().map(str::len).sum();
        let total = view.subject.len() + view.email.len() + group_bytes;
        // Re-seal straight from the view (a refresh).
        let again = keyring.seal(NAME, &view.as_session_ref(), &mut scratch, &mut reseal_out)?;
        Ok::<(usize, bool, usize), CookieError>((total, view.auth_methods.mfa(), again.len()))
    });
    assert_eq!(n, 0, "open allocated");
    let (total, mfa, again_len) = opened.expect("opens");
    assert_eq!(
        total,
        "00u1abcd".len() + "ada@example.com".len() + "engopsadmins".len()
    );
    assert!(mfa);
    assert_eq!(again_len, len);
}

#[test]
fn rejections_do_not_allocate() {
    let keyring = Keyring::new(&[(1, [9; 32])]).expect("keys");
    let groups = ["eng"];
    let mut scratch = [0u8; SCRATCH_LEN];
    let mut out = [0u8; MAX_COOKIE_VALUE_LEN];
    let len = keyring
        .seal(NAME, &session(&groups), &mut scratch, &mut out)
        .expect("seals")
        .len();
    let mut tampered = out;
    tampered[len / 2] = if tampered[len / 2] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let mut open_scratch = [0u8; SCRATCH_LEN];

    let (results, n) = allocations_during(|| {
        [
            keyring
                .open(NAME, APP, &tampered[..len], NOW, &mut open_scratch)
                .err(),
            keyring
                .open(NAME, "other-app", &out[..len], NOW, &mut open_scratch)
                .err(),
            keyring
                .open(NAME, APP, &out[..len], NOW + 3_600, &mut open_scratch)
                .err(),
            keyring
                .open(NAME, APP, &out[..len - 7], NOW, &mut open_scratch)
                .err(),
            keyring
                .open(NAME, APP, b"%%%", NOW, &mut open_scratch)
                .err(),
        ]
    });
    assert_eq!(n, 0, "a rejection allocated");
    assert_eq!(results[0], Some(CookieError::Tampered));
    assert_eq!(results[1], Some(CookieError::Tampered));
    assert_eq!(results[2], Some(CookieError::Expired));
    assert!(results[3].is_some());
    assert_eq!(results[4], Some(CookieError::Base64));
}

#[test]
fn opening_a_remembered_cookie_again_does_not_allocate() {
    let keyring = Keyring::new(&[(1, [9; 32])]).expect("keys");
    let groups = ["eng", "ops"];
    let mut scratch = [0u8; SCRATCH_LEN];
    let mut out = [0u8; MAX_COOKIE_VALUE_LEN];
    let len = keyring
        .seal(NAME, &session(&groups), &mut scratch, &mut out)
        .expect("seals")
        .len();
    let mut open_scratch = [0u8; SCRATCH_LEN];
    let mut memo = gatehouse_core::cookie::OpenMemo::default();
    // The first open of a connection remembers the value (its only allocations).
    keyring
        .open_memo(NAME, APP, &out[..len], NOW, &mut open_scratch, &mut memo)
        .expect("opens");
    let (user, n) = allocations_during(|| {
        keyring
            .open_memo(NAME, APP, &out[..len], NOW, &mut open_scratch, &mut memo)
            .map(|view| view.user_name.len())
    });
    assert_eq!(n, 0, "opening again allocated");
    assert!(user.expect("opens again") > 0);
}
