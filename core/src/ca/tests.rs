use rcgen::PKCS_ECDSA_P384_SHA384;
use x509_parser::extensions::ParsedExtension;

use super::*;

const NOW: u64 = 1_750_000_000;

fn ca() -> ConnectorCa {
    ConnectorCa::generate("Gatehouse connector CA", NOW).expect("CA")
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der)
        .expect("DER certificate")
        .1
}

/// A CSR that asks for everything a connector must not get.
fn greedy_csr(key: &KeyPair) -> String {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "admin");
    dn.push(DnType::OrganizationName, "Evil Corp");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.subject_alt_names = vec![
        SanType::DnsName(Ia5String::try_from("gatehouse.example.com").expect("ascii")),
        SanType::URI(Ia5String::try_from("urn:gatehouse:connector:other").expect("ascii")),
    ];
    params
        .serialize_request(key)
        .expect("csr")
        .pem()
        .expect("pem")
}

/// Signs arbitrary params with the CA key, for certificates the CA itself would never issue.
fn forge(ca: &ConnectorCa, params: &CertificateParams) -> Vec<u8> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    params
        .signed_by(&key, &ca.issuer)
        .expect("signs")
        .der()
        .to_vec()
}

fn leaf_like(ca: &ConnectorCa) -> CertificateParams {
    ca.leaf_params("conn-1", "blue", NOW).expect("params")
}

#[test]
fn issues_exactly_the_identity_the_service_chose() {
    let ca = ca();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let issued = ca
        .sign_csr(&greedy_csr(&key), "conn-1", "blue", NOW)
        .expect("issues");
    assert_eq!(issued.identity.id, "conn-1");
    assert_eq!(issued.identity.group, "blue");
    assert_eq!(issued.identity.not_before, NOW - CLOCK_SKEW_SECS);
    assert_eq!(
        issued.identity.not_after,
        NOW - CLOCK_SKEW_SECS + DEFAULT_VALIDITY_SECS
    );
    assert_eq!(issued.identity.serial.len(), 32);
    assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let cert = parse(&issued.cert_der);
    // The requester's key is kept...
    assert_eq!(
        *cert.public_key().subject_public_key.data,
        *key.public_key_raw()
    );
    // ...and nothing else it asked for.
    let bc = cert.basic_constraints().expect("parses").expect("present");
    assert!(!bc.value.ca);
    let ku = cert.key_usage().expect("parses").expect("present");
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign());
    let eku = cert.extended_key_usage().expect("parses").expect("present");
    assert!(eku.value.client_auth);
    assert!(!eku.value.server_auth);
    let san = cert
        .subject_alternative_name()
        .expect("parses")
        .expect("present");
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => *u,
            _ => "<not a URI>",
        })
        .collect();
    assert_eq!(
        uris,
        ["urn:gatehouse:connector:conn-1", "urn:gatehouse:group:blue"]
    );
    let cn: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .map(|a| a.as_str().expect("str"))
        .collect();
    assert_eq!(cn, ["conn-1"]);
    let ou: Vec<&str> = cert
        .subject()
        .iter_organizational_unit()
        .map(|a| a.as_str().expect("str"))
        .collect();
    assert_eq!(ou, ["blue"]);
    assert_eq!(cert.subject().iter_organization().count(), 0);
    assert_eq!(
        cert.issuer().as_raw(),
        parse(ca.cert_der()).subject().as_raw()
    );
}

#[test]
fn connector_side_csr_is_accepted() {
    let ca = ca();
    let (key_pem, csr_pem) = generate_key_and_csr("edge-7").expect("csr");
    assert!(key_pem.contains("PRIVATE KEY"));
    let issued = ca
        .sign_csr(&csr_pem, "edge-7", "green", NOW)
        .expect("issues");
    let key = KeyPair::from_pem(&key_pem).expect("key");
    let cert = parse(&issued.cert_der);
    assert_eq!(
        *cert.public_key().subject_public_key.data,
        *key.public_key_raw()
    );
}

