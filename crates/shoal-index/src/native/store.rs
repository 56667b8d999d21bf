//! The node store of the native backend: every node's vector, link lists, level,
//! lock and flags, by internal id, in chunks that never move.
//!
//! What it owns:
//! - **Vectors**, the only copy the index holds, in one 64-byte aligned allocation per
//!   chunk of `2^shift` slots (enough for both this and the layer-0 lists to fill a
//!   2 MiB huge page: 16,384 slots, 8 MiB of vectors at 128-d; but no more than 64 MiB
//!   of vectors, at least 64 slots: 256 slots at 65,536-d). A slot is `stride` floats,
//!   `dim` rounded up to 16 (one cache line), so every vector starts on a cache line.
//! - **Layer-0 link lists** (`1 + 2M` `u32`s per slot: a count, then the links) in one
//!   array per chunk, and a pointer per slot to the node's **upper-layer lists**
//!   (`level × (1 + M)` `u32`s, allocated only for the ~1/M nodes above layer 0).
//! - A **level**, a one-byte **lock** (held only while a node's own lists are
//!   rewritten) and three flag bits per slot: *present* (the vector is written and
//!   may be read), *deleted*, *in graph* (its graph insertion finished).
//!
//! Every chunk after the first keeps its vectors and layer-0 lists on transparent huge
//! pages ([`super::pages`]): a search's random reads then rarely miss the TLB, and a
//! small shard does not pay for a whole huge page.
//!
//! Memory grows with the points stored, not with the chunks: a chunk's big arrays
//! are zeroed address space whose pages are committed as slots are written
//! ([`super::pages`]), and the cap on a chunk's vector bytes bounds the address space
//! a shard of few, very wide points reserves.
//!
//! Chunks hang off a segmented directory (segment `s` holds `2^s` chunk pointers), so
//! the store grows without moving anything, a sparse id costs one chunk, and readers
//! find a node with two atomic loads and no lock.
//!
//! Concurrency contract (what makes the lock-free reads sound):
//! - A slot's vector, level and upper-list pointer are written once, by the holder of
//!   the writer lock ([`Store::put`]), before its *present* bit is set with `Release`;
//!   they never change afterwards (ids are never reused).
//! - Links are `AtomicU32`s written with `Release` and read with `Acquire`; a link only
//!   ever names a node that was present before the link was written, so following a
//!   link always reaches a fully written vector. A reader racing with a rewrite of a
//!   list may see a mix of old and new links: every one of them is a valid node.
//!
//! It must never do IO, never hand out a vector of a slot that is not present (except
//! through links, which by the contract above only name present nodes), and never
//! panic on an id: unknown ids are `None`, empty lists or `false`.

use std::collections::HashSet;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize};

use parking_lot::{Mutex, MutexGuard};

use super::pages::Region;
use crate::{IndexError, InternalId};

/// Smallest size of each of a chunk's two big arrays (vectors, layer-0 lists): one
/// huge page, so that both can be backed by huge pages.
const MIN_ARRAY_BYTES: usize = 2 << 20;
/// Most bytes of vectors in one chunk (unless 64 slots need more): wide vectors get
/// fewer slots per chunk, so a shard's few first points do not reserve gigabytes.
const MAX_VECTOR_BYTES: usize = 64 << 20;
/// Floats per cache line: slots are padded to a multiple of this.
const LINE_FLOATS: usize = 16;
/// Directory segments: chunk index `c` lives in segment `log2(c + 1)`; with at least
/// 64 slots per chunk, 27 segments cover every `u32` id.
const SEGMENTS: usize = 33;

/// One chunk of `2^shift` consecutive ids.
struct Chunk {
    /// `slots × stride` floats, 64-byte aligned, zeroed at allocation.
    vectors: Region,
    /// `slots × (1 + m0)` `AtomicU32`s: per slot a count, then up to `m0` links.
    links0: Region,
    links0_len: usize,
    /// Per slot: null, or `level × (1 + m)` `u32`s (a count and `m` links per level
    /// above 0), allocated by `Box<[AtomicU32]>` and freed in `Drop`.
    upper: Box<[AtomicPtr<AtomicU32>]>,
    upper_len_per_level: usize,
    levels: Box<[AtomicU8]>,
    locks: Box<[Mutex<()>]>,
    present: Box<[AtomicU64]>,
    deleted: Box<[AtomicU64]>,
    in_graph: Box<[AtomicU64]>,
}

