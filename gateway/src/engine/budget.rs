//! Budgets: what each delegation has committed in its current window.
//!
//! A window is fixed and aligned to the Unix epoch: the window of a token
//! with `window_seconds = W` that holds the instant `t` (the gateway's
//! clock when it decides) starts at `t - t mod W`. What counts against a
//! budget is every committed intent under the token or any token below it
//! (a child's spending is its ancestors' too), plus what is in flight: a
//! passed intent reserves its amount the moment it is decided, before its
//! commit, and the reservation becomes spending once its receipt is
//! durable with outcome `committed`, or is released (blocked, escalated,
//! failed, or not appended). A commit whose outcome is `unknown` stays
//! charged, held by the reservation its receipt opens, until its
//! reconciliation says what the target did: spending if it committed,
//! released if it failed. Amounts are recorded in the ledger in the
//! transaction of the receipt that committed them ([`Spend`]); this map is
//! a cache of that record plus the reservations in flight, rebuilt from
//! the ledger at start.
//!
//! Deciding and reserving happen under one lock, so two intents can never
//! both see the same remaining amount.

use std::collections::BTreeMap;

use tollgate_ledger::{BudgetRead, Spend};
use tollgate_policies::delegation::{Spent, Token};
use tollgate_protocol::{Object, Timestamp, Value};

type Window = (String, String, i64);

/// Committed and reserved amounts, by delegation, currency and window.
#[derive(Debug, Default)]
pub(crate) struct Budgets {
    committed: BTreeMap<Window, i64>,
    /// The ledger seq through which `committed` was last read from the
    /// ledger: a charge committed at or before it is in `committed`
    /// already, and must not be added again.
    loaded_through: u64,
    reserved: BTreeMap<Window, i64>,
    /// Charges of reservations a crash left unfinished, or that wait for
    /// the reconciliation of an `unknown` outcome, by key: they may have
    /// been committed upstream, so they count until finished.
    stuck: BTreeMap<String, Vec<Spend>>,
}

/// What one decision read: the amounts per budget it checked.
pub(crate) struct Reading {
    /// For the pipeline.
    pub spent: Spent,
    /// For the receipt's `inputs.spent` (spec §4.6).
    pub inputs: Vec<Value>,
    /// Each budget's current window: `(token, currency, start, length)`.
    windows: Vec<(String, String, i64, i64)>,
    /// Each budget as read, for the ledger's guard.
    pub reads: Vec<BudgetRead>,
}

fn window_start(now: i64, length: i64) -> i64 {
    now - now.rem_euclid(length)
}

/// What a commit with `outcome` spends of its `charges`: all of them if it
/// committed, nothing if it failed or did not run (the reservation is then
/// released).
pub(super) fn spent_by(outcome: &tollgate_protocol::Outcome, charges: &[Spend]) -> Vec<Spend> {
    if outcome.status == tollgate_protocol::Status::Committed {
        charges.to_vec()
    } else {
        Vec::new()
    }
}

/// RFC 3339 at second precision (window starts, deadlines).
pub(super) fn seconds(unix: i64) -> String {
    Timestamp::from_unix_seconds(unix).as_str().to_owned()
}

fn key(s: &Spend) -> Window {
    (s.delegation.clone(), s.currency.clone(), s.window_start)
}

impl Budgets {
    /// The cache of what the ledger recorded for windows still open.
    pub(crate) fn from_ledger(rows: Vec<Spend>) -> Self {
        let mut b = Self::default();
        for s in rows {
            *b.committed.entry(key(&s)).or_insert(0) += s.amount_minor;
        }
        b
    }

    fn total(&self, w: &Window) -> i64 {
        let stuck: i64 = self
            .stuck
            .values()
            .flatten()
            .filter(|s| key(s) == *w)
            .map(|s| s.amount_minor)
            .sum();
        self.committed.get(w).copied().unwrap_or(0)
            + self.reserved.get(w).copied().unwrap_or(0)
            + stuck
    }

