//! Gatehouse core primitives: sealed session cookies, ID-token verification and the connector CA.
//!
//! Not built yet: see the core issue. The crate exists so the workspace has its final layout.
#![forbid(unsafe_code)]