// SAFETY: the raw vector memory is written only by the holder of the store's writer
// lock, to slots no reader looks at before their `present` bit is published (see the
// module docs); the layer-0 lists are atomics; everything else in a chunk is atomic or
// a lock.
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

fn atomics<T>(n: usize, f: impl Fn() -> T) -> Box<[T]> {
    (0..n).map(|_| f()).collect()
}

/// Types whose all-zero bytes are a valid value (the zero / null atomics).
trait Zeroable {}
impl Zeroable for AtomicU8 {}
impl Zeroable for AtomicU32 {}
impl Zeroable for AtomicU64 {}
impl<T> Zeroable for AtomicPtr<T> {}

/// `n` zeroed values, from zeroed memory: pages never written stay unallocated, so a
/// mostly empty chunk costs little.
fn zeroed<T: Zeroable>(n: usize) -> Box<[T]> {
    // SAFETY: all-zero bytes are a valid `T` (see `Zeroable`).
    unsafe { Box::<[T]>::new_zeroed_slice(n).assume_init() }
}

impl Chunk {
    fn new(slots: usize, stride: usize, m: usize, m0: usize, huge: bool) -> Box<Chunk> {
        let words = slots.div_ceil(64);
        let links0_len = slots * (1 + m0);
        Box::new(Chunk {
            vectors: Region::zeroed(slots * stride * 4, huge),
            links0: Region::zeroed(links0_len * 4, huge),
            links0_len,
            upper: zeroed(slots),
            upper_len_per_level: 1 + m,
            levels: zeroed(slots),
            locks: atomics(slots, || Mutex::new(())),
            present: zeroed(words),
            deleted: zeroed(words),
            in_graph: zeroed(words),
        })
    }

    /// The start of the vector memory.
    #[inline]
    fn vectors(&self) -> *mut f32 {
        self.vectors.as_ptr().cast()
    }

    /// Every slot's layer-0 list.
    #[inline]
    fn links0(&self) -> &[AtomicU32] {
        // SAFETY: the region holds `links0_len` zeroed (so valid) `AtomicU32`s, is
        // 64-byte aligned and lives as long as the chunk.
        unsafe { std::slice::from_raw_parts(self.links0.as_ptr().cast(), self.links0_len) }
    }

    #[inline]
    fn bit(words: &[AtomicU64], slot: usize) -> bool {
        words[slot / 64].load(Acquire) >> (slot % 64) & 1 == 1
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        for (slot, p) in self.upper.iter().enumerate() {
            let p = p.load(Acquire);
            if !p.is_null() {
                let len = self.levels[slot].load(Relaxed) as usize * self.upper_len_per_level;
                // SAFETY: `p` came from `Box::<[AtomicU32]>::into_raw` of exactly this
                // length (the level never changes once set) and is freed only here.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, len)) });
            }
        }
    }
}

/// A node's place: its chunk and slot.
#[derive(Clone, Copy)]
pub(super) struct Node<'a> {
    chunk: &'a Chunk,
    slot: usize,
}

pub(super) struct Store {
    dim: usize,
    stride: usize,
    shift: u32,
    m: usize,
    m0: usize,
    segments: [AtomicPtr<AtomicPtr<Chunk>>; SEGMENTS],
    writer: Mutex<()>,
    present: AtomicUsize,
    deleted: AtomicUsize,
    /// One more than the largest present id (0 when empty).
    bound: AtomicUsize,
}

