//! The monoio + rustls driver of a tunnel connection, and the TLS settings of both ends.
//!
//! A tunnel connection runs as three tasks on one worker thread, sharing the sans-IO
//! [`Connection`](crate::Connection) through a `RefCell` that is never held across an await:
//! a reader (socket → TLS → `handle_input` → events), a writer (`poll_transmit` → TLS →
//! socket) and a timer (`handle_timeout`: pings and dead-peer detection). The application
//! talks to it through a [`TunnelHandle`].

mod driver;
mod mux;
mod notify;
mod relay;
mod tls;

pub use driver::{spawn, TunnelHandle};
pub use mux::{ControlEvent, Mux, StreamEvent, StreamHandle};
pub use relay::{relay, RelayRead, RelayWrite};
pub use tls::{
    connector_tls_config, pem_certs, pem_key, pem_roots, service_tls_config, TlsConfigError,
};
