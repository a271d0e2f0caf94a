//! The thin monoio driver: a per-thread buffer pool, a connection that reads heads and bodies
//! into pooled buffers, and a minimal HTTP/1.1 client.
//!
//! Everything here is glue: read, feed the sans-IO core, act on what it returned. Protocol
//! decisions live in the core. Buffers follow monoio's rent model: IO takes a buffer and
//! returns it, so a connection owns exactly one read buffer, and body data leaves it as
//! `Bytes` split off that buffer, never copied.

mod client;
mod conn;
mod contain;
mod crypto;
mod idle;
mod liveness;
mod pool;
mod recycle;
mod runtime;
mod tls;
mod tls13;
#[cfg(any(test, feature = "fuzzing"))]
mod tls_pair;
#[cfg(feature = "fuzzing")]
pub use tls_pair::fuzz_records;
mod transport;

pub use client::{connect, fetch, ClientRequest, ClientResponse};
pub use conn::{Conn, ConnError};
pub use contain::contained;
pub use crypto::crypto_provider;
pub use idle::IdleStack;
pub use liveness::{first_byte, idle_and_open};
pub use pool::{BufferPool, PoolConfig};
pub use recycle::{with_tunnel_spares, Recycler};
pub use runtime::{runtime, Runtime};
pub use tls::{
    trim_idle_buffers, Readiness, TlsError, TlsReader, TlsStream, TlsWriter, MAX_PARTS,
    READ_PLAINTEXT_MAX,
};
pub use transport::Transport;