impl Store {
    /// An empty store for vectors of `dim` components, with `m` links per upper-layer
    /// list and `m0` on layer 0.
    pub fn new(dim: usize, m: usize, m0: usize) -> Self {
        let stride = dim.max(1).next_multiple_of(LINE_FLOATS);
        // A power of two slots, enough for both arrays to reach a huge page, but no
        // more than `MAX_VECTOR_BYTES` of vectors.
        let widest = MAX_VECTOR_BYTES / (4 * stride);
        let widest = if widest == 0 {
            0
        } else {
            1 << (usize::BITS - 1 - widest.leading_zeros())
        };
        let slots = MIN_ARRAY_BYTES
            .div_ceil(4 * stride.min(1 + m0))
            .next_power_of_two()
            .min(widest)
            .clamp(64, 1 << 16);
        Store {
            dim,
            stride,
            shift: usize::BITS - 1 - slots.leading_zeros(),
            m,
            m0,
            segments: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            writer: Mutex::new(()),
            present: AtomicUsize::new(0),
            deleted: AtomicUsize::new(0),
            bound: AtomicUsize::new(0),
        }
    }

    /// Capacity of a link list on `level`.
    #[inline]
    pub fn cap(&self, level: usize) -> usize {
        if level == 0 { self.m0 } else { self.m }
    }

    #[inline]
    fn slots(&self) -> usize {
        1 << self.shift
    }

    /// (segment, index in segment, slot) of an id.
    #[inline]
    fn locate(&self, id: InternalId) -> (usize, usize, usize) {
        let c = (id >> self.shift) as u64 + 1;
        let seg = 63 - c.leading_zeros() as usize;
        let off = (c - (1 << seg)) as usize;
        (seg, off, id as usize & (self.slots() - 1))
    }

