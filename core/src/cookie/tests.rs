use std::collections::HashSet;

use super::*;

const NAME: &str = "__Host-gatehouse";
const NOW: u64 = 1_700_000_000;

fn keyring_of(keys: &[(u8, u8)]) -> Keyring {
    let keys: Vec<(u8, [u8; KEY_LEN])> = keys
        .iter()
        .map(|&(id, fill)| (id, [fill; KEY_LEN]))
        .collect();
    Keyring::new(&keys).expect("valid keys")
}

fn session<'a>(app_id: &'a str, groups: &'a [&'a str]) -> SessionRef<'a> {
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
        app_id,
        session_id: [9; 16],
    }
}

fn sealed(keyring: &Keyring, app_id: &str) -> String {
    keyring
        .seal_to_string(NAME, &session(app_id, &["eng", "ops"]))
        .expect("seals")
}

fn open<'s>(
    keyring: &Keyring,
    app_id: &str,
    value: &[u8],
    scratch: &'s mut [u8],
) -> Result<SessionView<'s>, CookieError> {
    keyring.open(NAME, app_id, value, NOW, scratch)
}

#[test]
fn seal_then_open_round_trips() {
    let keyring = keyring_of(&[(1, 0x11)]);
    let groups = ["eng", "ops"];
    let original = session("wiki", &groups);
    let mut scratch = [0u8; SCRATCH_LEN];
    let mut out = [0u8; MAX_COOKIE_VALUE_LEN];
    let value = keyring
        .seal(NAME, &original, &mut scratch, &mut out)
        .expect("seals")
        .to_owned();
    let plain_len = original.encoded_len().expect("len");
    assert_eq!(value.len(), base64_len(plain_len + OVERHEAD));

    let mut scratch = [0u8; SCRATCH_LEN];
    let view = open(&keyring, "wiki", value.as_bytes(), &mut scratch).expect("opens");
    assert_eq!(view.as_session_ref(), original);
    assert_eq!(view.groups.iter().collect::<Vec<_>>(), groups);
}

#[test]
fn reseal_from_view() {
    let keyring = keyring_of(&[(1, 0x11)]);
    let value = sealed(&keyring, "wiki");
    let mut scratch = [0u8; SCRATCH_LEN];
    let view = open(&keyring, "wiki", value.as_bytes(), &mut scratch).expect("opens");
    let refreshed = SessionRef {
        expires_at: NOW + 7_200,
        ..view.as_session_ref()
    };
    let again = keyring.seal_to_string(NAME, &refreshed).expect("seals");
    let mut scratch2 = [0u8; SCRATCH_LEN];
    let view2 = open(&keyring, "wiki", again.as_bytes(), &mut scratch2).expect("opens");
    assert_eq!(view2.expires_at, NOW + 7_200);
    assert_eq!(view2.groups, view.groups);
}

#[test]
fn flipping_any_character_fails() {
    let keyring = keyring_of(&[(1, 0x11)]);
    let value = sealed(&keyring, "wiki").into_bytes();
    let mut scratch = [0u8; SCRATCH_LEN];
    for i in 0..value.len() {
        for mask in [0x01u8, 0x02, 0x04, 0x20, 0x40, 0x80] {
            let mut bad = value.clone();
            bad[i] ^= mask;
            let res = open(&keyring, "wiki", &bad, &mut scratch);
            assert!(res.is_err(), "char {i} ^ {mask:#x} opened");
        }
    }
}

#[test]
fn flipping_any_decoded_bit_fails() {
    let keyring = keyring_of(&[(1, 0x11)]);
    let value = sealed(&keyring, "wiki");
    let bytes = URL_SAFE_NO_PAD.decode(&value).expect("own output decodes");
    let mut scratch = [0u8; SCRATCH_LEN];
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[i] ^= 1 << bit;
            let text = URL_SAFE_NO_PAD.encode(&bad);
            let res = open(&keyring, "wiki", text.as_bytes(), &mut scratch);
            let expected = if i == 0 {
                CookieError::UnknownKey
            } else {
                CookieError::Tampered
            };
            assert_eq!(res.err(), Some(expected), "byte {i} bit {bit}");
        }
    }
}

