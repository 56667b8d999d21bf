//! Index checkpoints: the derived state saved to disk so a restart need not rebuild
//! the graph.
//!
//! A checkpoint is the index's own dump plus the map from point ids to internal ids,
//! written into `ckpt-<seq>.tmp/` and renamed to `ckpt-<seq>/` once complete; older
//! checkpoints are then removed. Checkpoints are *derived*: the points in storage stay
//! the source of truth. On open the newest complete checkpoint is loaded and
//! reconciled with storage (see `Shard::open`): points whose stored vector equals the
//! checkpointed one keep their graph node, others are re-inserted, and nodes of
//! points no longer stored are deleted. So any checkpoint, however stale, gives the
//! same answer as a rebuild, and a missing or damaged one only costs time.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shoal_core::PointId;
use shoal_index::{IndexParams, InternalId, VectorIndex};

const PREFIX: &str = "ckpt-";
const TMP_SUFFIX: &str = ".tmp";
const GRAPH_DIR: &str = "index";
const IDS_FILE: &str = "ids.postcard";

/// The point id ⇄ internal id map at checkpoint time.
#[derive(Serialize, Deserialize)]
pub(crate) struct IdMap {
    pub next_internal: InternalId,
    pub ids: Vec<(PointId, InternalId)>,
}

fn io_err(what: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", what.display())
}

/// Writes a checkpoint for sequence number `seq` into `dir` and removes older ones.
pub(crate) fn write(
    dir: &Path,
    seq: u64,
    index: &dyn VectorIndex,
    ids: &IdMap,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let tmp = dir.join(format!("{PREFIX}{seq}{TMP_SUFFIX}"));
    let _ = std::fs::remove_dir_all(&tmp);
    let graph = tmp.join(GRAPH_DIR);
    std::fs::create_dir_all(&graph).map_err(|e| io_err(&graph, e))?;
    index.dump(&graph).map_err(|e| e.to_string())?;
    let bytes = postcard::to_stdvec(ids).map_err(|e| e.to_string())?;
    let ids_path = tmp.join(IDS_FILE);
    std::fs::write(&ids_path, bytes).map_err(|e| io_err(&ids_path, e))?;
    // Make the files durable before the rename publishes them.
    sync_tree(&tmp)?;
    let done = dir.join(format!("{PREFIX}{seq}"));
    let _ = std::fs::remove_dir_all(&done);
    std::fs::rename(&tmp, &done).map_err(|e| io_err(&done, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    for (s, path) in list(dir) {
        if s != seq {
            let _ = std::fs::remove_dir_all(path);
        }
    }
    Ok(done)
}

/// Makes the newest complete checkpoint in `from` the only one in `to`, by hard links
/// (copies where links fail): a shard split off another starts from its graph.
/// Returns whether there was one.
pub(crate) fn link_latest(from: &Path, to: &Path) -> Result<bool, String> {
    let Some((seq, src)) = list(from).pop() else {
        return Ok(false);
    };
    let _ = std::fs::remove_dir_all(to);
    let tmp = to.join(format!("{PREFIX}{seq}{TMP_SUFFIX}"));
    link_tree(&src, &tmp)?;
    sync_tree(&tmp)?;
    let done = to.join(format!("{PREFIX}{seq}"));
    std::fs::rename(&tmp, &done).map_err(|e| io_err(&done, e))?;
    if let Ok(d) = std::fs::File::open(to) {
        let _ = d.sync_all();
    }
    Ok(true)
}

fn link_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| io_err(to, e))?;
    for e in std::fs::read_dir(from)
        .map_err(|e| io_err(from, e))?
        .flatten()
    {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            link_tree(&src, &dst)?;
        } else if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(|e| io_err(&dst, e))?;
        }
    }
    Ok(())
}

/// fsyncs every file below `dir`, and the directories themselves.
fn sync_tree(dir: &Path) -> Result<(), String> {
    for e in std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .flatten()
    {
        let path = e.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_err(&path, e))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// When the newest complete checkpoint in `dir` was written (its directory's
/// modification time), if there is one. Only reads: a checkpoint being written
/// meanwhile is left alone.
pub(crate) fn newest_time(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let seq: u64 = name.strip_prefix(PREFIX)?.parse().ok()?;
            Some((seq, e.metadata().ok()?.modified().ok()?))
        })
        .max_by_key(|(seq, _)| *seq)
        .map(|(_, t)| t)
}

/// Complete checkpoints in `dir`, as (seq, path); incomplete ones are removed.
fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(TMP_SUFFIX) {
            let _ = std::fs::remove_dir_all(e.path());
        } else if let Some(seq) = name.strip_prefix(PREFIX).and_then(|s| s.parse().ok()) {
            out.push((seq, e.path()));
        }
    }
    out.sort();
    out
}

/// Loads the newest complete checkpoint whose index was built with `params`.
/// Returns `None` (after logging why) when there is none or it cannot be used.
pub(crate) fn read_latest(
    dir: &Path,
    params: &IndexParams,
) -> Option<(Box<dyn VectorIndex>, IdMap)> {
    let (seq, path) = list(dir).pop()?;
    let result = (|| -> Result<_, String> {
        let index = shoal_index::load(&path.join(GRAPH_DIR)).map_err(|e| e.to_string())?;
        let p = index.params();
        if (p.dim, p.metric, p.m, p.ef_construction)
            != (params.dim, params.metric, params.m, params.ef_construction)
        {
            return Err(format!("built with {p:?}, the collection wants {params:?}"));
        }
        let ids_path = path.join(IDS_FILE);
        let bytes = std::fs::read(&ids_path).map_err(|e| io_err(&ids_path, e))?;
        let ids: IdMap = postcard::from_bytes(&bytes).map_err(|e| io_err(&ids_path, e))?;
        Ok((index, ids))
    })();
    match result {
        Ok(r) => {
            tracing::info!(checkpoint = %path.display(), seq, "loaded index checkpoint");
            Some(r)
        }
        Err(e) => {
            tracing::warn!(checkpoint = %path.display(), error = %e, "ignoring unusable index checkpoint; rebuilding");
            None
        }
    }
}
