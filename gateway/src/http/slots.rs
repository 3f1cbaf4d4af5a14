//! Connection slots, what each connection is doing, and whom to cut when
//! they are all taken.
//!
//! Every connection is in one phase:
//!
//! - *idle*: between requests (or before the first, a TLS handshake
//!   included);
//! - *receiving*: a request's head has been read, its body is still
//!   coming;
//! - *deciding*: the whole request is in, the handler runs;
//! - *answering*: the answer is being written, until its last byte is
//!   handed to the kernel.
//!
//! since a moment: when it became idle (opened, or its last answer was
//! flushed) or began receiving its request; and a *last progress*: the
//! last moment a byte was read from it or written to it.
//!
//! When every slot is taken, a newcomer takes the slot of a connection
//! that can be cut — of the client address holding the most slots first
//! (a flood from one address is cut before a lone agent), and among those
//! the one that has waited the longest: idle and
//! receiving connections by how long they have been so (cutting one loses
//! no decision: the request is not whole yet; a body trickled a byte at a
//! time is old however often its bytes come, a request just sent is
//! young), and answering ones whose writes have stalled for
//! [`SEND_STALL_MS`], by their last progress (a reader that does not
//! read), or that have been answering for [`LONG_ANSWER_MS`] or have
//! written [`BULK_BYTES`] (large exports or pages, pipelined or not:
//! read-only, and resumed with `from=`). A connection that is
//! deciding, or answering with progress, is never cut: an answer to a
//! decided intent is not lost to make room. Only when no connection can be
//! cut does a newcomer wait in the backlog. A connection closing after its
//! last answer goes first.
//!
//! A connection idle or receiving for less than [`GRACE_MS`] is not cut:
//! a client has that long to send its request, however fast newcomers
//! arrive.
//!
//! The cut is confirmed by the connection's own task: if it became
//! protected meanwhile (its request just completed), it is not dropped; it
//! finishes the answer in progress and then closes.
//!
//! Apart from the slots, an answer that makes no write progress for
//! [`crate::limits::SEND_TIMEOUT_MS`] is dropped (a reader that stopped
//! reading cannot hold a connection and its buffers forever).
//!
//! Invariant: at most `max` connections hold a slot, plus those being cut
//! and not yet torn down.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Under pressure, an answer whose writes made no progress for this long
/// may be cut for a newcomer, milliseconds.
pub const SEND_STALL_MS: u64 = 2_000;
/// Under pressure, an answer still being written after this long (a large
/// export read steadily) may be cut for a newcomer, milliseconds. An
/// intent's answer is written at once: it is never this long.
pub const LONG_ANSWER_MS: u64 = 2_000;
/// A connection idle or receiving for less than this is not cut, so that a
/// client can send its request before a flood of newcomers takes its slot,
/// milliseconds. It bounds how fast a flood can rotate through the slots.
pub const GRACE_MS: u64 = 250;
/// Under pressure, an answer in progress on a connection that has written
/// this much in its life (exports or pages, pipelined one after another)
/// may be cut for a newcomer, bytes. Intents' answers are a few KiB.
pub const BULK_BYTES: u64 = 1 << 20;

const IDLE: u8 = 0;
const RECEIVING: u8 = 1;
const DECIDING: u8 = 2;
const ANSWERING: u8 = 3;

/// The slots of one listener.
pub(super) struct Slots {
    max: usize,
    /// [`GRACE_MS`], or less in tests.
    grace: u64,
    epoch: Instant,
    table: Mutex<Table>,
    /// Told when a slot may have become available (a connection ended, or
    /// one became cuttable).
    freed: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    next: u64,
    held: BTreeMap<u64, Held>,
    /// Connections cut to make room, ever.
    cut: u64,
    /// Newcomers answered `503 too-many-connections`, ever.
    refused: u64,
}

struct Held {
    activity: Arc<Activity>,
    cut: CancellationToken,
    peer: std::net::IpAddr,
}

