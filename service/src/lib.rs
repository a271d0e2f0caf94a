//! The public edge of Gatehouse.
//!
//! Not built yet: see the request-path issue. The crate exists so the workspace has its final layout.
#![forbid(unsafe_code)]