#[test]
fn ed25519_connector_keys_are_accepted_and_p384_refused() {
    let ca = ca();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let csr = params
        .serialize_request(&ed)
        .expect("csr")
        .pem()
        .expect("pem");
    assert!(ca.sign_csr(&csr, "ed-1", "g", NOW).is_ok());

    let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("key");
    let csr = params
        .serialize_request(&p384)
        .expect("csr")
        .pem()
        .expect("pem");
    assert!(matches!(
        ca.sign_csr(&csr, "p384", "g", NOW),
        Err(CaError::UnsupportedKey)
    ));
}

#[test]
fn csr_with_a_bad_self_signature_is_refused() {
    let ca = ca();
    let (_, csr_pem) = generate_key_and_csr("edge-7").expect("csr");
    let mut der = pem_decode(&csr_pem, &["CERTIFICATE REQUEST"]).expect("pem");
    // The signature is the tail of the DER: change its last byte.
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = pem_encode("CERTIFICATE REQUEST", &der);
    assert!(matches!(
        ca.sign_csr(&tampered, "edge-7", "g", NOW),
        Err(CaError::Csr(_))
    ));
}

#[test]
fn oversized_and_garbage_csrs_are_refused() {
    let ca = ca();
    let big = "A".repeat(MAX_CSR_LEN + 1);
    assert!(matches!(
        ca.sign_csr(&big, "c", "g", NOW),
        Err(CaError::CsrTooLarge { len, max: MAX_CSR_LEN }) if len == MAX_CSR_LEN + 1
    ));
    assert!(matches!(
        ca.sign_csr("not pem", "c", "g", NOW),
        Err(CaError::CsrMalformed)
    ));
    let not_der = pem_encode("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x00");
    assert!(matches!(
        ca.sign_csr(&not_der, "c", "g", NOW),
        Err(CaError::CsrMalformed)
    ));
}

#[test]
fn names_are_checked() {
    let ca = ca();
    let (_, csr_pem) = generate_key_and_csr("edge-7").expect("csr");
    let long = "a".repeat(MAX_NAME_LEN + 1);
    for bad in [
        "",
        "a b",
        "a\0b",
        "-lead",
        ".lead",
        "a/b",
        "é",
        "a:b",
        long.as_str(),
    ] {
        assert!(
            matches!(
                ca.sign_csr(&csr_pem, bad, "g", NOW),
                Err(CaError::InvalidName { .. })
            ),
            "{bad:?}"
        );
        assert!(matches!(
            ca.sign_csr(&csr_pem, "c", bad, NOW),
            Err(CaError::InvalidName { .. })
        ));
    }
    assert!(ca
        .sign_csr(&csr_pem, &"a".repeat(MAX_NAME_LEN), "g_1.x-y", NOW)
        .is_ok());
    assert!(matches!(
        generate_key_and_csr("a b"),
        Err(CaError::InvalidName { .. })
    ));
}

#[test]
fn validity_is_checked_at_now() {
    let ca = ca().with_validity_secs(3_600);
    let (_, csr_pem) = generate_key_and_csr("edge-7").expect("csr");
    let issued = ca.sign_csr(&csr_pem, "edge-7", "g", NOW).expect("issues");
    let start = NOW - CLOCK_SKEW_SECS;
    let end = start + 3_600;
    assert!(ca.verify_client_cert(&issued.cert_der, start).is_ok());
    assert!(ca.verify_client_cert(&issued.cert_der, end).is_ok());
    assert_eq!(
        ca.verify_client_cert(&issued.cert_der, start - 1),
        Err(ClientCertError::NotYetValid)
    );
    assert_eq!(
        ca.verify_client_cert(&issued.cert_der, end + 1),
        Err(ClientCertError::Expired)
    );
    let too_short = ca.with_validity_secs(CLOCK_SKEW_SECS);
    assert!(matches!(
        too_short.sign_csr(&csr_pem, "e", "g", NOW),
        Err(CaError::Validity)
    ));
}

