//! The connector CA: issues client certificates to connectors and checks the ones they present.
//!
//! Call order:
//! 1. Once: [`ConnectorCa::generate`], store [`ConnectorCa::key_pem`] (mode 0600) and
//!    [`ConnectorCa::cert_pem`]; later starts use [`ConnectorCa::from_pem`].
//! 2. Connector side: [`generate_key_and_csr`]; the connector keeps the key and sends the CSR.
//! 3. Enrollment: [`ConnectorCa::sign_csr`] with the connector id and group the *service*
//!    decided (from the enrollment token, never from the CSR).
//! 4. Every tunnel: [`ConnectorCa::verify_client_cert`] on the presented certificate.
//!
//! A CSR is a request, not an instruction. rcgen would copy whatever the requester asked for
//! (CA flag, key usages, names), so [`ConnectorCa::sign_csr`] keeps only the requester's public
//! key, after the CSR's self-signature has verified, and writes every other field itself: not a
//! CA, `digitalSignature` only, `clientAuth` only, CN and OU, exactly two URI SANs
//! (`urn:gatehouse:connector:<id>`, `urn:gatehouse:group:<group>`), and a validity that starts
//! five minutes in the past to absorb clock skew.
//!
//! Times are Unix seconds passed in by the caller; nothing here reads a clock.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::hex;

/// Default lifetime of a connector certificate: 180 days, in seconds.
pub const DEFAULT_VALIDITY_SECS: u64 = 180 * 24 * 60 * 60;

/// Lifetime of a generated CA certificate: 10 years, in seconds.
pub const CA_VALIDITY_SECS: u64 = 10 * 365 * 24 * 60 * 60;

/// How far in the past certificates start, to tolerate clocks that run behind: 5 minutes.
pub const CLOCK_SKEW_SECS: u64 = 5 * 60;

/// Largest CSR accepted, in bytes of PEM text.
pub const MAX_CSR_LEN: usize = 16 * 1024;

/// Longest connector id or group name.
pub const MAX_NAME_LEN: usize = 64;

/// URI SAN prefix that carries the connector id.
pub const CONNECTOR_URI_PREFIX: &str = "urn:gatehouse:connector:";

/// URI SAN prefix that carries the connector's group.
pub const GROUP_URI_PREFIX: &str = "urn:gatehouse:group:";

/// Why the CA could not be loaded or could not issue a certificate.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CA certificate is unusable: not a CA, or not a certificate.
    #[error("connector CA certificate rejected: {0}")]
    CaCertificate(&'static str),
    /// rcgen refused the CSR: bad self-signature, unsupported extension or name encoding.
    #[error("connector certificate request rejected: {0}")]
    Csr(#[source] rcgen::Error),
    /// The CSR is not PEM-wrapped DER of a certification request.
    #[error("connector certificate request is not a PEM certificate request")]
    CsrMalformed,
    /// The CSR is larger than [`MAX_CSR_LEN`].
    #[error("connector certificate request is {len} bytes, over the {max}-byte limit")]
    CsrTooLarge {
        /// Size of the CSR.
        len: usize,
        /// [`MAX_CSR_LEN`].
        max: usize,
    },
    /// A connector id, group or name does not fit `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    #[error("invalid {field}: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")]
    InvalidName {
        /// Which name.
        field: &'static str,
    },
    /// The CA key does not belong to the CA certificate.
    #[error("connector CA key does not match the CA certificate")]
    KeyMismatch,
    /// Key or certificate generation failed inside rcgen.
    #[error("connector CA: {0}")]
    Rcgen(#[source] rcgen::Error),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
    /// The certificate just issued does not pass [`ConnectorCa::verify_client_cert`]; a bug.
    #[error("issued connector certificate fails its own check: {0}")]
    SelfCheck(#[source] ClientCertError),
    /// The key is not one the CA accepts (CA: ECDSA P-256; connectors: P-256 or Ed25519).
    #[error(
        "unsupported key type: connector keys must be ECDSA P-256 or Ed25519, the CA key P-256"
    )]
    UnsupportedKey,
    /// The validity period does not fit a certificate (before 1970, after 9999, or shorter than
    /// the clock-skew allowance).
    #[error("certificate validity period out of range")]
    Validity,
}

/// Why a presented client certificate was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientCertError {
    /// The SANs are not exactly one connector URI and one group URI of the expected form, or the
    /// CN disagrees with them.
    #[error("connector certificate does not carry a valid connector identity")]
    BadIdentity,
    /// The signature is not ECDSA P-256 / SHA-256 by the CA key.
    #[error("connector certificate signature does not verify")]
    BadSignature,
    /// `now` is after `notAfter`.
    #[error("connector certificate has expired")]
    Expired,
    /// The certificate is a CA certificate.
    #[error("connector certificate is a CA certificate")]
    IsCa,
    /// Not DER of an X.509 certificate, or an extension does not parse.
    #[error("connector certificate is malformed")]
    Malformed,
    /// No `clientAuth` extended key usage, or a key usage without `digitalSignature`.
    #[error("connector certificate is not for client authentication")]
    NotClientAuth,
    /// `now` is before `notBefore`.
    #[error("connector certificate is not valid yet")]
    NotYetValid,
    /// The issuer name is not the CA's subject.
    #[error("connector certificate was not issued by this gatehouse")]
    UnknownIssuer,
}

