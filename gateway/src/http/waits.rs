//! Long-polls (`GET /v1/intents/{agent}/{intent_id}?wait=`) bounded per
//! client address and in total, so that waiting clients cannot take the
//! connections that intents and health checks need.
//!
//! A wait beyond its address's share is refused `429 too-many-waits`; a
//! wait beyond the gateway's total, `503 waits-full`; both with
//! `Retry-After`, both before anything is read. A refused client may ask
//! again without `wait` (the answer is immediate) or later.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Long-polls waiting now.
#[derive(Debug)]
pub struct Waits {
    per_address: usize,
    total: usize,
    table: Arc<Mutex<BTreeMap<Option<IpAddr>, usize>>>,
}

/// Why a wait was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The address already holds its share.
    Address(usize),
    /// The gateway already holds its total.
    Total(usize),
}

/// A wait in progress; dropping it ends it.
#[derive(Debug)]
pub struct Waiting {
    table: Arc<Mutex<BTreeMap<Option<IpAddr>, usize>>>,
    peer: Option<IpAddr>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut t = lock(&self.table);
        if let Some(n) = t.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.peer);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Waits {
    /// At most `per_address` waits from one address, `total` in all.
    pub fn new(per_address: usize, total: usize) -> Self {
        Self {
            per_address: per_address.max(1),
            total: total.max(1),
            table: Arc::default(),
        }
    }

    /// The bounds for a listener of `max_connections`: a quarter of the
    /// connections in total, [`crate::limits::MAX_WAITS_PER_ADDRESS`] per
    /// address.
    pub fn for_connections(max_connections: usize) -> Self {
        Self::new(
            crate::limits::MAX_WAITS_PER_ADDRESS,
            (max_connections / 4).max(1),
        )
    }

    /// Long-polls waiting now.
    pub fn waiting(&self) -> usize {
        lock(&self.table).values().sum()
    }

    /// Counts a wait from `peer` in, unless a bound is reached.
    pub fn enter(&self, peer: Option<IpAddr>) -> Result<Waiting, Refused> {
        let mut t = lock(&self.table);
        let all: usize = t.values().sum();
        if all >= self.total {
            return Err(Refused::Total(self.total));
        }
        let mine = t.entry(peer).or_insert(0);
        if *mine >= self.per_address {
            return Err(Refused::Address(self.per_address));
        }
        *mine += 1;
        Ok(Waiting {
            table: self.table.clone(),
            peer,
        })
    }
}

impl Default for Waits {
    fn default() -> Self {
        Self::for_connections(crate::limits::DEFAULT_MAX_CONNECTIONS)
    }
}

/// A long-poll of `wait` seconds by `peer` entered (`None` for no wait),
/// or its refusal as the problem a client gets.
pub(super) fn enter_if<L: tollgate_ledger::Ledger>(
    app: &super::App<L>,
    peer: Option<axum::Extension<super::Peer>>,
    wait: u64,
) -> Result<Option<Waiting>, super::error::ApiError> {
    if wait == 0 {
        return Ok(None);
    }
    let peer = peer.map(|axum::Extension(super::Peer(ip))| ip);
    app.waits
        .enter(peer)
        .map(Some)
        .map_err(|refused| match refused {
            Refused::Address(n) => super::error::ApiError::TooManyWaits(n),
            Refused::Total(n) => super::error::ApiError::WaitsFull(n),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn waits_are_bounded_per_address_and_in_total_and_end_when_dropped() {
        let w = Waits::new(2, 3);
        let a: Option<IpAddr> = Some([127, 0, 0, 1].into());
        let b: Option<IpAddr> = Some([127, 0, 0, 2].into());
        let a1 = w.enter(a).unwrap();
        let _a2 = w.enter(a).unwrap();
        assert_eq!(w.enter(a).unwrap_err(), Refused::Address(2));
        let _b1 = w.enter(b).unwrap();
        assert_eq!(w.enter(b).unwrap_err(), Refused::Total(3));
        drop(a1);
        let _a3 = w.enter(a).unwrap();
        assert_eq!(w.enter(None).unwrap_err(), Refused::Total(3));
    }
}
