//! A write to one shard: the unit a shard's Raft group replicates and its shard
//! applies.
//!
//! A [`Write`] is only ever built from what [`crate::validate`] returned (points
//! prepared for the index, ids without duplicates) and already routed to its shard:
//! nothing downstream validates it again.

use serde::{Deserialize, Serialize};

use crate::{Point, PointId};

/// A validated write to one shard. Its encoding is the payload of a shard group's Raft
/// log entries, so changing its shape changes the log format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Write {
    /// Inserts these points or replaces the points with their ids.
    Upsert(Vec<Point>),
    /// Deletes the points with these ids (ids the shard does not hold are ignored).
    Delete(Vec<PointId>),
}