/// What a connection is doing, as the choice of whom to cut reads it.
#[derive(Debug)]
pub(super) struct Activity {
    phase: AtomicU8,
    /// Milliseconds since the listener's epoch of the last byte read or
    /// written.
    progress: AtomicU64,
    /// Milliseconds since the listener's epoch at which the connection
    /// became idle or began receiving its request.
    since: AtomicU64,
    /// Milliseconds since the listener's epoch at which its answer began.
    answer_since: AtomicU64,
    /// Bytes written over the connection's life.
    written: AtomicU64,
    /// Bytes written that the last flush has not confirmed.
    unflushed: AtomicBool,
    /// The answer's body has been produced to its end.
    body_done: AtomicBool,
    /// The connection is closing (lingering after its last answer).
    closing: AtomicBool,
    /// Requests whole and not yet answering: at most one on HTTP/1.1,
    /// several on HTTP/2, where the phase is the latest request's. A
    /// connection with one is never cut.
    deciding: AtomicU32,
    epoch: Instant,
    freed: Arc<Notify>,
}

impl Activity {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn progressed(&self) {
        self.progress.store(self.now(), Ordering::SeqCst);
    }

    fn wrote(&self, n: usize) {
        self.written
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::SeqCst);
        self.unflushed.store(true, Ordering::SeqCst);
        self.progressed();
    }

    /// A request's head was read; `whole` if it has no body to wait for.
    /// The [`Open`] returned follows that one request to its answer.
    pub(super) fn request(self: &Arc<Self>, whole: bool) -> Arc<Open> {
        let open = Arc::new(Open {
            activity: self.clone(),
            state: AtomicU8::new(RECEIVING),
        });
        if whole {
            open.received();
        }
        self.since.store(self.now(), Ordering::SeqCst);
        self.body_done.store(false, Ordering::SeqCst);
        self.phase
            .store(if whole { DECIDING } else { RECEIVING }, Ordering::SeqCst);
        open
    }

    /// The request's body is in.
    pub(super) fn received(&self) {
        let _ =
            self.phase
                .compare_exchange(RECEIVING, DECIDING, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The handler answered; the answer is being written.
    pub(super) fn answering(&self) {
        self.answer_since.store(self.now(), Ordering::SeqCst);
        self.phase.store(ANSWERING, Ordering::SeqCst);
    }

    /// The answer's body has been produced to its end. Its last bytes may
    /// still sit in the server's buffer: they count as unflushed until the
    /// next flush of the stream, which hands them to the kernel.
    fn answered(&self) {
        self.unflushed.store(true, Ordering::SeqCst);
        self.body_done.store(true, Ordering::SeqCst);
    }

    /// Marks the connection as closing: first to be cut.
    pub(super) fn closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.freed.notify_one();
    }

    /// Whether the answer in progress is fully handed to the kernel.
    fn answered_and_flushed(&self) -> bool {
        self.body_done.load(Ordering::SeqCst) && !self.unflushed.load(Ordering::SeqCst)
    }

    /// When the connection may be cut now, its rank (lower goes first):
    /// closing ones, then by how long they have waited; `None` when it is
    /// protected.
    fn rank(&self, now: u64) -> Option<(bool, u64)> {
        let closing = self.closing.load(Ordering::SeqCst);
        if !closing && self.deciding.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = self.since.load(Ordering::SeqCst);
        let progress = self.progress.load(Ordering::SeqCst);
        let waited = match self.phase.load(Ordering::SeqCst) {
            _ if closing => Some(since),
            IDLE | RECEIVING => Some(since),
            ANSWERING if self.answered_and_flushed() => Some(since),
            ANSWERING if now.saturating_sub(progress) >= SEND_STALL_MS => Some(progress),
            // A long answer (an export, pages pipelined) is read-only and
            // resumable: past its first seconds it may go for a newcomer.
            ANSWERING => {
                let began = self.answer_since.load(Ordering::SeqCst);
                (now.saturating_sub(began) >= LONG_ANSWER_MS
                    || self.written.load(Ordering::SeqCst) >= BULK_BYTES)
                    .then_some(began)
            }
            _ => None,
        };
        waited.map(|w| (!closing, w))
    }

    /// Whether an answer in progress has made no write progress for
    /// `timeout_ms`.
    pub(super) fn send_stalled(&self, timeout_ms: u64) -> bool {
        self.phase.load(Ordering::SeqCst) == ANSWERING
            && !self.answered_and_flushed()
            && self
                .now()
                .saturating_sub(self.progress.load(Ordering::SeqCst))
                >= timeout_ms
    }

    /// Whether the connection may be cut now.
    pub(super) fn cuttable(&self) -> bool {
        self.rank(self.now()).is_some()
    }
}

