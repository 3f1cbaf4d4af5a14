//! The Merkle tree over a ledger's entries (spec §6.1): RFC 6962 with
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
        let count = lines.len() as u64;
        // Hashing thousands of entries is CPU work: off the async workers,
        // so that requests are not held up behind it.
        let added = tokio::task::spawn_blocking(move || {
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
            Ok::<_, Error>(added)
        })
        .await
        .map_err(|e| Error::Database(format!("tree: {e}")))??;
        // Another server may have grown it meanwhile: then read again.
        ledger.extend_tree(size, size + count, added).await?;
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

/// Answers the tree math with zeros, noting what it asks for: the
/// indexes a proof needs, before they are read from the store.
#[derive(Default)]
struct Asked(std::sync::Mutex<Vec<u64>>);

impl HashReader for Asked {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        if let Ok(mut asked) = self.0.lock() {
            asked.extend_from_slice(indexes);
        }
        Ok(vec![Hash([0; 32]); indexes.len()])
    }
}

impl Asked {
    fn take(self) -> Vec<u64> {
        self.0.into_inner().unwrap_or_default()
    }
}

/// Runs `prove` over the tree of `size` entries twice: once to learn the
/// hashes it reads, then over those hashes fetched from the store. A tree
/// the store does not cover yet lacks some of them: then it says so
/// (the stored size is read only then, keeping a proof to one query).
async fn prove<L: Ledger, T>(
    ledger: &L,
    size: u64,
    prove: impl Fn(&Pass<'_>) -> Result<T, tlog_tiles::Error>,
) -> Result<T, Error> {
    let asked = Asked::default();
    prove(&Pass::Asking(&asked)).map_err(math)?;
    let mut known = BTreeMap::new();
    if let Err(e) = fetch(ledger, asked.take(), &mut known).await {
        covered(ledger, size).await?;
        return Err(e);
    }
    prove(&Pass::Reading(Known(&known))).map_err(math)
}

/// The reader of each of [`prove`]'s two passes.
enum Pass<'a> {
    Asking(&'a Asked),
    Reading(Known<'a>),
}

impl HashReader for Pass<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        match self {
            Self::Asking(a) => a.read_hashes(indexes),
            Self::Reading(k) => k.read_hashes(indexes),
        }
    }
}

async fn covered<L: Ledger>(ledger: &L, size: u64) -> Result<(), Error> {
    let stored = ledger.tree_size().await?;
    if size > stored {
        return Err(Error::OutOfTree(format!(
            "the tree covers {stored} entries, not {size}"
        )));
    }
    Ok(())
}

/// The RFC 6962 inclusion proof of entry `seq` (leaf `seq - 1`) in the
/// tree of the first `size` entries.
pub async fn inclusion<L: Ledger>(ledger: &L, seq: u64, size: u64) -> Result<Vec<[u8; 32]>, Error> {
    if seq == 0 || seq > size {
        return Err(Error::OutOfTree(format!(
            "entry {seq} is not in a tree of {size} entries"
        )));
    }
    // Beyond the stored tree the proof's index arithmetic would overflow:
    // refused first.
    covered(ledger, size).await?;
    let proof = prove(ledger, size, |r| tlog_tiles::prove_record(size, seq - 1, r)).await?;
    Ok(proof.into_iter().map(|h| h.0).collect())
}

/// The RFC 6962 consistency proof from the tree of the first `old`
/// entries to that of the first `new` (empty when `old` is 0 or `new`).
pub async fn consistency<L: Ledger>(
    ledger: &L,
    old: u64,
    new: u64,
) -> Result<Vec<[u8; 32]>, Error> {
    if old > new {
        return Err(Error::OutOfTree(format!(
            "no consistency proof from {old} entries to fewer ({new})"
        )));
    }
    // Beyond the stored tree the proof's index arithmetic would overflow:
    // refused first.
    covered(ledger, new).await?;
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let proof = prove(ledger, new, |r| tlog_tiles::prove_tree(new, old, r)).await?;
    Ok(proof.into_iter().map(|h| h.0).collect())
}

