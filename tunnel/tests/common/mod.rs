//! What the tunnel's test binaries share.

use gatehouse_tunnel::frame::Hello;

/// The HELLO each end sends: a connector names itself and its group, a service its workers.
pub(crate) fn hello(connector: bool) -> Hello {
    Hello {
        version: 0,
        worker: 0,
        workers: if connector { 0 } else { 1 },
        connector_id: if connector {
            "c-1".into()
        } else {
            String::new()
        },
        group: if connector { "g".into() } else { String::new() },
    }
}