/// The identity a verified connector certificate carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectorIdentity {
    /// The connector id.
    pub id: String,
    /// The connector group.
    pub group: String,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
    /// Serial number, lower-case hex of its DER content bytes.
    pub serial: String,
}

/// A certificate [`ConnectorCa::sign_csr`] issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// What [`ConnectorCa::verify_client_cert`] reads from it.
    pub identity: ConnectorIdentity,
}

/// The connector CA: an ECDSA P-256 key and its self-signed certificate.
pub struct ConnectorCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    /// DER of the CA's subject name, which every certificate it issued names as issuer.
    subject_der: Vec<u8>,
    validity_secs: u64,
}

impl ConnectorCa {
    /// A new CA with a fresh P-256 key and a self-signed certificate named `common_name`, valid
    /// from five minutes before `now` for [`CA_VALIDITY_SECS`].
    pub fn generate(common_name: &str, now: u64) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Rcgen)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        // Path length 0: the CA signs connector certificates, never other CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, now, CA_VALIDITY_SECS)?;
        let cert = params.self_signed(&key).map_err(CaError::Rcgen)?;
        let cert_der = cert.der().to_vec();
        Self::assemble(Issuer::new(params, key), cert_der)
    }

    /// The CA from its certificate and PKCS#8 key, both PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(CaError::Rcgen)?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::UnsupportedKey);
        }
        let cert_der = pem_decode(cert_pem, &["CERTIFICATE"])
            .ok_or(CaError::CaCertificate("not a PEM certificate"))?;
        let issuer =
            Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key).map_err(CaError::Rcgen)?;
        Self::assemble(issuer, cert_der)
    }

    /// The same CA issuing certificates valid for `secs` seconds (default
    /// [`DEFAULT_VALIDITY_SECS`]).
    pub fn with_validity_secs(mut self, secs: u64) -> Self {
        self.validity_secs = secs;
        self
    }

    /// Lifetime of the certificates this CA issues, in seconds.
    pub fn validity_secs(&self) -> u64 {
        self.validity_secs
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert_der)
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA private key, PKCS#8 PEM. Store it readable by the service only (mode 0600).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a client certificate for the key in `csr_pem`, naming `connector_id` and `group`.
    ///
    /// Only the CSR's public key is used, once its self-signature verifies. Connector keys
    /// must be ECDSA P-256 or Ed25519. The certificate is valid from five minutes before `now`
    /// for [`validity_secs`](Self::validity_secs).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        connector_id: &str,
        group: &str,
        now: u64,
    ) -> Result<IssuedCertificate, CaError> {
        if csr_pem.len() > MAX_CSR_LEN {
            return Err(CaError::CsrTooLarge {
                len: csr_pem.len(),
                max: MAX_CSR_LEN,
            });
        }
        check_name("connector id", connector_id)?;
        check_name("group", group)?;
        let der = pem_decode(csr_pem, &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"])
            .ok_or(CaError::CsrMalformed)?;
        let requested_key = check_csr_key(&der)?;
        // Parses the CSR and verifies its self-signature (proof of possession of the key).
        let mut csr = CertificateSigningRequestParams::from_der(&der.as_slice().into())
            .map_err(CaError::Csr)?;
        // Everything the requester asked for is discarded here; only `csr.public_key` stays.
        csr.params = self.leaf_params(connector_id, group, now)?;
        let cert = csr.signed_by(&self.issuer).map_err(CaError::Rcgen)?;
        let cert_der = cert.der().to_vec();
        // The certificate must carry exactly the key that signed the CSR.
        if certificate_spki(&cert_der).as_deref() != Some(requested_key.as_slice()) {
            return Err(CaError::UnsupportedKey);
        }
        let identity = self
            .verify_client_cert(&cert_der, now)
            .map_err(CaError::SelfCheck)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            cert_der,
            identity,
        })
    }

    /// Issues a TLS server certificate and a fresh ECDSA P-256 key for `dns_names` (the
    /// service's tunnel and front-end names in development and tests, where this CA is the
    /// trust anchor the connectors are given). Returns (certificate PEM, PKCS#8 key PEM).
    pub fn issue_server_certificate(
        &self,
        dns_names: &[&str],
        now: u64,
    ) -> Result<(String, String), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Rcgen)?;
        let names: Vec<String> = dns_names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(CaError::Rcgen)?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            dns_names.first().copied().unwrap_or("gatehouse"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, now, self.validity_secs)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Rcgen)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Checks a client certificate (DER) a connector presented, at `now`, and returns the
    /// identity it carries.
    ///
    /// Checks: DER with nothing after it; issuer name is this CA; ECDSA P-256 / SHA-256
    /// signature by the CA key; `notBefore <= now <= notAfter`; not a CA; `clientAuth`; a key
    /// usage, if present, with `digitalSignature`; exactly one connector URI and one group URI,
    /// both in the name alphabet (so no NUL or other surprises), and a CN, if present, equal to
    /// the id.
    pub fn verify_client_cert(
        &self,
        der: &[u8],
        now: u64,
    ) -> Result<ConnectorIdentity, ClientCertError> {
        let (rest, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|_| ClientCertError::Malformed)?;
        if !rest.is_empty() {
            return Err(ClientCertError::Malformed);
        }
        self.check_signature(&cert)?;
        check_outer_algorithm(der, &cert)?;
        let (not_before, not_after) = check_validity(&cert, now)?;
        check_usage(&cert)?;
        let (id, group) = identity(&cert)?;
        Ok(ConnectorIdentity {
            id,
            group,
            not_before,
            not_after,
            serial: hex::encode(cert.raw_serial()),
        })
    }

    fn assemble(issuer: Issuer<'static, KeyPair>, cert_der: Vec<u8>) -> Result<Self, CaError> {
        let subject_der = {
            let (rest, cert) = x509_parser::parse_x509_certificate(&cert_der)
                .map_err(|_| CaError::CaCertificate("not a DER certificate"))?;
            if !rest.is_empty() {
                return Err(CaError::CaCertificate(
                    "trailing bytes after the certificate",
                ));
            }
            if *cert.public_key().subject_public_key.data != *issuer.key().public_key_raw() {
                return Err(CaError::KeyMismatch);
            }
            if !cert.is_ca() {
                return Err(CaError::CaCertificate("not a CA certificate"));
            }
            cert.subject().as_raw().to_vec()
        };
        Ok(ConnectorCa {
            issuer,
            cert_der,
            subject_der,
            validity_secs: DEFAULT_VALIDITY_SECS,
        })
    }

    /// Every field of a connector certificate except its public key.
    fn leaf_params(
        &self,
        connector_id: &str,
        group: &str,
        now: u64,
    ) -> Result<CertificateParams, CaError> {
        if self.validity_secs <= CLOCK_SKEW_SECS {
            return Err(CaError::Validity);
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, connector_id);
        dn.push(DnType::OrganizationalUnitName, group);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            uri_san(CONNECTOR_URI_PREFIX, connector_id)?,
            uri_san(GROUP_URI_PREFIX, group)?,
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, now, self.validity_secs)?;
        Ok(params)
    }

    fn check_signature(&self, cert: &X509Certificate<'_>) -> Result<(), ClientCertError> {
        if cert.issuer().as_raw() != self.subject_der.as_slice() {
            return Err(ClientCertError::UnknownIssuer);
        }
        // RFC 5280 4.1.1.2: the outer algorithm must equal the one inside the signed part.
        if cert.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256
            || cert.tbs_certificate.signature.algorithm != OID_SIG_ECDSA_WITH_SHA256
        {
            return Err(ClientCertError::BadSignature);
        }
        // A signature BIT STRING has no unused bits; accepting some would make one signature
        // readable as several encodings of the certificate.
        if cert.signature_value.unused_bits != 0 {
            return Err(ClientCertError::BadSignature);
        }
        let tbs: &[u8] = cert.tbs_certificate.as_ref();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, self.issuer.key().public_key_raw())
            .verify(tbs, &cert.signature_value.data)
            .map_err(|_| ClientCertError::BadSignature)
    }
}

