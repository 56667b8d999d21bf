//! Which shard a point lives in: a stable hash of its id, so every node and every
//! version of Shoal agrees without coordination.

use crate::PointId;

/// 64-bit stable hash of a point id (XXH3 over [`PointId::to_key`]).
pub fn id_hash(id: &PointId) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&id.to_key())
}

/// The shard of `id` in a collection of `shard_count` shards.
pub fn shard_of(id: &PointId, shard_count: u32) -> u32 {
    debug_assert!(shard_count > 0);
    // Lemire's multiply-shift: uniform and cheaper than `%`.
    ((id_hash(id) as u128 * shard_count as u128) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_across_versions() {
        // Pinned: changing the hash would move every stored point to another shard.
        assert_eq!(shard_of(&PointId::Num(0), 4), shard_of(&PointId::Num(0), 4));
        assert_eq!(
            id_hash(&PointId::Num(1)),
            xxhash_rust::xxh3::xxh3_64(&[0, 0, 0, 0, 0, 0, 0, 0, 1])
        );
    }

    #[test]
    fn spreads_evenly() {
        let mut counts = [0u32; 4];
        for i in 0..40_000u64 {
            counts[shard_of(&PointId::Num(i), 4) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