    /// What each budget along `chain` has spent in its window holding
    /// `now`, counting `foreign` too: amounts other instances' commits in
    /// flight hold, when the ledger said they matter.
    pub(crate) fn read(&self, chain: &[&Token], now: i64, foreign: &[(String, Spend)]) -> Reading {
        let mut reading = Reading {
            spent: Spent::new(),
            inputs: Vec::new(),
            windows: Vec::new(),
            reads: Vec::new(),
        };
        for t in chain.iter().rev() {
            let Some(length) = t.window_seconds.filter(|w| *w > 0) else {
                continue;
            };
            let start = window_start(now, length);
            for currency in t.budget.keys() {
                let w = (t.id.clone(), currency.clone(), start);
                let amount = self.total(&w)
                    + foreign
                        .iter()
                        .filter(|(_, s)| key(s) == w)
                        .map(|(_, s)| s.amount_minor)
                        .sum::<i64>();
                reading
                    .spent
                    .entry(t.id.clone())
                    .or_default()
                    .insert(currency.clone(), amount);
                let mut o = Object::new();
                o.insert("delegation", t.id.as_str().into());
                o.insert("window_start", seconds(start).into());
                o.insert(
                    "amount_minor",
                    Value::integer(amount).unwrap_or(Value::Null),
                );
                o.insert("currency", currency.as_str().into());
                reading.inputs.push(Value::Object(o));
                reading
                    .windows
                    .push((t.id.clone(), currency.clone(), start, length));
                reading.reads.push(BudgetRead {
                    delegation: t.id.clone(),
                    currency: currency.clone(),
                    window_start: start,
                    spent: amount,
                    limit: t.budget.get(currency).copied().unwrap_or(0),
                });
            }
        }
        reading
    }

    /// The charges of a passed intent of `amount` in `currency`: one per
    /// budget in that currency along the chain.
    pub(crate) fn charges(reading: &Reading, amount: i64, currency: &str) -> Vec<Spend> {
        reading
            .windows
            .iter()
            .filter(|(_, c, _, _)| c == currency)
            .map(|(t, c, start, length)| Spend {
                delegation: t.clone(),
                currency: c.clone(),
                window_start: *start,
                window_seconds: *length,
                amount_minor: amount,
            })
            .collect()
    }

    /// Holds `charges` while their commit is in flight.
    pub(crate) fn reserve(&mut self, charges: &[Spend]) {
        for s in charges {
            *self.reserved.entry(key(s)).or_insert(0) += s.amount_minor;
        }
    }

    /// Lets reserved `charges` go: nothing was committed.
    pub(crate) fn release(&mut self, charges: &[Spend]) {
        for s in charges {
            if let Some(r) = self.reserved.get_mut(&key(s)) {
                *r -= s.amount_minor;
                if *r <= 0 {
                    self.reserved.remove(&key(s));
                }
            }
        }
    }

    /// Reserved `charges` are committed: their receipt is durable, at
    /// ledger `seq`.
    pub(crate) fn commit(&mut self, charges: &[Spend], seq: u64) {
        self.release(charges);
        self.add_committed(charges, seq);
    }

    /// Committed `charges`, at ledger `seq`, that were never reserved here
    /// (recovery, executions). A reload that read the ledger through `seq`
    /// or later counts them already.
    pub(crate) fn add_committed(&mut self, charges: &[Spend], seq: u64) {
        if seq <= self.loaded_through {
            return;
        }
        for s in charges {
            *self.committed.entry(key(s)).or_insert(0) += s.amount_minor;
        }
    }

    /// What the ledger records as committed, replacing the cache of it
    /// (other instances commit to the same budgets): `rows`, read from the
    /// ledger, and `through`, a ledger seq read after them. An entry
    /// appended between the two reads is then taken as counted though it
    /// is not: the cache errs low, never high, and the ledger's guard
    /// refuses a decision that read low ([`tollgate_ledger::Staleness`]),
    /// which reloads again. A reload older than the last one is ignored.
    pub(crate) fn reload(&mut self, rows: Vec<Spend>, through: u64) {
        if through < self.loaded_through {
            return;
        }
        self.committed = Self::from_ledger(rows).committed;
        self.loaded_through = through;
    }

    /// Reserved `charges` stay held, under the reservation `key` that waits
    /// for an `unknown` outcome's reconciliation.
    pub(crate) fn hold_unknown(&mut self, charges: &[Spend], key: &str) {
        self.release(charges);
        if !charges.is_empty() {
            self.stuck.insert(key.to_owned(), charges.to_vec());
        }
    }

    /// `charges` are held under reservation `key` (unfinished), in place
    /// of what it held before.
    pub(crate) fn hold(&mut self, key: &str, charges: Vec<Spend>) {
        if charges.is_empty() {
            self.stuck.remove(key);
        } else {
            self.stuck.insert(key.to_owned(), charges);
        }
    }

    /// The charges held under reservation `key` are finished: no longer
    /// held (what they committed is added by [`Budgets::add_committed`]).
    pub(crate) fn unhold(&mut self, key: &str) {
        self.stuck.remove(key);
    }

    /// Keys of the reservations a crash left unfinished.
    pub(crate) fn stuck_keys(&self) -> impl Iterator<Item = &String> {
        self.stuck.keys()
    }
}