/// One request in progress on a connection ([`Activity::request`]):
/// receiving its body, deciding, then answering. While it decides its
/// connection is not cut, whatever the connection's other requests do.
#[derive(Debug)]
pub(super) struct Open {
    activity: Arc<Activity>,
    state: AtomicU8,
}

impl Open {
    /// The request's body is in: it decides.
    pub(super) fn received(&self) {
        if self
            .state
            .compare_exchange(RECEIVING, DECIDING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.activity.deciding.fetch_add(1, Ordering::SeqCst);
        }
        self.activity.received();
    }

    /// The handler answered.
    pub(super) fn answering(&self) {
        self.leave();
        self.activity.answering();
    }

    fn leave(&self) {
        if self.state.swap(ANSWERING, Ordering::SeqCst) == DECIDING {
            self.activity.deciding.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Open {
    /// An answered request, or one abandoned (a reset stream, a dropped
    /// connection), decides no more.
    fn drop(&mut self) {
        self.leave();
    }
}

/// A connection's slot; dropping it frees the slot.
pub(super) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    /// What the connection is doing.
    pub(super) activity: Arc<Activity>,
    /// Cancelled when the connection is chosen to be cut for a newcomer.
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
        Self::with_grace(max, GRACE_MS)
    }

    fn with_grace(max: usize, grace: u64) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            grace,
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

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Waits until a newcomer could be admitted: a slot is free, or a
    /// connection could be cut (for some newcomer: a young one only for a
    /// newcomer from a lighter address). (Connections become cuttable with time
    /// alone, so the wait also looks again every [`GRACE_MS`].)
    pub(super) async fn ready(&self) {
        loop {
            let freed = self.freed.notified();
            {
                let t = self.lock();
                // Any connection that may be cut for some newcomer: a young
                // one may be, for a newcomer from a lighter address.
                if t.held.len() < self.max || Self::victim(&t, self.now(), 0, None).is_some() {
                    return;
                }
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(GRACE_MS), freed).await;
        }
    }

    fn victim(t: &Table, now: u64, grace: u64, newcomer: Option<std::net::IpAddr>) -> Option<u64> {
        let mut share: BTreeMap<std::net::IpAddr, usize> = BTreeMap::new();
        for h in t.held.values() {
            *share.entry(h.peer).or_default() += 1;
        }
        let of = |peer: &std::net::IpAddr| share.get(peer).copied().unwrap_or(0);
        let mine = newcomer.map_or(usize::MAX, |p| of(&p));
        t.held
            .iter()
            .filter_map(|(id, h)| Some((*id, h.peer, h.activity.rank(now)?)))
            .filter(|(_, peer, (open, waited))| {
                !*open || now.saturating_sub(*waited) >= grace || of(peer) >= mine.saturating_add(2)
            })
            .min_by_key(|(id, peer, (open, waited))| {
                (*open, std::cmp::Reverse(of(peer)), *waited, *id)
            })
            .map(|(id, _, _)| id)
    }

    /// Slots held by connections from `peer`.
    pub(super) fn held_by(&self, peer: std::net::IpAddr) -> usize {
        self.lock().held.values().filter(|h| h.peer == peer).count()
    }

    /// A slot for a new connection: a free one, or one made by cutting a
    /// connection (module doc); waits while none can be cut.
    pub(super) async fn take(self: &Arc<Self>, peer: std::net::IpAddr) -> Slot {
        loop {
            let freed = self.freed.notified();
            if let Some(slot) = self.try_take(peer) {
                return slot;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(GRACE_MS), freed).await;
        }
    }

    /// [`Slots::take`] without waiting.
    pub(super) fn try_take(self: &Arc<Self>, peer: std::net::IpAddr) -> Option<Slot> {
        let now = self.now();
        let mut t = self.lock();
        if t.held.len() >= self.max {
            let victim = Self::victim(&t, now, self.grace, Some(peer))?;
            if let Some(h) = t.held.remove(&victim) {
                h.cut.cancel();
                t.cut += 1;
            }
        }
        let id = t.next;
        t.next += 1;
        let activity = Arc::new(Activity {
            phase: AtomicU8::new(IDLE),
            progress: AtomicU64::new(now),
            since: AtomicU64::new(now),
            answer_since: AtomicU64::new(now),
            written: AtomicU64::new(0),
            unflushed: AtomicBool::new(false),
            body_done: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            deciding: AtomicU32::new(0),
            epoch: self.epoch,
            freed: self.freed.clone(),
        });
        let cut = CancellationToken::new();
        t.held.insert(
            id,
            Held {
                activity: activity.clone(),
                cut: cut.clone(),
                peer,
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

    /// Counts a newcomer refused for want of room.
    pub(super) fn refused_one(&self) {
        self.lock().refused += 1;
    }

    /// Newcomers refused for want of room since the listener started.
    pub(super) fn refused(&self) -> u64 {
        self.lock().refused
    }
}

/// A connection's stream, noting every byte read or written as progress
/// (TLS handshakes included: the TLS layer sits above it).
pub(super) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.progressed();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.activity.wrote(n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.activity.wrote(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            let a = &self.activity;
            if a.unflushed.swap(false, Ordering::SeqCst) && a.body_done.load(Ordering::SeqCst) {
                // The answer is out: idle from now.
                a.since.store(a.now(), Ordering::SeqCst);
            }
            a.freed.notify_one();
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that marks its connection *deciding* once it is whole.
pub(super) struct ReceivedBody<B> {
    inner: B,
    request: Arc<Open>,
}

impl<B> ReceivedBody<B> {
    pub(super) fn new(inner: B, request: Arc<Open>) -> Self {
        Self { inner, request }
    }
}

impl<B: Body + Unpin> Body for ReceivedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.request.received();
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

/// An answer's body that tells its connection when it has been produced
/// to its end.
pub(super) struct AnswerBody<B> {
    inner: B,
    activity: Option<(Arc<Activity>, Arc<Open>)>,
}

impl<B> AnswerBody<B> {
    pub(super) fn new(inner: B, activity: Arc<Activity>, open: Arc<Open>) -> Self {
        Self {
            inner,
            activity: Some((activity, open)),
        }
    }

    fn done(&mut self) {
        if let Some((a, open)) = self.activity.take() {
            a.answered();
            drop(open);
        }
    }
}

impl<B> Drop for AnswerBody<B> {
    fn drop(&mut self) {
        self.done();
    }
}

impl<B: Body + Unpin> Body for AnswerBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.done();
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

    const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn aged(slots: &Arc<Slots>) -> Slot {
        let s = slots.try_take(LOCAL).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(3));
        s
    }

    #[test]
    fn a_full_table_cuts_the_one_waiting_longest_never_a_decision() {
        let slots = Slots::with_grace(3, 0);
        let a = aged(&slots);
        let b = aged(&slots);
        let c = aged(&slots);
        // a decides (protected); b idle the longest, whatever bytes it
        // trickles.
        a.activity.request(true);
        b.activity.progressed();
        let d = slots.try_take(LOCAL).unwrap();
        assert!(b.cut.is_cancelled(), "b waited longest");
        assert!(!a.cut.is_cancelled() && !c.cut.is_cancelled());
        // A closing connection goes before any other.
        d.activity.closing();
        let e = slots.try_take(LOCAL).unwrap();
        assert!(d.cut.is_cancelled() && !c.cut.is_cancelled());
        // A body still coming may be cut; once whole, it may not.
        c.activity.request(false);
        e.activity.request(false);
        e.activity.received();
        let f = slots.try_take(LOCAL).unwrap();
        assert!(c.cut.is_cancelled() && !e.cut.is_cancelled());
        // Everyone deciding or answering with progress: nobody is cut.
        f.activity.request(true);
        e.activity.answering();
        assert!(slots.try_take(LOCAL).is_none());
        assert_eq!(slots.cut(), 3);
        // An answer produced to its end is protected until flushed, then
        // idle again.
        e.activity.answered();
        assert!(!e.activity.cuttable());
        e.activity.unflushed.store(false, Ordering::SeqCst);
        assert!(e.activity.cuttable());
        drop(slots.try_take(LOCAL).unwrap());
        assert!(e.cut.is_cancelled());
    }

    #[test]
    fn the_address_holding_the_most_slots_is_cut_first() {
        let slots = Slots::with_grace(3, 0);
        let other: std::net::IpAddr = [10, 0, 0, 7].into();
        let lone = aged(&slots);
        let _lone = slots.try_take(other).unwrap();
        let flood = slots.try_take(other).unwrap();
        // `lone` waited longest, but `other` holds two slots.
        let _new = slots.try_take(LOCAL).unwrap();
        assert!(!lone.cut.is_cancelled());
        assert!(_lone.cut.is_cancelled() && !flood.cut.is_cancelled());
    }

    #[test]
    fn a_floods_young_connections_give_way_to_a_lone_client() {
        let slots = Slots::with_grace(3, 60_000);
        let flood: std::net::IpAddr = [10, 0, 0, 9].into();
        let f: Vec<Slot> = (0..3).map(|_| slots.try_take(flood).unwrap()).collect();
        // The flood may not rotate its own young connections.
        assert!(slots.try_take(flood).is_none());
        // A lone client takes one of them.
        let lone = slots.try_take(LOCAL).unwrap();
        assert_eq!(f.iter().filter(|s| s.cut.is_cancelled()).count(), 1);
        // and the flood (2 slots) cannot take the lone client's (1).
        assert!(slots.try_take(flood).is_none());
        assert!(!lone.cut.is_cancelled());
    }

    #[test]
    fn a_connection_younger_than_the_grace_is_not_cut() {
        let slots = Slots::with_grace(1, 60_000);
        let young = slots.try_take(LOCAL).unwrap();
        assert!(slots.try_take(LOCAL).is_none());
        // A newcomer from another address may not cut it either (one slot
        // against none is not two more).
        assert!(slots.try_take([10, 0, 0, 1].into()).is_none());
        // Closing, it goes at once.
        young.activity.closing();
        assert!(slots.try_take(LOCAL).is_some());
        assert!(young.cut.is_cancelled());
    }

    #[test]
    fn an_http2_connection_with_requests_in_progress_is_not_cut() {
        let slots = Slots::with_grace(1, 0);
        let a = slots.try_take(LOCAL).unwrap();
        // Two streams: the first decides, the second is answered and
        // flushed (the phase is the latest request's).
        let first = a.activity.request(true);
        let second = a.activity.request(false);
        second.received();
        second.answering();
        a.activity.answered();
        a.activity.unflushed.store(false, Ordering::SeqCst);
        drop(second);
        assert!(!a.activity.cuttable(), "the first is still deciding");
        assert!(slots.try_take(LOCAL).is_none());
        // Abandoned (a reset stream), it decides no more.
        drop(first);
        assert_eq!(a.activity.deciding.load(Ordering::SeqCst), 0);
        assert!(a.activity.cuttable());
        // A third stream still sending its body may be cut.
        let third = a.activity.request(false);
        assert!(a.activity.cuttable());
        third.received();
        assert!(!a.activity.cuttable());
    }

    #[test]
    fn an_answer_with_unflushed_bytes_is_protected_until_it_stalls() {
        let slots = Slots::with_grace(1, 0);
        let a = slots.try_take(LOCAL).unwrap();
        a.activity.request(true);
        a.activity.answering();
        a.activity.answered();
        a.activity.unflushed.store(true, Ordering::SeqCst);
        a.activity.progressed();
        assert!(!a.activity.cuttable(), "written, not yet flushed");
        assert!(!a.activity.send_stalled(SEND_STALL_MS));
        // Pretend the last progress was long ago.
        a.activity.progress.store(0, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(a.activity.send_stalled(1));
    }
}
