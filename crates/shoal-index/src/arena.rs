//! The vector arena: every vector an index holds, by internal id, with the set of
//! deleted ids.
//!
//! Vectors live in chunks of `2^shift` slots (about 1 MiB each), allocated when an id
//! in their range first arrives, so a sparse id costs one chunk rather than a
//! reallocation of everything below it, and growing never moves existing vectors.
//! The arena is plain data: locking is the owner's business.

use std::io::Write;

use crate::{IndexError, InternalId};

const TARGET_CHUNK_BYTES: usize = 1 << 20;

struct Chunk {
    vectors: Box<[f32]>,
    present: Box<[u64]>,
    deleted: Box<[u64]>,
}

pub(crate) struct Arena {
    dim: usize,
    shift: u32,
    chunks: Vec<Option<Box<Chunk>>>,
    present: usize,
    deleted: usize,
}

#[inline]
fn bit(words: &[u64], i: usize) -> bool {
    words[i / 64] >> (i % 64) & 1 == 1
}

impl Arena {
    pub fn new(dim: usize) -> Self {
        let slots = (TARGET_CHUNK_BYTES / 4 / dim.max(1)).clamp(64, 1 << 16);
        Arena {
            dim,
            shift: usize::BITS - 1 - slots.leading_zeros(),
            chunks: Vec::new(),
            present: 0,
            deleted: 0,
        }
    }

    #[inline]
    fn chunk_len(&self) -> usize {
        1 << self.shift
    }

    #[inline]
    fn locate(&self, id: InternalId) -> (usize, usize) {
        let id = id as usize;
        (id >> self.shift, id & (self.chunk_len() - 1))
    }

    #[inline]
    fn chunk(&self, id: InternalId) -> Option<(&Chunk, usize)> {
        let (c, slot) = self.locate(id);
        Some((self.chunks.get(c)?.as_deref()?, slot))
    }

    /// Was `id` ever inserted (deleted or not)?
    #[inline]
    pub fn contains(&self, id: InternalId) -> bool {
        self.chunk(id).is_some_and(|(c, s)| bit(&c.present, s))
    }

    /// Is `id` inserted and not deleted?
    #[inline]
    pub fn is_live(&self, id: InternalId) -> bool {
        self.chunk(id)
            .is_some_and(|(c, s)| bit(&c.present, s) && !bit(&c.deleted, s))
    }

    /// The vector of a live id.
    #[inline]
    pub fn live_vector(&self, id: InternalId) -> Option<&[f32]> {
        let (c, s) = self.chunk(id)?;
        (bit(&c.present, s) && !bit(&c.deleted, s))
            .then(|| &c.vectors[s * self.dim..(s + 1) * self.dim])
    }