/// Charges as JSON, for a reservation's record.
pub(crate) fn charges_value(charges: &[Spend]) -> Value {
    Value::Array(
        charges
            .iter()
            .map(|s| {
                let mut o = Object::new();
                o.insert("delegation", s.delegation.as_str().into());
                o.insert("currency", s.currency.as_str().into());
                o.insert(
                    "window_start",
                    Value::integer(s.window_start).unwrap_or(Value::Null),
                );
                o.insert(
                    "window_seconds",
                    Value::integer(s.window_seconds).unwrap_or(Value::Null),
                );
                o.insert(
                    "amount_minor",
                    Value::integer(s.amount_minor).unwrap_or(Value::Null),
                );
                Value::Object(o)
            })
            .collect(),
    )
}

/// Charges from a reservation's record; `None` if malformed.
pub(crate) fn charges_from(v: Option<&Value>) -> Option<Vec<Spend>> {
    let Some(Value::Array(items)) = v else {
        return v.is_none().then(Vec::new);
    };
    items
        .iter()
        .map(|i| {
            let o = i.as_object()?;
            Some(Spend {
                delegation: o.get("delegation")?.as_str()?.to_owned(),
                currency: o.get("currency")?.as_str()?.to_owned(),
                window_start: o.get("window_start")?.as_safe_integer()?,
                window_seconds: o.get("window_seconds")?.as_safe_integer()?,
                amount_minor: o.get("amount_minor")?.as_safe_integer()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Found under load: a reload that read the ledger after a pass's
    /// entry was appended, but before the pass moved its reservation to
    /// committed, counted that pass twice, and a later pass within the
    /// budget escalated. A charge is added only if the reload did not
    /// read it.
    #[test]
    fn regression_a_reload_between_append_and_commit_counts_the_charge_once() {
        let s = Spend {
            delegation: "d".into(),
            currency: "EUR".into(),
            window_start: 0,
            window_seconds: 60,
            amount_minor: 700,
        };
        let w = key(&s);
        let one = std::slice::from_ref(&s);
        let mut b = Budgets::from_ledger(Vec::new());
        b.reserve(one);
        // Appended at seq 5; the reload reads it (rows, then head 5).
        b.reload(vec![s.clone()], 5);
        assert_eq!(
            b.total(&w),
            1400,
            "reserved and read: counted twice until committed"
        );
        b.commit(one, 5);
        assert_eq!(b.total(&w), 700);
        // A later commit, after that reload, is added.
        b.reserve(one);
        b.commit(one, 6);
        assert_eq!(b.total(&w), 1400);
        // A reload older than the last is ignored; a newer one replaces.
        b.reload(Vec::new(), 4);
        assert_eq!(b.total(&w), 1400);
        b.reload(vec![s.clone()], 7);
        assert_eq!(b.total(&w), 700);
        b.add_committed(one, 7);
        assert_eq!(b.total(&w), 700);
        b.add_committed(one, 8);
        assert_eq!(b.total(&w), 1400);
    }

    #[test]
    fn windows_are_fixed_and_aligned_to_the_epoch() {
        assert_eq!(window_start(86_400 * 3 + 5, 86_400), 86_400 * 3);
        assert_eq!(window_start(86_400 * 3, 86_400), 86_400 * 3);
        assert_eq!(window_start(59, 60), 0);
        assert_eq!(window_start(-1, 60), -60);
    }

    #[test]
    fn reservations_count_until_committed_or_released() {
        let s = Spend {
            delegation: "d".into(),
            currency: "EUR".into(),
            window_start: 0,
            window_seconds: 60,
            amount_minor: 400,
        };
        let w = key(&s);
        let mut b = Budgets::from_ledger(vec![s.clone()]);
        assert_eq!(b.total(&w), 400);
        b.reserve(std::slice::from_ref(&s));
        assert_eq!(b.total(&w), 800);
        b.release(std::slice::from_ref(&s));
        assert_eq!(b.total(&w), 400);
        b.reserve(std::slice::from_ref(&s));
        b.commit(std::slice::from_ref(&s), 1);
        assert_eq!(b.total(&w), 800);
        b.hold("k", vec![s.clone()]);
        assert_eq!(b.total(&w), 1200);
        b.unhold("k");
        assert_eq!(b.total(&w), 800);
        // An unknown outcome: reserved, then held until reconciled.
        b.reserve(std::slice::from_ref(&s));
        b.hold_unknown(std::slice::from_ref(&s), "reconcile:r");
        assert_eq!(b.total(&w), 1200);
        b.unhold("reconcile:r");
        assert_eq!(b.total(&w), 800);
        assert_eq!(
            charges_from(Some(&charges_value(std::slice::from_ref(&s)))),
            Some(vec![s])
        );
    }
}
