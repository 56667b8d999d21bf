//! Failpoints: named places between two steps of an operation where a test can hold
//! the operation, so that it can `kill -9` a participant exactly there (TiKV's
//! failpoints, through the `fail` crate).
//!
//! Compiled in only with the `failpoints` feature, which the integration tests' node
//! binary (`shoal-node`) enables; in the shipped `shoal` binary [`held`] is the
//! constant `false` and nothing reads the environment.
//!
//! A hold is configured with the `fail` crate's `FAILPOINTS` environment variable,
//! read when the test binary starts: `NAME=return(DIR)` holds the operation at `NAME`
//! while the file `DIR/NAME` exists (the test creates and removes it). A held step
//! returns as "waiting" and is tried again next round, so holding never blocks the
//! operator or a runtime thread.
//!
//! Must never change what an operation does: a failpoint only delays the next step.

/// The places an operation can be held at. Each is reached after the step it names
/// took effect and before the next one starts.
pub(crate) mod at {
    /// A move: the new replica joined the group as a learner.
    pub const MOVE_LEARNER_ADDED: &str = "move-learner-added";
    /// A move: the learner caught up; the leadership and the voters have not changed.
    pub const MOVE_CAUGHT_UP: &str = "move-caught-up";
    /// A move: the source no longer leads (the leadership was handed to another
    /// voter if it did); the voters have not changed.
    pub const MOVE_LEADER_HANDED: &str = "move-leader-handed";
    /// A move: the voters are the new set; the metadata still names the old replicas.
    pub const MOVE_VOTERS_CHANGED: &str = "move-voters-changed";
}

/// Whether the operation should stay at `name` this round (see the module doc).
#[cfg(feature = "failpoints")]
pub(crate) fn held(name: &str) -> bool {
    let hold = fail::eval(name, |dir| match dir {
        Some(dir) => std::path::Path::new(&dir).join(name).exists(),
        None => true,
    })
    .unwrap_or(false);
    if hold {
        tracing::info!(failpoint = name, "held at a failpoint");
    }
    hold
}

/// Whether the operation should stay at `name` this round: never, without the
/// `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
pub(crate) fn held(_name: &str) -> bool {
    false
}
