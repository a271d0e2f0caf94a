//! The monoio runtime every Gatehouse thread runs on.

use monoio::time::TimeDriver;
use monoio::{FusionDriver, FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

/// A thread's runtime: io_uring where the kernel offers it, epoll otherwise.
pub type Runtime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// Builds the calling thread's runtime, with timers.
///
/// The ring is set up for one thread that completes its own work: `COOP_TASKRUN` lets the
/// kernel post completions when the thread next enters it instead of interrupting it (with
/// an IPI when it runs elsewhere), and `SINGLE_ISSUER` drops the ring's submission locking.
/// monoio enters the kernel between every round of tasks, so nothing waits longer than a
/// round. In the load benchmark `COOP_TASKRUN` cut service plus connector CPU per 1 KiB
/// request by 8 % at 64 connections, and left it within noise at 256 (docs/benchmarks.md,
/// "How we got here"). Kernels older than 6.0 refuse the flags: the ring is then built
/// without them.
pub fn runtime() -> std::io::Result<Runtime> {
    let mut flags = io_uring::IoUring::builder();
    flags.setup_coop_taskrun().setup_single_issuer();
    let tuned = RuntimeBuilder::<FusionDriver>::new()
        .enable_timer()
        .uring_builder(flags)
        .build();
    match tuned {
        Ok(runtime) => Ok(runtime),
        Err(_) => RuntimeBuilder::<FusionDriver>::new().enable_timer().build(),
    }
}