#[test]
fn every_truncation_fails() {
    let keyring = keyring_of(&[(1, 0x11)]);
    let value = sealed(&keyring, "wiki");
    let mut scratch = [0u8; SCRATCH_LEN];
    for cut in 0..value.len() {
        let res = open(&keyring, "wiki", &value.as_bytes()[..cut], &mut scratch);
        assert!(res.is_err(), "truncated to {cut} opened");
    }
    let bytes = URL_SAFE_NO_PAD.decode(&value).expect("decodes");
    for cut in 0..bytes.len() {
        let text = URL_SAFE_NO_PAD.encode(&bytes[..cut]);
        let res = open(&keyring, "wiki", text.as_bytes(), &mut scratch);
        let expected = if cut < OVERHEAD {
            CookieError::TooShort
        } else {
            CookieError::Tampered
        };
        assert_eq!(res.err(), Some(expected), "decoded truncated to {cut}");
    }
}

#[test]
fn garbage_is_rejected_with_a_reason() {
    let keyring = keyring_of(&[(1, 0x11)]);
    let mut scratch = [0u8; SCRATCH_LEN];
    assert_eq!(
        open(&keyring, "wiki", b"", &mut scratch).err(),
        Some(CookieError::TooShort)
    );
    assert_eq!(
        open(&keyring, "wiki", b"a b", &mut scratch).err(),
        Some(CookieError::Base64)
    );
    assert_eq!(
        open(&keyring, "wiki", b"AAAA====", &mut scratch).err(),
        Some(CookieError::Base64)
    );
    let long = vec![b'A'; MAX_COOKIE_VALUE_LEN + 1];
    assert_eq!(
        open(&keyring, "wiki", &long, &mut scratch).err(),
        Some(CookieError::TooLarge {
            len: MAX_COOKIE_VALUE_LEN + 1
        })
    );
}

#[test]
fn a_cookie_for_one_app_does_not_open_at_another() {
    let keyring = keyring_of(&[(1, 0x11)]);
    let value = sealed(&keyring, "app-a");
    let mut scratch = [0u8; SCRATCH_LEN];
    assert_eq!(
        open(&keyring, "app-b", value.as_bytes(), &mut scratch).err(),
        Some(CookieError::Tampered)
    );
    assert_eq!(
        keyring
            .open("other-cookie", "app-a", value.as_bytes(), NOW, &mut scratch)
            .err(),
        Some(CookieError::Tampered)
    );
    assert!(open(&keyring, "app-a", value.as_bytes(), &mut scratch).is_ok());
}

#[test]
fn expiry_is_checked_against_now() {
    let keyring = keyring_of(&[(1, 0x11)]);
    let value = sealed(&keyring, "wiki");
    let mut scratch = [0u8; SCRATCH_LEN];
    let expires = NOW + 3_600;
    assert!(keyring
        .open(NAME, "wiki", value.as_bytes(), expires - 1, &mut scratch)
        .is_ok());
    assert_eq!(
        keyring
            .open(NAME, "wiki", value.as_bytes(), expires, &mut scratch)
            .err(),
        Some(CookieError::Expired)
    );
}

