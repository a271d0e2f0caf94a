//! The multiplexed, flow-controlled tunnel between service and connector.
//!
//! Not built yet: see the tunnel issue. The crate exists so the workspace has its final layout.
#![forbid(unsafe_code)]