    /// The slot of `id`, if its chunk exists (whether or not `id` is present).
    #[inline]
    pub fn node(&self, id: InternalId) -> Option<Node<'_>> {
        let (seg, off, slot) = self.locate(id);
        let dir = self.segments.get(seg)?.load(Acquire);
        if dir.is_null() {
            return None;
        }
        // SAFETY: segment `seg` holds `2^seg` entries and `off < 2^seg`; directories
        // are freed only when the store drops.
        let chunk = unsafe { &*dir.add(off) }.load(Acquire);
        if chunk.is_null() {
            return None;
        }
        // SAFETY: chunks are freed only when the store drops.
        Some(Node {
            chunk: unsafe { &*chunk },
            slot,
        })
    }

    /// The vector in a node's slot.
    ///
    /// Callers pass only nodes known to be present: checked by [`Store::live_vector`],
    /// or reached through a link (see the module docs).
    #[inline]
    pub fn vector_of(&self, n: Node<'_>) -> &[f32] {
        // SAFETY: `slot < slots`, so the `dim` floats at `slot × stride` lie inside
        // the chunk's allocation; the slot was written before it became reachable and
        // is never written again.
        unsafe { std::slice::from_raw_parts(n.chunk.vectors().add(n.slot * self.stride), self.dim) }
    }

    /// The vector of a node reached through a link (see [`Store::vector_of`]).
    #[inline]
    pub fn graph_vector(&self, id: InternalId) -> Option<&[f32]> {
        self.node(id).map(|n| self.vector_of(n))
    }

    /// Hints the CPU to fetch `id`'s vector, every cache line of it. Fetching only the
    /// first two lines and leaving the rest to the hardware prefetcher was 1.4-1.8x
    /// slower per search at 1M vectors (BENCHMARKS.md, "Prefetching at 1M").
    #[inline]
    pub fn prefetch(&self, id: InternalId) {
        #[cfg(target_arch = "x86_64")]
        if let Some(n) = self.node(id) {
            // SAFETY: prefetching is only a hint and never faults; the address is
            // inside the chunk's allocation anyway.
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                let p = n.chunk.vectors().add(n.slot * self.stride).cast::<i8>();
                let mut off = 0;
                while off < self.dim * 4 {
                    _mm_prefetch::<_MM_HINT_T0>(p.add(off));
                    off += 64;
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = id;
    }

    /// Hints the CPU to fetch `id`'s layer-0 link list (every cache line of it: with
    /// `M = 16` it is 132 bytes, which may straddle three lines). Layer-0 lists live
    /// apart from the vectors, so without this the list of the next node to expand is a
    /// cache miss nothing hides; the graph search asks for it while it still has
    /// distances to compute.
    #[inline]
    pub fn prefetch_links(&self, id: InternalId) {
        #[cfg(target_arch = "x86_64")]
        if let Some(n) = self.node(id) {
            let w = 1 + self.m0;
            let list = &n.chunk.links0()[n.slot * w..(n.slot + 1) * w];
            let start = list.as_ptr().cast::<i8>();
            let first = start as usize & !63;
            let last = (start as usize + std::mem::size_of_val(list) - 1) & !63;
            for line in (first..=last).step_by(64) {
                // SAFETY: prefetching is only a hint and never faults; `wrapping_offset`
                // computes the line's address without dereferencing anything.
                unsafe {
                    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                    _mm_prefetch::<_MM_HINT_T0>(
                        start.wrapping_offset(line as isize - start as usize as isize),
                    );
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = id;
    }

    /// The link list of `id` on `level`: a count, then `cap(level)` link slots. Empty
    /// if `id` has no such level.
    #[inline]
    pub fn links(&self, id: InternalId, level: usize) -> &[AtomicU32] {
        let Some(n) = self.node(id) else { return &[] };
        if level == 0 {
            let w = 1 + self.m0;
            return &n.chunk.links0()[n.slot * w..(n.slot + 1) * w];
        }
        if level > n.chunk.levels[n.slot].load(Relaxed) as usize {
            return &[];
        }
        let p = n.chunk.upper[n.slot].load(Acquire);
        if p.is_null() {
            return &[];
        }
        let w = 1 + self.m;
        // SAFETY: the block holds `node level × w` entries and `level - 1 < node
        // level`; it lives until the chunk drops.
        unsafe { std::slice::from_raw_parts(p.add((level - 1) * w), w) }
    }

    /// The level of a node (0 if unknown).
    #[inline]
    pub fn level(&self, id: InternalId) -> usize {
        self.node(id)
            .map_or(0, |n| n.chunk.levels[n.slot].load(Relaxed) as usize)
    }

    /// Locks a node's lists against other writers (readers never lock).
    pub fn lock(&self, id: InternalId) -> Option<MutexGuard<'_, ()>> {
        self.node(id).map(|n| n.chunk.locks[n.slot].lock())
    }

    /// Was `id` stored (deleted or not)?
    #[inline]
    pub fn contains(&self, id: InternalId) -> bool {
        self.node(id)
            .is_some_and(|n| Chunk::bit(&n.chunk.present, n.slot))
    }

    #[inline]
    pub fn is_deleted(&self, id: InternalId) -> bool {
        self.node(id)
            .is_some_and(|n| Chunk::bit(&n.chunk.deleted, n.slot))
    }

    pub fn in_graph(&self, id: InternalId) -> bool {
        self.node(id)
            .is_some_and(|n| Chunk::bit(&n.chunk.in_graph, n.slot))
    }

    /// The vector of a live id.
    pub fn live_vector(&self, id: InternalId) -> Option<&[f32]> {
        let n = self.node(id)?;
        (Chunk::bit(&n.chunk.present, n.slot) && !Chunk::bit(&n.chunk.deleted, n.slot))
            .then(|| self.vector_of(n))
    }

    pub fn set_in_graph(&self, id: InternalId) {
        if let Some(n) = self.node(id) {
            n.chunk.in_graph[n.slot / 64].fetch_or(1 << (n.slot % 64), Release);
        }
    }

    /// Marks a present id deleted; false if it is unknown or already deleted.
    pub fn delete(&self, id: InternalId) -> bool {
        let Some(n) = self.node(id) else { return false };
        if !Chunk::bit(&n.chunk.present, n.slot) {
            return false;
        }
        let bit = 1u64 << (n.slot % 64);
        let before = n.chunk.deleted[n.slot / 64].fetch_or(bit, AcqRel);
        if before & bit != 0 {
            return false;
        }
        self.deleted.fetch_add(1, Relaxed);
        true
    }

    /// Number of present ids (deleted or not).
    #[inline]
    pub fn present_count(&self) -> usize {
        self.present.load(Acquire)
    }

    #[inline]
    pub fn deleted_count(&self) -> usize {
        self.deleted.load(Acquire)
    }

    pub fn live_count(&self) -> usize {
        self.present_count().saturating_sub(self.deleted_count())
    }

    /// One more than the largest present id.
    #[inline]
    pub fn bound(&self) -> usize {
        self.bound.load(Relaxed)
    }

    /// Stores a batch of vectors under new ids, each with the level `level_of(id)`,
    /// after checking that no id is present or repeated (nothing is stored then).
    /// Vectors must have `dim` components.
    pub fn insert_batch(
        &self,
        items: &[(InternalId, &[f32])],
        level_of: impl Fn(InternalId) -> usize,
    ) -> Result<(), IndexError> {
        let _writer = self.writer.lock();
        let mut batch = HashSet::with_capacity(if items.len() > 1 { items.len() } else { 0 });
        for &(id, _) in items {
            if self.contains(id) || (items.len() > 1 && !batch.insert(id)) {
                return Err(IndexError::IdInUse(id));
            }
        }
        for &(id, v) in items {
            self.put(id, v, level_of(id), false);
        }
        Ok(())
    }

    /// Stores one vector whose id is not present; the writer lock is held (or the store
    /// is not shared yet).
    fn put(&self, id: InternalId, v: &[f32], level: usize, deleted: bool) {
        debug_assert_eq!(v.len(), self.dim);
        let n = self.chunk_for(id);
        let (chunk, slot) = (n.chunk, n.slot);
        let len = v.len().min(self.dim);
        // SAFETY: the slot lies inside the allocation (see `vector_of`); no reader
        // reads it before the `present` bit below is set, and only the writer-lock
        // holder writes, once.
        unsafe {
            std::ptr::copy_nonoverlapping(v.as_ptr(), chunk.vectors().add(slot * self.stride), len);
        }
        let level = level.min(u8::MAX as usize);
        chunk.levels[slot].store(level as u8, Relaxed);
        if level > 0 {
            let block: Box<[AtomicU32]> = zeroed(level * (1 + self.m));
            let p = Box::into_raw(block).cast::<AtomicU32>();
            chunk.upper[slot].store(p, Release);
        }
        let bit = 1u64 << (slot % 64);
        if deleted {
            chunk.deleted[slot / 64].fetch_or(bit, Release);
            self.deleted.fetch_add(1, Relaxed);
        }
        chunk.present[slot / 64].fetch_or(bit, Release);
        self.present.fetch_add(1, Release);
        self.bound.fetch_max(id as usize + 1, Relaxed);
    }

    /// Stores a node read from a dump (single-threaded, before the store is shared).
    pub fn restore(
        &self,
        id: InternalId,
        v: &[f32],
        level: usize,
        deleted: bool,
    ) -> Result<(), IndexError> {
        let _writer = self.writer.lock();
        if self.contains(id) {
            return Err(IndexError::corrupt(format!("node {id} listed twice")));
        }
        self.put(id, v, level, deleted);
        Ok(())
    }

    /// The slot of `id`, allocating its chunk (and directory segment) if needed; the
    /// writer lock is held.
    fn chunk_for(&self, id: InternalId) -> Node<'_> {
        if let Some(n) = self.node(id) {
            return n;
        }
        let (seg, off, _) = self.locate(id);
        let mut dir = self.segments[seg].load(Acquire);
        if dir.is_null() {
            let entries: Box<[AtomicPtr<Chunk>]> = zeroed(1 << seg);
            dir = Box::into_raw(entries).cast::<AtomicPtr<Chunk>>();
            self.segments[seg].store(dir, Release);
        }
        // A store's first chunk stays on small pages: a small shard should not cost
        // a whole huge page per array.
        let huge = id as usize >= self.slots();
        let chunk = Box::into_raw(Chunk::new(self.slots(), self.stride, self.m, self.m0, huge));
        // SAFETY: `off < 2^seg`, the directory's length.
        unsafe { &*dir.add(off) }.store(chunk, Release);
        self.node(id).expect("the chunk was just published")
    }

    /// Calls `f(id, node)` for every present id in increasing order.
    pub fn for_each_present<'a>(&'a self, mut f: impl FnMut(InternalId, Node<'a>)) {
        let slots = self.slots();
        for (seg, dir) in self.segments.iter().enumerate() {
            let dir = dir.load(Acquire);
            if dir.is_null() {
                continue;
            }
            for off in 0..1usize << seg {
                // SAFETY: as in `node`.
                let chunk = unsafe { &*dir.add(off) }.load(Acquire);
                if chunk.is_null() {
                    continue;
                }
                // SAFETY: as in `node`.
                let chunk = unsafe { &*chunk };
                let first = ((1usize << seg) + off - 1) * slots;
                for (w, word) in chunk.present.iter().enumerate() {
                    let mut bits = word.load(Acquire);
                    while bits != 0 {
                        let slot = w * 64 + bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        f((first + slot) as InternalId, Node { chunk, slot });
                    }
                }
            }
        }
    }

    /// (Address space reserved, bytes resident) of the chunks' two big arrays.
    #[cfg(test)]
    fn memory(&self) -> (usize, usize) {
        let (mut reserved, mut resident) = (0, 0);
        for (seg, dir) in self.segments.iter().enumerate() {
            let dir = dir.load(Acquire);
            if dir.is_null() {
                continue;
            }
            for off in 0..1usize << seg {
                // SAFETY: as in `node`.
                let chunk = unsafe { &*dir.add(off) }.load(Acquire);
                if chunk.is_null() {
                    continue;
                }
                // SAFETY: as in `node`.
                let chunk = unsafe { &*chunk };
                for r in [&chunk.vectors, &chunk.links0] {
                    reserved += r.len();
                    resident += r.resident_bytes();
                }
            }
        }
        (reserved, resident)
    }

    /// Calls `f(id, vector)` for every live id in increasing order.
    pub fn for_each_live(&self, mut f: impl FnMut(InternalId, &[f32])) {
        self.for_each_present(|id, n| {
            if !Chunk::bit(&n.chunk.deleted, n.slot) {
                f(id, self.vector_of(n))
            }
        })
    }

    /// Flags of a node for dumps: (deleted, in graph).
    pub fn flags(&self, n: Node<'_>) -> (bool, bool) {
        (
            Chunk::bit(&n.chunk.deleted, n.slot),
            Chunk::bit(&n.chunk.in_graph, n.slot),
        )
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        for (seg, dir) in self.segments.iter().enumerate() {
            let dir = dir.load(Acquire);
            if dir.is_null() {
                continue;
            }
            // SAFETY: created by `Box::into_raw` of a `2^seg` slice in `chunk_for`.
            let entries =
                unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(dir, 1 << seg)) };
            for e in entries.iter() {
                let c = e.load(Acquire);
                if !c.is_null() {
                    // SAFETY: created by `Box::into_raw` in `chunk_for`, freed once.
                    drop(unsafe { Box::from_raw(c) });
                }
            }
        }
    }
}