/// DER of `AlgorithmIdentifier { ecdsa-with-SHA256 }` (RFC 5758 3.2: parameters absent).
const ECDSA_SHA256_ALGORITHM_DER: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

/// The outer signatureAlgorithm is not covered by the signature, and the parser reads it
/// leniently (it accepts a wrong tag around the right OID). Require its exact encoding so that
/// no byte of an accepted certificate can differ from what we issued.
fn check_outer_algorithm(der: &[u8], cert: &X509Certificate<'_>) -> Result<(), ClientCertError> {
    let tbs: &[u8] = cert.tbs_certificate.as_ref();
    // `tbs` borrows `der`, so the difference of the two addresses is its offset in `der`.
    let tbs_end = (tbs.as_ptr() as usize - der.as_ptr() as usize) + tbs.len();
    match der.get(tbs_end..tbs_end + ECDSA_SHA256_ALGORITHM_DER.len()) {
        Some(outer) if outer == ECDSA_SHA256_ALGORITHM_DER => Ok(()),
        _ => Err(ClientCertError::BadSignature),
    }
}

impl std::fmt::Debug for ConnectorCa {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorCa")
            .field("cert_der_len", &self.cert_der.len())
            .field("validity_secs", &self.validity_secs)
            .finish()
    }
}

/// Connector side: a fresh ECDSA P-256 key and a CSR for it, both PEM: `(key_pem, csr_pem)`.
///
/// The CSR names `connector_name` as CN; the CA ignores it and writes the identity it decided.
pub fn generate_key_and_csr(connector_name: &str) -> Result<(String, String), CaError> {
    check_name("connector name", connector_name)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Rcgen)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, connector_name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).map_err(CaError::Rcgen)?;
    let csr_pem = csr.pem().map_err(CaError::Rcgen)?;
    Ok((key.serialize_pem(), csr_pem))
}

