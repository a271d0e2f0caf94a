//! The connector that runs inside the private network and dials out to the service.
//!
//! Not built yet: see the request-path issue. The crate exists so the workspace has its final layout.
#![forbid(unsafe_code)]