/// Number of links in a list (clamped to its capacity).
#[inline]
pub(super) fn count(list: &[AtomicU32]) -> usize {
    match list.first() {
        Some(c) => (c.load(Acquire) as usize).min(list.len() - 1),
        None => 0,
    }
}

/// The links in use of a list.
#[inline]
pub(super) fn used(list: &[AtomicU32]) -> &[AtomicU32] {
    list.get(1..1 + count(list)).unwrap_or(&[])
}

/// Replaces a list's links (the node's lock is held).
pub(super) fn write_list(list: &[AtomicU32], ids: impl ExactSizeIterator<Item = InternalId>) {
    let n = ids.len().min(list.len().saturating_sub(1));
    for (slot, id) in list.iter().skip(1).zip(ids) {
        slot.store(id, Release);
    }
    if let Some(c) = list.first() {
        c.store(n as u32, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_ids_flags_and_iteration() {
        let s = Store::new(3, 4, 8);
        assert_eq!(s.stride, 16);
        let far = 7 * s.slots() as u32 + 5;
        let items: Vec<(InternalId, Vec<f32>)> = [0u32, 1, 63, 64, far, u32::MAX]
            .iter()
            .map(|&id| (id, vec![id as f32, 1.0, 2.0]))
            .collect();
        let refs: Vec<(InternalId, &[f32])> =
            items.iter().map(|(id, v)| (*id, v.as_slice())).collect();
        s.insert_batch(&refs, |id| (id % 3) as usize).unwrap();
        assert!(matches!(
            s.insert_batch(&[(5, &[0.0; 3][..]), (63, &[0.0; 3][..])], |_| 0),
            Err(IndexError::IdInUse(63))
        ));
        assert!(matches!(
            s.insert_batch(&[(5, &[0.0; 3][..]), (5, &[0.0; 3][..])], |_| 0),
            Err(IndexError::IdInUse(5))
        ));
        assert!(!s.contains(5) && !s.contains(2) && s.contains(u32::MAX));
        assert_eq!(s.live_vector(far), Some(&[far as f32, 1.0, 2.0][..]));
        assert_eq!(s.bound(), u32::MAX as usize + 1);
        assert_eq!(s.level(64), 1);
        assert_eq!(s.links(64, 1).len(), 5);
        assert!(s.links(64, 2).is_empty());
        assert_eq!(s.links(0, 0).len(), 9);
        assert!(s.links(0, 1).is_empty() && s.links(3 * s.slots() as u32, 0).is_empty());
        assert_eq!(s.vector_of(s.node(63).unwrap()).as_ptr() as usize % 64, 0);

        assert!(s.delete(63) && !s.delete(63) && !s.delete(2));
        assert!(s.is_deleted(63) && s.contains(63) && s.live_vector(63).is_none());
        assert_eq!(
            (s.present_count(), s.live_count(), s.deleted_count()),
            (6, 5, 1)
        );
        let mut live = Vec::new();
        s.for_each_live(|id, v| live.push((id, v[0])));
        let want: Vec<(u32, f32)> = [0u32, 1, 64, far, u32::MAX]
            .iter()
            .map(|&id| (id, id as f32))
            .collect();
        assert_eq!(live, want);

        write_list(s.links(1, 0), [4u32, 5, 6].into_iter());
        assert_eq!(count(s.links(1, 0)), 3);
        assert_eq!(count(&[]), 0);
    }

    /// A few points of a wide collection cost memory in proportion to themselves, not
    /// to a chunk: one point of dim 65,536 used to commit a 16,384-slot chunk (4 GiB).
    #[cfg(target_os = "linux")]
    #[test]
    fn wide_points_commit_memory_in_proportion() {
        for dim in [4096usize, 65_536] {
            let s = Store::new(dim, 16, 32);
            let vector_bytes = dim * 4;
            let v = vec![1.0f32; dim];
            assert_eq!(s.memory(), (0, 0));
            for n in 1..=3u32 {
                s.insert_batch(&[(n - 1, &v[..])], |_| 0).unwrap();
                // Each write committed the pages of one vector and one list (a page
                // on either side of a vector may be shared); an array too small to
                // be mapped counts whole.
                let (reserved, resident) = s.memory();
                let bound =
                    n as usize * (vector_bytes + 2 * 4096) + super::super::pages::MAP_AT_LEAST;
                assert!(
                    resident <= bound,
                    "dim {dim}, {n} points: {resident} bytes resident, want at most {bound}"
                );
                assert!(
                    resident >= n as usize * vector_bytes,
                    "dim {dim}: {resident}"
                );
                // The address space stays bounded too: one chunk of at most 64 MiB
                // of vectors (or 64 slots) and its lists.
                assert!(
                    reserved <= (MAX_VECTOR_BYTES.max(64 * vector_bytes)) + (8 << 20),
                    "dim {dim}: {reserved} bytes reserved"
                );
            }
        }
    }
}