    /// Stores a vector under an id that is not [`Arena::contains`]ed yet.
    pub fn insert(&mut self, id: InternalId, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dim);
        debug_assert!(!self.contains(id));
        let (c, s) = self.locate(id);
        if self.chunks.len() <= c {
            self.chunks.resize_with(c + 1, || None);
        }
        let (len, dim) = (self.chunk_len(), self.dim);
        let chunk = self.chunks[c].get_or_insert_with(|| {
            Box::new(Chunk {
                vectors: vec![0.0; len * dim].into_boxed_slice(),
                present: vec![0; len.div_ceil(64)].into_boxed_slice(),
                deleted: vec![0; len.div_ceil(64)].into_boxed_slice(),
            })
        });
        chunk.vectors[s * dim..(s + 1) * dim].copy_from_slice(v);
        chunk.present[s / 64] |= 1 << (s % 64);
        self.present += 1;
    }

    /// Marks a live id deleted; false if it is unknown or already deleted.
    pub fn delete(&mut self, id: InternalId) -> bool {
        let (c, s) = self.locate(id);
        let Some(Some(chunk)) = self.chunks.get_mut(c) else {
            return false;
        };
        if !bit(&chunk.present, s) || bit(&chunk.deleted, s) {
            return false;
        }
        chunk.deleted[s / 64] |= 1 << (s % 64);
        self.deleted += 1;
        true
    }

    /// Number of live ids.
    pub fn live_count(&self) -> usize {
        self.present - self.deleted
    }

    /// Number of deleted ids.
    pub fn deleted_count(&self) -> usize {
        self.deleted
    }

    /// Calls `f` for every live id in increasing order.
    pub fn for_each_live(&self, mut f: impl FnMut(InternalId, &[f32])) {
        self.for_each_present(|id, deleted, v| {
            if !deleted {
                f(id, v)
            }
        })
    }

    /// Calls `f(id, deleted, vector)` for every inserted id in increasing order.
    pub fn for_each_present(&self, mut f: impl FnMut(InternalId, bool, &[f32])) {
        let (len, dim) = (self.chunk_len(), self.dim);
        for (c, chunk) in self.chunks.iter().enumerate() {
            let Some(chunk) = chunk else { continue };
            for (w, &word) in chunk.present.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let s = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let id = (c * len + s) as InternalId;
                    f(
                        id,
                        bit(&chunk.deleted, s),
                        &chunk.vectors[s * dim..(s + 1) * dim],
                    );
                }
            }
        }
    }

    const MAGIC: &'static [u8; 8] = b"SHOALARN";
    const VERSION: u32 = 1;

    /// Writes the arena: magic, version, dim, count, then per inserted id in
    /// increasing order `id: u32, deleted: u8, dim × f32`, all little-endian.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        out.write_all(Self::MAGIC)?;
        out.write_all(&Self::VERSION.to_le_bytes())?;
        out.write_all(&(self.dim as u32).to_le_bytes())?;
        out.write_all(&(self.present as u64).to_le_bytes())?;
        let mut err = Ok(());
        let mut rec = Vec::with_capacity(5 + 4 * self.dim);
        self.for_each_present(|id, deleted, v| {
            if err.is_err() {
                return;
            }
            rec.clear();
            rec.extend_from_slice(&id.to_le_bytes());
            rec.push(deleted as u8);
            for x in v {
                rec.extend_from_slice(&x.to_le_bytes());
            }
            err = out.write_all(&rec);
        });
        err
    }

    /// Reads what [`Arena::write_to`] wrote, checking every field.
    pub fn read_from(bytes: &[u8], dim: usize) -> Result<Self, IndexError> {
        let bad = |reason: String| IndexError::corrupt(format!("vector arena: {reason}"));
        if bytes.len() < 24 || &bytes[..8] != Self::MAGIC {
            return Err(bad("missing header".into()));
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        if u32_at(8) != Self::VERSION {
            return Err(bad(format!("unknown version {}", u32_at(8))));
        }
        if u32_at(12) as usize != dim {
            return Err(bad(format!("dimension {} instead of {dim}", u32_at(12))));
        }
        let count = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        let rec_len = 5 + 4 * dim;
        let body = &bytes[24..];
        if Some(body.len() as u64) != count.checked_mul(rec_len as u64) {
            return Err(bad(format!(
                "{} bytes for {count} records of {rec_len}",
                body.len()
            )));
        }
        let mut arena = Arena::new(dim);
        let mut v = vec![0.0f32; dim];
        let mut last: Option<InternalId> = None;
        for rec in body.chunks_exact(rec_len) {
            let id = InternalId::from_le_bytes(rec[..4].try_into().expect("4 bytes"));
            if last.is_some_and(|l| id <= l) {
                return Err(bad(format!("ids out of order at {id}")));
            }
            last = Some(id);
            let deleted = match rec[4] {
                0 => false,
                1 => true,
                f => return Err(bad(format!("bad flag {f} for id {id}"))),
            };
            for (x, b) in v.iter_mut().zip(rec[5..].chunks_exact(4)) {
                *x = f32::from_le_bytes(b.try_into().expect("4 bytes"));
            }
            arena.insert(id, &v);
            if deleted {
                arena.delete(id);
            }
        }
        Ok(arena)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_delete_and_iterate_sparse_ids() {
        let mut a = Arena::new(3);
        assert!(a.chunk_len().is_power_of_two());
        let far = 5 * a.chunk_len() as u32 + 7;
        for id in [0, 1, 63, 64, far] {
            a.insert(id, &[id as f32, 1.0, 2.0]);
        }
        assert!(a.contains(far) && a.is_live(far) && !a.contains(2) && !a.contains(u32::MAX));
        assert_eq!(a.live_vector(63), Some(&[63.0, 1.0, 2.0][..]));
        assert_eq!(a.live_count(), 5);
        assert!(a.delete(63));
        assert!(!a.delete(63));
        assert!(!a.delete(2));
        assert!(!a.delete(u32::MAX));
        assert!(a.contains(63) && !a.is_live(63) && a.live_vector(63).is_none());
        assert_eq!((a.live_count(), a.deleted_count()), (4, 1));
        let mut live = Vec::new();
        a.for_each_live(|id, v| live.push((id, v[0])));
        assert_eq!(
            live,
            vec![(0, 0.0), (1, 1.0), (64, 64.0), (far, far as f32)]
        );
        // Only the chunks that hold ids were allocated.
        assert_eq!(a.chunks.iter().filter(|c| c.is_some()).count(), 2);
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let mut a = Arena::new(2);
        for id in [3, 9, 700] {
            a.insert(id, &[id as f32, -0.5]);
        }
        a.delete(9);
        let mut bytes = Vec::new();
        a.write_to(&mut bytes).unwrap();
        let b = Arena::read_from(&bytes, 2).unwrap();
        let mut got = Vec::new();
        b.for_each_present(|id, d, v| got.push((id, d, v.to_vec())));
        assert_eq!(
            got,
            vec![
                (3, false, vec![3.0, -0.5]),
                (9, true, vec![9.0, -0.5]),
                (700, false, vec![700.0, -0.5])
            ]
        );
        assert_eq!((b.live_count(), b.deleted_count()), (2, 1));

        assert!(Arena::read_from(&bytes, 3).is_err());
        assert!(Arena::read_from(&bytes[..bytes.len() - 1], 2).is_err());
        let mut flag = bytes.clone();
        flag[24 + 13 + 4] = 7; // the flag byte of the second record
        assert!(Arena::read_from(&flag, 2).is_err());
        let mut order = bytes.clone();
        order[24 + 13..24 + 13 + 4].copy_from_slice(&1u32.to_le_bytes());
        assert!(Arena::read_from(&order, 2).is_err());
    }
}