#[test]
fn certificates_from_another_ca_are_refused() {
    let ours = ca();
    let theirs = ConnectorCa::generate("Other CA", NOW).expect("CA");
    let same_name = ca();
    let (_, csr_pem) = generate_key_and_csr("edge-7").expect("csr");
    let foreign = theirs
        .sign_csr(&csr_pem, "edge-7", "g", NOW)
        .expect("issues");
    assert_eq!(
        ours.verify_client_cert(&foreign.cert_der, NOW),
        Err(ClientCertError::UnknownIssuer)
    );
    // Same issuer name, different key: the signature gives it away.
    let lookalike = same_name
        .sign_csr(&csr_pem, "edge-7", "g", NOW)
        .expect("issues");
    assert_eq!(
        ours.verify_client_cert(&lookalike.cert_der, NOW),
        Err(ClientCertError::BadSignature)
    );
}

#[test]
fn the_ca_certificate_is_not_a_client_certificate() {
    let ca = ca();
    assert_eq!(
        ca.verify_client_cert(ca.cert_der(), NOW),
        Err(ClientCertError::IsCa)
    );
}

#[test]
fn wrong_usage_is_refused() {
    let ca = ca();
    let mut server = leaf_like(&ca);
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    assert_eq!(
        ca.verify_client_cert(&forge(&ca, &server), NOW),
        Err(ClientCertError::NotClientAuth)
    );

    let mut no_eku = leaf_like(&ca);
    no_eku.extended_key_usages = Vec::new();
    assert_eq!(
        ca.verify_client_cert(&forge(&ca, &no_eku), NOW),
        Err(ClientCertError::NotClientAuth)
    );

    let mut agreement = leaf_like(&ca);
    agreement.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    assert_eq!(
        ca.verify_client_cert(&forge(&ca, &agreement), NOW),
        Err(ClientCertError::NotClientAuth)
    );

    let mut sub_ca = leaf_like(&ca);
    sub_ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    assert_eq!(
        ca.verify_client_cert(&forge(&ca, &sub_ca), NOW),
        Err(ClientCertError::IsCa)
    );

    assert!(ca
        .verify_client_cert(&forge(&ca, &leaf_like(&ca)), NOW)
        .is_ok());
}

#[test]
fn unexpected_names_are_refused() {
    let ca = ca();
    let uri = |s: &str| SanType::URI(Ia5String::try_from(s).expect("ascii"));
    let cases: Vec<Vec<SanType>> = vec![
        // NUL inside the id: IA5String allows it, the name alphabet does not.
        vec![
            uri("urn:gatehouse:connector:conn-1\0evil"),
            uri("urn:gatehouse:group:blue"),
        ],
        vec![uri("urn:gatehouse:connector:conn-1")],
        vec![uri("urn:gatehouse:group:blue")],
        vec![
            uri("urn:gatehouse:connector:conn-1"),
            uri("urn:gatehouse:connector:conn-2"),
            uri("urn:gatehouse:group:blue"),
        ],
        vec![
            uri("urn:gatehouse:connector:conn-1"),
            uri("urn:gatehouse:group:blue"),
            SanType::DnsName(Ia5String::try_from("conn-1.example").expect("ascii")),
        ],
        vec![uri("urn:other:conn-1"), uri("urn:gatehouse:group:blue")],
        vec![
            uri("urn:gatehouse:connector:"),
            uri("urn:gatehouse:group:blue"),
        ],
        Vec::new(),
    ];
    for sans in cases {
        let mut params = leaf_like(&ca);
        params.subject_alt_names = sans.clone();
        assert_eq!(
            ca.verify_client_cert(&forge(&ca, &params), NOW),
            Err(ClientCertError::BadIdentity),
            "{sans:?}"
        );
    }
    // A CN that disagrees with the SAN.
    let mut params = leaf_like(&ca);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "conn-2");
    params.distinguished_name = dn;
    assert_eq!(
        ca.verify_client_cert(&forge(&ca, &params), NOW),
        Err(ClientCertError::BadIdentity)
    );
}

