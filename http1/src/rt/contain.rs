//! Keeps a panic in one task from ending the thread's runtime.
//!
//! A monoio runtime runs every connection of its thread; a panic that unwinds out of one
//! task's poll unwinds out of the runtime too and takes all of them (and the thread) down.
//! [`contained`] catches it at the task's edge: that task ends, the others go on.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Poll;

/// Runs `task`; if a poll of it panics, the task ends there and `on_panic` is called with the
/// panic's message (the panic hook has printed it already). Adds no allocation: the task
/// stays inline.
///
/// Unwind safety: the task's own state is dropped with it. Thread-local state it was changing
/// may be left half-changed; what Gatehouse keeps there (pools, counters, tables behind
/// `RefCell`s whose guards unwind) stays usable, which is why containing beats losing every
/// connection of the thread.
pub async fn contained<F, P>(task: F, on_panic: P)
where
    F: Future<Output = ()>,
    P: FnOnce(&str),
{
    let mut task = std::pin::pin!(task);
    let mut on_panic = Some(on_panic);
    std::future::poll_fn(move |cx| {
        match catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                if let Some(on_panic) = on_panic.take() {
                    on_panic(panic_message(&*payload));
                }
                Poll::Ready(())
            }
        }
    })
    .await
}

/// The text a panic was raised with, when it was a string.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;

    /// A task that panics ends alone: a task beside it on the same runtime finishes its work,
    /// and the panic is reported once with its message.
    #[test]
    fn a_panicking_task_ends_alone_and_is_reported() {
        let mut rt = crate::rt::runtime().expect("runtime");
        let (neighbour_done, reports) = rt.block_on(async {
            let reports = Rc::new(Cell::new(0u32));
            let neighbour = Rc::new(Cell::new(0u32));
            let n = neighbour.clone();
            let beside = monoio::spawn(async move {
                for _ in 0..5 {
                    monoio::time::sleep(Duration::from_millis(5)).await;
                    n.set(n.get() + 1);
                }
            });
            let r = reports.clone();
            let failing = monoio::spawn(contained(
                async {
                    monoio::time::sleep(Duration::from_millis(7)).await;
                    let empty: &[u8] = &[];
                    // Indexing past the end: the kind of bug a connection task could hit.
                    let _ = empty[std::hint::black_box(3)];
                },
                move |message| {
                    assert!(message.contains("index out of bounds"), "{message}");
                    r.set(r.get() + 1);
                },
            ));
            failing.await;
            beside.await;
            (neighbour.get(), reports.get())
        });
        assert_eq!(neighbour_done, 5, "the other task ran to its end");
        assert_eq!(reports, 1);
    }
}