/// Whether `name` is 1 to [`MAX_NAME_LEN`] of `[A-Za-z0-9._-]`, starting alphanumeric: safe in
/// a URI, a DNS label-like context, a log line and a file name.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.len() <= MAX_NAME_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_name(field: &'static str, name: &str) -> Result<(), CaError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(CaError::InvalidName { field })
    }
}

fn uri_san(prefix: &str, name: &str) -> Result<SanType, CaError> {
    let uri = Ia5String::try_from(format!("{prefix}{name}")).map_err(CaError::Rcgen)?;
    Ok(SanType::URI(uri))
}

/// 128 random bits, top bit clear so the DER INTEGER stays positive and 16 bytes long
/// (RFC 5280 4.1.2.2 allows up to 20 octets).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Rng)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// `notBefore = now - CLOCK_SKEW_SECS`, `notAfter = notBefore + validity_secs`.
///
/// rcgen wants `time::OffsetDateTime`; x509-parser's `ASN1Time` builds one from Unix seconds,
/// which spares a direct dependency on `time`.
fn set_validity(
    params: &mut CertificateParams,
    now: u64,
    validity_secs: u64,
) -> Result<(), CaError> {
    let not_before = now.saturating_sub(CLOCK_SKEW_SECS);
    let not_after = not_before
        .checked_add(validity_secs)
        .ok_or(CaError::Validity)?;
    params.not_before = asn1_time(not_before)?.to_datetime();
    params.not_after = asn1_time(not_after)?.to_datetime();
    Ok(())
}

fn asn1_time(secs: u64) -> Result<ASN1Time, CaError> {
    let secs = i64::try_from(secs).map_err(|_| CaError::Validity)?;
    ASN1Time::from_timestamp(secs).map_err(|_| CaError::Validity)
}