#[test]
fn malformed_der_is_refused() {
    let ca = ca();
    assert_eq!(
        ca.verify_client_cert(b"", NOW),
        Err(ClientCertError::Malformed)
    );
    assert_eq!(
        ca.verify_client_cert(b"\x30\x00", NOW),
        Err(ClientCertError::Malformed)
    );
    let (_, csr_pem) = generate_key_and_csr("edge-7").expect("csr");
    let issued = ca.sign_csr(&csr_pem, "edge-7", "g", NOW).expect("issues");
    let mut trailing = issued.cert_der.clone();
    trailing.push(0);
    assert_eq!(
        ca.verify_client_cert(&trailing, NOW),
        Err(ClientCertError::Malformed)
    );
    for cut in [1, 10, issued.cert_der.len() / 2, issued.cert_der.len() - 1] {
        assert!(ca.verify_client_cert(&issued.cert_der[..cut], NOW).is_err());
    }
    // Any single flipped byte: refused, never accepted, never a panic.
    for i in 0..issued.cert_der.len() {
        let mut bad = issued.cert_der.clone();
        bad[i] ^= 0x01;
        assert!(ca.verify_client_cert(&bad, NOW).is_err(), "byte {i}");
    }
}

#[test]
fn the_ca_reloads_from_pem() {
    let ca = ca();
    let reloaded = ConnectorCa::from_pem(&ca.cert_pem(), &ca.key_pem()).expect("reloads");
    assert_eq!(reloaded.cert_der(), ca.cert_der());
    let (_, csr_pem) = generate_key_and_csr("edge-7").expect("csr");
    let issued = reloaded
        .sign_csr(&csr_pem, "edge-7", "g", NOW)
        .expect("issues");
    assert!(ca.verify_client_cert(&issued.cert_der, NOW).is_ok());
    let before = ca.sign_csr(&csr_pem, "edge-7", "g", NOW).expect("issues");
    assert!(reloaded.verify_client_cert(&before.cert_der, NOW).is_ok());
}

#[test]
fn a_key_of_another_ca_does_not_load() {
    let a = ca();
    let b = ca();
    assert!(matches!(
        ConnectorCa::from_pem(&a.cert_pem(), &b.key_pem()),
        Err(CaError::KeyMismatch)
    ));
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    assert!(matches!(
        ConnectorCa::from_pem(&a.cert_pem(), &ed.serialize_pem()),
        Err(CaError::UnsupportedKey)
    ));
    // A leaf certificate is not a CA, even with its own key.
    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let leaf = leaf_like(&a)
        .signed_by(&leaf_key, &a.issuer)
        .expect("signs");
    assert!(matches!(
        ConnectorCa::from_pem(&leaf.pem(), &leaf_key.serialize_pem()),
        Err(CaError::CaCertificate(_))
    ));
}

#[test]
fn the_ca_certificate_is_a_constrained_ca() {
    let ca = ca();
    let cert = parse(ca.cert_der());
    let bc = cert.basic_constraints().expect("parses").expect("present");
    assert!(bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));
    assert!(cert
        .key_usage()
        .expect("parses")
        .expect("present")
        .value
        .key_cert_sign());
    assert!(!format!("{ca:?}").contains("PRIVATE"));
    assert!(cert
        .iter_extensions()
        .any(|e| matches!(e.parsed_extension(), ParsedExtension::BasicConstraints(_))));
}

#[test]
fn pem_helpers_round_trip() {
    let der: Vec<u8> = (0..=255u8).collect();
    let pem = pem_encode("CERTIFICATE", &der);
    assert!(pem.lines().all(|l| l.len() <= 64));
    assert_eq!(pem_decode(&pem, &["CERTIFICATE"]), Some(der.clone()));
    assert_eq!(pem_decode(&pem, &["CERTIFICATE REQUEST"]), None);
    let crlf = pem.replace('\n', "\r\n");
    assert_eq!(pem_decode(&crlf, &["CERTIFICATE"]), Some(der));
}

#[test]
fn a_csr_whose_signature_algorithm_does_not_fit_its_key_is_refused() {
    // A P-256 key in a CSR signed with ECDSA/SHA-384: rcgen would label the issued key P-384.
    let dir = std::env::temp_dir().join(format!("gatehouse-csr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let key = dir.join("k.pem");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        key.to_str().unwrap(),
    ]);
    let csr = run(&[
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-sha384",
        "-subj",
        "/CN=edge-7",
    ]);
    std::fs::remove_dir_all(&dir).ok();
    let csr = String::from_utf8(csr).expect("PEM");
    assert!(matches!(
        ca().sign_csr(&csr, "edge-7", "g", NOW),
        Err(CaError::UnsupportedKey)
    ));
}
