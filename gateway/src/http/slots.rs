//! Connection slots, and whom to shed when they are all taken.
//!
//! A full listener does not make the newcomer wait behind connections that
//! are doing nothing: when every slot is taken, the connection that has
//! waited longest without a request in progress is cut to make room —
//! one closing after its last answer first, then the one idle (or still
//! sending its header) the longest. Only when every connection has a
//! request in progress does the newcomer wait for a slot. A flood of
//! sockets that connect and send nothing, or trickle a header, or sit idle
//! after an answer, therefore cannot keep health checks and intents out.
//!
//! Invariants: at most `max` connections hold a slot, plus those cut and
//! not yet torn down (each ends at its next poll); a connection with a
//! request in progress (from its head to its answer's last byte) is never
//! cut.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The slots of one listener.
pub(super) struct Slots {
    max: usize,
    epoch: Instant,
    table: Mutex<Table>,
    /// Told when a slot may have become available (a connection ended, or
    /// one finished a request).
    freed: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    next: u64,
    held: BTreeMap<u64, Held>,
    /// Connections cut to make room, ever.
    cut: u64,
}

struct Held {
    activity: Arc<Activity>,
    cut: CancellationToken,
}

/// What a connection is doing, as the shedding choice reads it.
#[derive(Debug)]
pub(super) struct Activity {
    /// Requests in progress (head read, answer not yet fully written).
    busy: AtomicUsize,
    /// Milliseconds since the listener's epoch at which the connection
    /// last became idle (opened, or finished an answer).
    idle_since: AtomicU64,
    /// The connection is closing (lingering after its last answer).
    closing: AtomicBool,
    epoch: Instant,
    freed: Arc<Notify>,
}

impl Activity {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks a request in progress until the returned guard drops.
    pub(super) fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Marks the connection as closing: first to be cut.
    pub(super) fn closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }
}

/// A request in progress on a connection.
#[derive(Debug)]
pub(super) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::SeqCst);
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
        self.0.freed.notify_one();
    }
}

/// A connection's slot; dropping it frees the slot.
pub(super) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    /// What the connection is doing.
    pub(super) activity: Arc<Activity>,
    /// Cancelled when the connection is cut to make room.
    pub(super) cut: CancellationToken,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().held.remove(&self.id);
        self.slots.freed.notify_one();
    }
}

impl Slots {
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
            freed: Arc::new(Notify::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the table consistent
        // (every change is one map operation).
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a new connection: a free one, or one made by cutting
    /// the connection idle the longest (module doc); waits only while
    /// every connection has a request in progress.
    pub(super) async fn take(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            if let Some(slot) = self.try_take() {
                return slot;
            }
            freed.await;
        }
    }

    /// Waits until [`Slots::try_take`] would succeed: a slot is free, or a
    /// connection without a request in progress could be cut.
    pub(super) async fn ready(&self) {
        loop {
            let freed = self.freed.notified();
            {
                let t = self.lock();
                if t.held.len() < self.max || Self::victim(&t).is_some() {
                    return;
                }
            }
            freed.await;
        }
    }

    /// The connection to cut for room: no request in progress; closing
    /// ones first, then the one idle the longest.
    fn victim(t: &Table) -> Option<u64> {
        t.held
            .iter()
            .filter(|(_, h)| h.activity.busy.load(Ordering::SeqCst) == 0)
            .min_by_key(|(id, h)| {
                (
                    !h.activity.closing.load(Ordering::SeqCst),
                    h.activity.idle_since.load(Ordering::SeqCst),
                    **id,
                )
            })
            .map(|(id, _)| *id)
    }

    /// [`Slots::take`] without waiting.
    pub(super) fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let mut t = self.lock();
        if t.held.len() >= self.max {
            let victim = Self::victim(&t)?;
            if let Some(h) = t.held.remove(&victim) {
                h.cut.cancel();
                t.cut += 1;
            }
        }
        let id = t.next;
        t.next += 1;
        let activity = Arc::new(Activity {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            epoch: self.epoch,
            freed: self.freed.clone(),
        });
        activity.idle_since.store(activity.now(), Ordering::SeqCst);
        let cut = CancellationToken::new();
        t.held.insert(
            id,
            Held {
                activity: activity.clone(),
                cut: cut.clone(),
            },
        );
        Some(Slot {
            slots: self.clone(),
            id,
            activity,
            cut,
        })
    }

    /// Connections holding a slot now.
    pub(super) fn held(&self) -> usize {
        self.lock().held.len()
    }

    /// Connections cut to make room since the listener started.
    pub(super) fn cut(&self) -> u64 {
        self.lock().cut
    }
}

/// A response body that keeps its connection busy until its last byte is
/// written (a streamed export is work in progress, not idleness).
pub(super) struct BusyBody<B> {
    inner: B,
    busy: Option<Busy>,
}

impl<B> BusyBody<B> {
    pub(super) fn new(inner: B, busy: Busy) -> Self {
        Self {
            inner,
            busy: Some(busy),
        }
    }
}

impl<B: Body + Unpin> Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_full_table_cuts_the_closing_then_the_longest_idle_never_the_busy() {
        let slots = Slots::new(3);
        let a = slots.try_take().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = slots.try_take().unwrap();
        let c = slots.try_take().unwrap();
        let _busy_a = a.activity.busy();
        // Full: a is busy, b idle longest → b is cut.
        let d = slots.try_take().unwrap();
        assert!(b.cut.is_cancelled() && !a.cut.is_cancelled() && !c.cut.is_cancelled());
        assert_eq!(slots.held(), 3);
        // A closing connection goes before any idle one.
        d.activity.closing();
        let _e = slots.try_take().unwrap();
        assert!(d.cut.is_cancelled() && !c.cut.is_cancelled());
        // Everyone busy: nobody is cut, the newcomer waits.
        let _busy_c = c.activity.busy();
        let _busy_e = _e.activity.busy();
        assert!(slots.try_take().is_none());
        assert_eq!(slots.cut(), 2);
        // A slot freed by a connection ending is taken without a cut.
        drop(c);
        assert!(slots.try_take().is_some());
        assert_eq!(slots.cut(), 2);
    }
}