/// Accepts ECDSA P-256 (uncompressed point) and Ed25519 keys only.
///
/// rcgen picks the key algorithm from the CSR's *signature* algorithm, so a P-384 key in a CSR
/// signed "ecdsa-with-SHA256" would come out as a P-256 certificate around a P-384 point; the
/// key's own algorithm identifier is checked here first.
/// Accepts only P-256 keys in CSRs signed with ECDSA/SHA-256, and Ed25519 keys in CSRs
/// signed with Ed25519, and returns the DER of the subject public key info. rcgen derives the
/// issued certificate's key algorithm from the CSR's signature algorithm, so a mismatch (a
/// P-256 key in a CSR "signed with SHA-384") would otherwise yield a mislabelled key.
fn check_csr_key(der: &[u8]) -> Result<Vec<u8>, CaError> {
    let (_, csr) = X509CertificationRequest::from_der(der).map_err(|_| CaError::CsrMalformed)?;
    let spki = &csr.certification_request_info.subject_pki;
    let key: &[u8] = &spki.subject_public_key.data;
    let alg = &spki.algorithm;
    let signed_with = &csr.signature_algorithm.algorithm;
    let p256 = alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && alg
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|curve| curve == OID_EC_P256)
        && key.len() == 65
        && key.first() == Some(&0x04)
        && *signed_with == OID_SIG_ECDSA_WITH_SHA256;
    let ed25519 =
        alg.algorithm == OID_SIG_ED25519 && key.len() == 32 && *signed_with == OID_SIG_ED25519;
    if p256 || ed25519 {
        Ok(spki.raw.to_vec())
    } else {
        Err(CaError::UnsupportedKey)
    }
}

/// The DER of a certificate's subject public key info.
fn certificate_spki(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

fn check_validity(cert: &X509Certificate<'_>, now: u64) -> Result<(u64, u64), ClientCertError> {
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    if now < not_before {
        return Err(ClientCertError::NotYetValid);
    }
    if now > not_after {
        return Err(ClientCertError::Expired);
    }
    Ok((
        u64::try_from(not_before).unwrap_or(0),
        u64::try_from(not_after).unwrap_or(0),
    ))
}

fn check_usage(cert: &X509Certificate<'_>) -> Result<(), ClientCertError> {
    match cert.basic_constraints() {
        Err(_) => return Err(ClientCertError::Malformed),
        Ok(Some(bc)) if bc.value.ca => return Err(ClientCertError::IsCa),
        Ok(_) => {}
    }
    match cert.extended_key_usage() {
        Err(_) => return Err(ClientCertError::Malformed),
        Ok(Some(eku)) if eku.value.client_auth => {}
        Ok(_) => return Err(ClientCertError::NotClientAuth),
    }
    match cert.key_usage() {
        Err(_) => Err(ClientCertError::Malformed),
        Ok(Some(ku)) if !ku.value.digital_signature() => Err(ClientCertError::NotClientAuth),
        Ok(_) => Ok(()),
    }
}

/// `(id, group)` from the SANs, cross-checked with the CN.
fn identity(cert: &X509Certificate<'_>) -> Result<(String, String), ClientCertError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|_| ClientCertError::Malformed)?
        .ok_or(ClientCertError::BadIdentity)?;
    let mut id = None;
    let mut group = None;
    for name in &san.value.general_names {
        let GeneralName::URI(uri) = name else {
            return Err(ClientCertError::BadIdentity);
        };
        let slot = if let Some(v) = uri.strip_prefix(CONNECTOR_URI_PREFIX) {
            id.replace(v)
        } else if let Some(v) = uri.strip_prefix(GROUP_URI_PREFIX) {
            group.replace(v)
        } else {
            return Err(ClientCertError::BadIdentity);
        };
        // A second URI of the same kind is ambiguous.
        if slot.is_some() {
            return Err(ClientCertError::BadIdentity);
        }
    }
    let (Some(id), Some(group)) = (id, group) else {
        return Err(ClientCertError::BadIdentity);
    };
    if !valid_name(id) || !valid_name(group) {
        return Err(ClientCertError::BadIdentity);
    }
    for cn in cert.subject().iter_common_name() {
        match cn.as_str() {
            Ok(s) if s == id => {}
            _ => return Err(ClientCertError::BadIdentity),
        }
    }
    Ok((id.to_owned(), group.to_owned()))
}

/// RFC 7468 text encoding: base64 in 64-character lines between BEGIN and END lines.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the first PEM block with one of `labels` (RFC 7468); `None` if there is no
/// such block or its base64 does not decode. Whitespace inside the block is ignored.
fn pem_decode(text: &str, labels: &[&str]) -> Option<Vec<u8>> {
    labels.iter().find_map(|label| {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let start = text.find(&begin)? + begin.len();
        let len = text.get(start..)?.find(&end)?;
        let body: String = text
            .get(start..start + len)?
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        STANDARD.decode(body).ok()
    })
}

#[cfg(test)]
mod tests;