#[test]
fn rotation_keeps_old_keys_until_retired() {
    let old = keyring_of(&[(1, 0x11)]);
    let value = sealed(&old, "wiki");
    let rotated = keyring_of(&[(2, 0x22), (1, 0x11)]);
    assert_eq!(rotated.current_key_id(), 2);
    let mut scratch = [0u8; SCRATCH_LEN];
    let view = open(&rotated, "wiki", value.as_bytes(), &mut scratch).expect("old key opens");
    assert_eq!(view.key_id, 1);
    assert!(rotated.needs_reseal(&view), "sealed under the previous key");
    // Re-sealing the opened session moves it to the current key, and it survives retirement.
    let resealed = rotated
        .seal_to_string(NAME, &view.as_session_ref())
        .expect("reseals");
    let retired_soon = keyring_of(&[(2, 0x22)]);
    let mut again = [0u8; SCRATCH_LEN];
    let moved = open(&retired_soon, "wiki", resealed.as_bytes(), &mut again).expect("opens");
    assert!(!retired_soon.needs_reseal(&moved));
    assert_eq!(moved.session_id, view.session_id);

    let fresh = sealed(&rotated, "wiki");
    let mut check = [0u8; SCRATCH_LEN];
    let n = URL_SAFE_NO_PAD
        .decode_slice(fresh.as_bytes(), &mut check)
        .expect("decodes");
    assert!(n > 0);
    assert_eq!(check[0], 2, "the current key seals");

    let retired = keyring_of(&[(2, 0x22)]);
    assert_eq!(
        open(&retired, "wiki", value.as_bytes(), &mut scratch).err(),
        Some(CookieError::UnknownKey)
    );
    assert!(open(&retired, "wiki", fresh.as_bytes(), &mut scratch).is_ok());
}

#[test]
fn same_id_different_key_is_tampered() {
    let value = sealed(&keyring_of(&[(1, 0x11)]), "wiki");
    let mut scratch = [0u8; SCRATCH_LEN];
    assert_eq!(
        open(
            &keyring_of(&[(1, 0x99)]),
            "wiki",
            value.as_bytes(),
            &mut scratch
        )
        .err(),
        Some(CookieError::Tampered)
    );
}

#[test]
fn nonces_do_not_repeat() {
    let keyring = keyring_of(&[(1, 0x11)]);
    let s = session("w", &[]);
    let mut scratch = [0u8; SCRATCH_LEN];
    let mut out = [0u8; MAX_COOKIE_VALUE_LEN];
    let mut decoded = [0u8; SCRATCH_LEN];
    let mut nonces = HashSet::with_capacity(100_000);
    for _ in 0..100_000 {
        let value = keyring
            .seal(NAME, &s, &mut scratch, &mut out)
            .expect("seals");
        let n = URL_SAFE_NO_PAD
            .decode_slice(value.as_bytes(), &mut decoded)
            .expect("decodes");
        assert!(n >= HEADER_LEN);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&decoded[1..HEADER_LEN]);
        assert!(nonces.insert(nonce), "nonce repeated");
    }
}

#[test]
fn oversized_sessions_name_the_way_out() {
    let keyring = keyring_of(&[(1, 0x11)]);
    let names: Vec<String> = (0..200)
        .map(|i| format!("a-rather-long-group-name-{i:04}"))
        .collect();
    let s = SessionRef {
        groups: GroupList::Strings(&names),
        ..session("wiki", &[])
    };
    let err = keyring.seal_to_string(NAME, &s).expect_err("too large");
    let plain = s.encoded_len().expect("len");
    assert_eq!(
        err,
        CookieError::TooLarge {
            len: base64_len(plain + OVERHEAD)
        }
    );
    assert!(err
        .to_string()
        .contains("keep only the groups that policies name"));

    // Trimming to the groups a policy names brings it back under the limit.
    let named: Vec<&str> = names.iter().take(10).map(String::as_str).collect();
    let trimmed = SessionRef {
        groups: GroupList::Strs(&named),
        ..s
    };
    assert!(keyring.seal_to_string(NAME, &trimmed).is_ok());
}