/// A tile of c2sp.org/tlog-tiles (height 8): its level, index and width
/// (256 for a full tile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TilePath {
    /// The level, 0 for leaf hashes.
    pub level: u8,
    /// The index within the level.
    pub index: u64,
    /// How many hashes it holds.
    pub width: u32,
}

impl TilePath {
    /// Parses `<L>/<N>[.p/<W>]` (what follows `tile/`), in the exact
    /// form the spec gives: no leading zeros, three-digit groups of `N`
    /// with `x` before all but the last, `W` in 1..=255.
    pub fn parse(path: &str) -> Option<Self> {
        let canonical = |s: &str| s.parse::<u64>().ok().filter(|n| n.to_string() == s);
        let (level, rest) = path.split_once('/')?;
        let level = u8::try_from(canonical(level)?).ok().filter(|l| *l < 64)?;
        let (groups, width) = match rest.split_once(".p/") {
            Some((g, w)) => {
                let w = u32::try_from(canonical(w)?)
                    .ok()
                    .filter(|w| (1..256).contains(w))?;
                (g, w)
            }
            None => (rest, 256),
        };
        let parts: Vec<&str> = groups.split('/').collect();
        let mut index = 0u64;
        for (i, part) in parts.iter().enumerate() {
            let digits = if i + 1 < parts.len() {
                part.strip_prefix('x')?
            } else {
                part
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            index = index.checked_mul(1000)?.checked_add(digits.parse().ok()?)?;
        }
        let tile = Self {
            level,
            index,
            width,
        };
        (tile.path() == path).then_some(tile)
    }

    /// `<L>/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        let mut n = self.index;
        let mut groups = format!("{:03}", n % 1000);
        while n >= 1000 {
            n /= 1000;
            groups = format!("x{:03}/{groups}", n % 1000);
        }
        if self.width == 256 {
            format!("{}/{groups}", self.level)
        } else {
            format!("{}/{groups}.p/{}", self.level, self.width)
        }
    }

    /// How many entries a tree needs for this tile to exist in it.
    fn needs(&self) -> Option<u64> {
        let start = self
            .index
            .checked_mul(256)?
            .checked_add(u64::from(self.width))?;
        start.checked_mul(1u64.checked_shl(8 * u32::from(self.level))?)
    }
}

/// The bytes of tile `tile` if the tree of the first `size` entries (which
/// the stored tree must cover) holds it: its hashes, 32 bytes each.
pub async fn tile<L: Ledger>(
    ledger: &L,
    tile: TilePath,
    size: u64,
) -> Result<Option<Vec<u8>>, Error> {
    if tile.needs().is_none_or(|n| n > size) {
        return Ok(None);
    }
    let t = tlog_tiles::Tile::new(8, tile.level, tile.index, tile.width, false);
    prove(ledger, size, |r| t.read_data(r)).await.map(Some)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tile_paths_parse_only_in_their_exact_form() {
        for (path, level, index, width) in [
            ("0/000", 0, 0, 256),
            ("1/x001/x234/067", 1, 1_234_067, 256),
            ("0/001.p/17", 0, 1, 17),
        ] {
            let t = TilePath::parse(path).unwrap();
            assert_eq!((t.level, t.index, t.width), (level, index, width), "{path}");
            assert_eq!(t.path(), path);
        }
        for bad in [
            "00/000",
            "0/0",
            "0/x000/001",
            "0/001.p/0",
            "0/001.p/256",
            "64/000",
            "0/001/002",
        ] {
            assert!(TilePath::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(TilePath::parse("0/000.p/3").unwrap().needs(), Some(3));
        assert_eq!(TilePath::parse("1/000.p/1").unwrap().needs(), Some(256));
    }

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
