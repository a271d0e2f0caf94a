//! The TLS algorithms of every Gatehouse endpoint.

use std::sync::Arc;

use rustls::crypto::ring::{cipher_suite, default_provider};
use rustls::crypto::CryptoProvider;

/// ring's algorithms, with the cipher suites in Gatehouse's order of preference; servers
/// built on it set `ignore_client_order` so that this order decides.
///
/// AES-128-GCM comes first. The key exchanges behind every suite (X25519, P-256) give about
/// 128-bit security, so AES-256 adds cost and no strength: 14 AES rounds instead of 10 on
/// every record, and a SHA-384 key schedule and transcript hash where SHA-256 runs on the
/// CPU's SHA extensions. BoringSSL and Go prefer the same order. ChaCha20-Poly1305 stays
/// for clients without AES instructions.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_default_suite_and_puts_aes_128_first() {
        let ours = crypto_provider();
        let default = default_provider();
        assert_eq!(ours.cipher_suites.len(), default.cipher_suites.len());
        for suite in &default.cipher_suites {
            assert!(
                ours.cipher_suites.contains(suite),
                "{:?} is missing",
                suite.suite()
            );
        }
        assert_eq!(
            ours.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
    }
}