#[test]
fn the_limit_is_exactly_4096_characters() {
    let keyring = keyring_of(&[(1, 0x11)]);
    let base = session("wiki", &[]);
    // Grow the display name until the value would be just over the limit.
    let fixed = base.encoded_len().expect("len") - base.display_name.len();
    let max_plain = SCRATCH_LEN - OVERHEAD;
    let fits = "x".repeat(max_plain - fixed);
    let s = SessionRef {
        display_name: &fits,
        ..base
    };
    let value = keyring
        .seal_to_string(NAME, &s)
        .expect("exactly at the limit");
    assert_eq!(value.len(), MAX_COOKIE_VALUE_LEN);
    let mut scratch = [0u8; SCRATCH_LEN];
    assert!(open(&keyring, "wiki", value.as_bytes(), &mut scratch).is_ok());

    let over = "x".repeat(max_plain - fixed + 1);
    let s = SessionRef {
        display_name: &over,
        ..base
    };
    assert!(matches!(
        keyring.seal_to_string(NAME, &s),
        Err(CookieError::TooLarge { .. })
    ));
}

#[test]
fn small_buffers_are_reported() {
    let keyring = keyring_of(&[(1, 0x11)]);
    let s = session("wiki", &[]);
    let mut small = [0u8; 16];
    let mut out = [0u8; MAX_COOKIE_VALUE_LEN];
    assert_eq!(
        keyring.seal(NAME, &s, &mut small, &mut out).err(),
        Some(CookieError::BufferTooSmall)
    );
    let mut scratch = [0u8; SCRATCH_LEN];
    let mut small_out = [0u8; 16];
    assert_eq!(
        keyring.seal(NAME, &s, &mut scratch, &mut small_out).err(),
        Some(CookieError::BufferTooSmall)
    );
    let value = sealed(&keyring, "wiki");
    assert_eq!(
        open(&keyring, "wiki", value.as_bytes(), &mut small).err(),
        Some(CookieError::BufferTooSmall)
    );
}

#[test]
fn keyring_construction_errors() {
    assert!(matches!(Keyring::new(&[]), Err(KeyringError::Empty)));
    assert!(matches!(
        Keyring::new(&[(3, [0; KEY_LEN]), (3, [1; KEY_LEN])]),
        Err(KeyringError::DuplicateKeyId(3))
    ));
    let k = keyring_of(&[(5, 1), (4, 2)]);
    assert_eq!(k.key_ids().collect::<Vec<_>>(), [5, 4]);
    assert!(!format!("{k:?}").contains("0101"));
}

#[test]
fn session_ids_are_random() {
    let keyring = keyring_of(&[(1, 0x11)]);
    let a = keyring.new_session_id().expect("rng");
    let b = keyring.new_session_id().expect("rng");
    assert_ne!(a, b);
}

