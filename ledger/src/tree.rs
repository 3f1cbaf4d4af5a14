//! The Merkle tree over a ledger's entries (PROTOCOL §6.1): RFC 6962 with
//! SHA-256, leaf `n` the canonical bytes of entry `n`, kept in the store
//! beside the entries in the stored-hash layout of c2sp.org/tlog-tiles
//! (the tree math is the `tlog_tiles` crate's, a port of Go's
//! `sumdb/tlog`).
//!
//! The tree is grown after the entries it covers are durable, never
//! before: [`grow`] reads durable entries past the tree's size and records
//! the hashes they add, with the new size, in one transaction that holds
//! only if the tree still had the size it grew from (several servers may
//! grow it at once; one wins, the others find it grown). So the stored
//! tree never covers an entry that is not durable, and a checkpoint made
//! from it never names one.

use std::collections::BTreeMap;

use tlog_tiles::{Hash, HashReader};

use crate::{Error, Ledger};

/// Entries read and hashed per transaction.
const STEP: u64 = 4096;

/// Stored hashes held in memory, as the tree math reads them.
struct Known<'a>(&'a BTreeMap<u64, Hash>);

impl HashReader for Known<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                self.0
                    .get(i)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

fn math(e: tlog_tiles::Error) -> Error {
    Error::Database(format!("tree: {e}"))
}

/// The stored indexes of the complete subtrees that make up the tree of
/// `size` leaves (its right edge): what growing it reads.
fn frontier(size: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for level in (0..64u8).rev() {
        if size & (1 << level) != 0 {
            out.push(tlog_tiles::stored_hash_index(level, start >> level));
            start += 1 << level;
        }
    }
    out
}

/// Reads `indexes` from the store into `known`.
async fn fetch<L: Ledger>(
    ledger: &L,
    indexes: Vec<u64>,
    known: &mut BTreeMap<u64, Hash>,
) -> Result<(), Error> {
    let hashes = ledger.tree_hashes(&indexes).await?;
    if hashes.len() != indexes.len() {
        return Err(Error::Corrupt {
            seq: 0,
            reason: "the stored tree lacks hashes it should hold".into(),
        });
    }
    known.extend(indexes.into_iter().zip(hashes.into_iter().map(Hash)));
    Ok(())
}

/// Grows the stored tree to cover every durable entry; its size then.
pub async fn grow<L: Ledger>(ledger: &L) -> Result<u64, Error> {
    loop {
        let size = ledger.tree_size().await?;
        let head = ledger.head().await?.seq;
        if size >= head {
            return Ok(size);
        }
        let mut known = BTreeMap::new();
        fetch(ledger, frontier(size), &mut known).await?;
        let lines = ledger
            .lines(
                size + 1,
                u32::try_from((head - size).min(STEP)).unwrap_or(u32::MAX),
            )
            .await?;
        let mut added = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let n = size + i as u64;
            let hashes = tlog_tiles::stored_hashes(n, line, &Known(&known)).map_err(math)?;
            let start = tlog_tiles::stored_hash_index(0, n);
            for (k, h) in hashes.into_iter().enumerate() {
                known.insert(start + k as u64, h);
                added.push((start + k as u64, h.0));
            }
        }
        // Another server may have grown it meanwhile: then read again.
        ledger
            .extend_tree(size, size + lines.len() as u64, added)
            .await?;
    }
}

/// The root hash of the tree of the first `size` entries, from the
/// stored tree (which must cover them).
pub async fn root<L: Ledger>(ledger: &L, size: u64) -> Result<[u8; 32], Error> {
    if size > ledger.tree_size().await? {
        return Err(Error::Database(format!(
            "tree: the stored tree does not cover {size} entries yet"
        )));
    }
    if size == 0 {
        return Ok(tlog_tiles::EMPTY_HASH.0);
    }
    let mut known = BTreeMap::new();
    fetch(
        ledger,
        tlog_tiles::sub_tree_index(0, size, Vec::new()),
        &mut known,
    )
    .await?;
    tlog_tiles::tree_hash(size, &Known(&known))
        .map(|h| h.0)
        .map_err(math)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_frontier_is_one_subtree_per_set_bit() {
        assert!(frontier(0).is_empty());
        assert_eq!(frontier(1), vec![tlog_tiles::stored_hash_index(0, 0)]);
        // 6 = 4 + 2: leaves 0..4 at level 2, 4..6 at level 1.
        assert_eq!(
            frontier(6),
            vec![
                tlog_tiles::stored_hash_index(2, 0),
                tlog_tiles::stored_hash_index(1, 2)
            ]
        );
    }
}