#[cfg(unix)]
#[test]
fn key_file_is_created_private_and_reloaded() {
    use std::os::unix::fs::PermissionsExt;

    let dir = std::env::temp_dir().join(format!(
        "gatehouse-core-keyring-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("cookie.keys");

    let first = Keyring::load_or_create(&path).expect("creates");
    let mode = std::fs::metadata(&path)
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let value = sealed(&first, "wiki");
    let second = Keyring::load_or_create(&path).expect("loads");
    assert_eq!(second.current_key_id(), first.current_key_id());
    let mut scratch = [0u8; SCRATCH_LEN];
    assert!(open(&second, "wiki", value.as_bytes(), &mut scratch).is_ok());

    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[cfg(unix)]
#[test]
fn a_key_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("gatehouse-keymode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("cookie.keys");
    Keyring::load_or_create(&path).expect("created");
    assert_eq!(
        std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        Keyring::load_or_create(&path).is_ok(),
        "reloads while private"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = Keyring::load_or_create(&path).expect_err("refused");
    assert!(
        err.to_string().contains("chmod 600") || format!("{err:?}").contains("PermissionDenied"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sealed_bytes_round_trip_and_bind_name_and_app() {
    let keyring = keyring_of(&[(1, 7)]);
    let value = keyring
        .seal_bytes("login", "wiki", b"pending state")
        .unwrap();
    assert_eq!(
        keyring
            .open_bytes("login", "wiki", value.as_bytes())
            .unwrap(),
        b"pending state"
    );
    assert_eq!(
        keyring.open_bytes("login", "mail", value.as_bytes()),
        Err(CookieError::Tampered)
    );
    assert_eq!(
        keyring.open_bytes("other", "wiki", value.as_bytes()),
        Err(CookieError::Tampered)
    );
    let mut flipped = value.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        keyring.open_bytes("login", "wiki", &flipped),
        Err(CookieError::Tampered)
    );
    assert_eq!(
        keyring.open_bytes("login", "wiki", b"AAAA"),
        Err(CookieError::TooShort)
    );
}

#[test]
fn a_session_cookie_does_not_open_as_sealed_bytes() {
    let keyring = keyring_of(&[(1, 7)]);
    let value = sealed(&keyring, "app1");
    assert_eq!(
        keyring.open_bytes(NAME, "app1", value.as_bytes()),
        Err(CookieError::Tampered)
    );
}

#[test]
fn a_remembered_cookie_opens_again_without_decrypting_and_expires() {
    let keyring = keyring_of(&[(1, 7)]);
    let value = sealed(&keyring, "app1");
    let mut scratch = vec![0u8; SCRATCH_LEN];
    let mut memo = OpenMemo::default();
    let first = keyring
        .open_memo(NAME, "app1", value.as_bytes(), NOW, &mut scratch, &mut memo)
        .unwrap()
        .as_session_ref()
        .encoded_len()
        .unwrap();
    let expected = {
        let mut other = vec![0u8; SCRATCH_LEN];
        let view = keyring
            .open(NAME, "app1", value.as_bytes(), NOW, &mut other)
            .unwrap();
        (view.user_name.to_owned(), view.session_id, view.expires_at)
    };
    for _ in 0..3 {
        let view = keyring
            .open_memo(NAME, "app1", value.as_bytes(), NOW, &mut scratch, &mut memo)
            .unwrap();
        assert_eq!(
            (view.user_name.to_owned(), view.session_id, view.expires_at),
            expected
        );
        assert_eq!(view.as_session_ref().encoded_len().unwrap(), first);
    }
    // Expiry is checked again each time.
    assert_eq!(
        keyring
            .open_memo(
                NAME,
                "app1",
                value.as_bytes(),
                expected.2,
                &mut scratch,
                &mut memo
            )
            .err(),
        Some(CookieError::Expired)
    );
    // Another app, or another value, is opened in full (and fails as it should).
    assert_eq!(
        keyring
            .open_memo(NAME, "app2", value.as_bytes(), NOW, &mut scratch, &mut memo)
            .err(),
        Some(CookieError::Tampered)
    );
    let mut tampered = value.clone().into_bytes();
    tampered[20] = if tampered[20] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        keyring
            .open_memo(NAME, "app1", &tampered, NOW, &mut scratch, &mut memo)
            .err(),
        Some(CookieError::Tampered)
    );
    // After a failure nothing is remembered: the good value opens in full again.
    assert!(keyring
        .open_memo(NAME, "app1", value.as_bytes(), NOW, &mut scratch, &mut memo)
        .is_ok());
}

#[test]
fn a_remembered_cookie_is_not_trusted_by_a_keyring_without_its_key() {
    // Before retirement: keys 2 (seals) and 1. The cookie was sealed with 1.
    let old = keyring_of(&[(1, 7)]);
    let value = sealed(&old, "app1");
    let before = keyring_of(&[(2, 9), (1, 7)]);
    let mut scratch = vec![0u8; SCRATCH_LEN];
    let mut memo = OpenMemo::default();
    assert!(before
        .open_memo(NAME, "app1", value.as_bytes(), NOW, &mut scratch, &mut memo)
        .is_ok());
    // Key 1 retired: the connection's memo does not keep the session alive.
    let after = keyring_of(&[(2, 9)]);
    assert_eq!(
        after
            .open_memo(NAME, "app1", value.as_bytes(), NOW, &mut scratch, &mut memo)
            .err(),
        Some(CookieError::UnknownKey)
    );
}
