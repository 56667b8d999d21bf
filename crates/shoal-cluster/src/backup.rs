//! Backups of collections and their restore, from any node.
//!
//! **Create.** The node asked writes the backup into its own backup directory
//! (`shoal_backup::BackupStore`): for each collection (from the metadata leader's
//! view), its configuration and routing version, then each shard's copy as its
//! leader streams it (`Router::export`: the leader confirms its leadership first, so
//! every write committed before the shard's copy began is in it, and reads one
//! storage snapshot, so writes go on meanwhile). Shards are copied one at a time, a
//! frame at a time, so a backup costs the cluster one shard's read and this node one
//! frame of memory. Each shard's copy is consistent at its own log index (recorded in
//! the manifest); shards are not frozen together, as there is no cross-shard
//! transaction to keep.
//!
//! **Restore.** From a verified [`Backup`] (every checksum checked before anything
//! is created), into this cluster whatever its node count: each collection is
//! created hidden (`MetaCommand::RestoreCollection`: clients see NOT_FOUND and
//! cannot write it), filled through the ordinary write path — points are routed by
//! the new collection's shards, so a backup of 4 shards restores into 1 or 8, at any
//! replication factor — and made visible by `MetaCommand::FinishRestore` only when
//! every point is committed. A restore that fails deletes what it created; one cut
//! short by a crash leaves a hidden collection that deleting clears.
//!
//! This module must never read or write a shard directly: it goes through the
//! router and the metadata group like every other request.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use shoal_backup::{Backup, BackupError, BackupStore, BackupWriter, Manifest};
use shoal_core::{Error, Write};
use shoal_meta::{META_GROUP, MetaCommand, MetaError};
use shoal_raft::Command;

use crate::database::Database;
use crate::error::{ClusterError, Result};

/// Point batches of one restore in flight at once.
const RESTORE_IN_FLIGHT: usize = 4;

/// What to restore, and as what.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoreOptions {
    /// Only these collections of the backup (all if empty).
    pub collections: Vec<String>,
    /// A new name for the restored collection (the backup, or the selection, must
    /// hold exactly one).
    pub rename: Option<String>,
    /// Replicas per shard; `None`: the backup's, but no more than the cluster's
    /// active nodes.
    pub replication_factor: Option<u32>,
}

/// One restored collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub name: String,
    pub points: u64,
}

/// A backup error as the client sees it.
pub fn backup_error(e: BackupError) -> ClusterError {
    let e = match e {
        BackupError::NotFound(n) => Error::NotFound(format!("backup {n:?}")),
        BackupError::Exists(n) => Error::AlreadyExists(format!("backup {n:?}")),
        e @ BackupError::InvalidName { .. } => Error::invalid("name", e.to_string()),
        e @ (BackupError::Corrupt { .. }
        | BackupError::Unsupported(_)
        | BackupError::Archive(_)) => Error::invalid("backup", e.to_string()),
        e @ BackupError::Io { .. } => return ClusterError::Storage(e.to_string()),
    };
    ClusterError::Request(e)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, BackupError> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClusterError::Internal(format!("a backup task failed: {e}")))?
        .map_err(backup_error)
}

impl Database {
    /// Writes backup `name` of `collections` (every collection if empty) into
    /// `store`; see the module doc. `progress` is told the points copied so far.
    pub async fn create_backup(
        &self,
        store: Arc<BackupStore>,
        name: &str,
        collections: &[String],
        version: &str,
        progress: impl Fn(u64),
    ) -> Result<Manifest> {
        shoal_backup::validate_name(name).map_err(backup_error)?;
        let state = self.fresh_state().await?;
        let mut chosen = Vec::new();
        if collections.is_empty() {
            chosen.extend(state.collections.values().filter(|c| !c.restoring).cloned());
        } else {
            for c in collections {
                shoal_core::validate::collection_name(c)?;
                match state.collections.get(c) {
                    Some(cm) if !cm.restoring => chosen.push(cm.clone()),
                    Some(_) => return Err(MetaError::BeingRestored(c.clone()).into()),
                    None => return Err(MetaError::NoSuchCollection(c.clone()).into()),
                }
            }
        }
        let (s, n) = (store.clone(), name.to_string());
        let mut writer = blocking(move || BackupWriter::begin(&s, &n)).await?;
        let mut copied = 0u64;
        for cm in chosen {
            let (config, version) = (cm.config.clone(), cm.routing_version);
            writer = blocking(move || writer.collection(config, version).map(|_| writer)).await?;
            for sh in &cm.shards {
                let mut export = self
                    .router
                    .export(cm.group(sh.id), &sh.replicas)
                    .await
                    .map_err(|e| match e {
                        ClusterError::Resharded { .. } => Error::FailedPrecondition(format!(
                            "collection {:?} was resharded while it was being backed up; \
                             back it up again",
                            cm.config.name
                        ))
                        .into(),
                        e => e,
                    })?;
                let (id, first, last) = (sh.id, sh.range.first, sh.range.last);
                let mut file = {
                    let w = writer;
                    let (w, f) = blocking(move || {
                        let f = w.shard(id, first, last)?;
                        Ok((w, f))
                    })
                    .await?;
                    writer = w;
                    f
                };
                while let Some(frame) = export.next().await {
                    let points = frame?;
                    copied += points.len() as u64;
                    file = blocking(move || file.write(&points).map(|_| file)).await?;
                    progress(copied);
                }
                let index = export.seq.saturating_sub(1);
                tracing::debug!(collection = %cm.config.name, shard = id, node = export.node,
                    index, "shard copied into the backup");
                let entry = blocking(move || file.finish(index)).await?;
                writer.add(entry).map_err(backup_error)?;
            }
        }
        let version = version.to_string();
        blocking(move || writer.finish(&version)).await
    }

    /// Restores `backup` into this cluster; see the module doc. `progress` is told
    /// the points committed so far.
    pub async fn restore_backup(
        &self,
        backup: Arc<Backup>,
        opts: RestoreOptions,
        progress: impl Fn(u64),
    ) -> Result<Vec<Restored>> {
        let manifest = backup.manifest();
        let mut entries = Vec::new();
        if opts.collections.is_empty() {
            entries.extend(manifest.collections.iter().cloned());
        } else {
            for c in &opts.collections {
                let e = manifest.collection(c).ok_or_else(|| {
                    Error::NotFound(format!("collection {c:?} in backup {:?}", manifest.name))
                })?;
                entries.push(e.clone());
            }
        }
        if entries.is_empty() {
            return Err(Error::invalid("backup", "the backup holds no collection").into());
        }
        if let Some(new) = &opts.rename {
            if entries.len() != 1 {
                return Err(Error::invalid(
                    "rename",
                    format!(
                        "a new name needs exactly one collection; {} are selected (choose one)",
                        entries.len()
                    ),
                )
                .into());
            }
            shoal_core::validate::collection_name(new)
                .map_err(|e| Error::invalid("rename", e.to_string()))?;
            entries[0].config.name = new.clone();
        }
        // Every name free before anything is created.
        let state = self.fresh_state().await?;
        let active = state
            .nodes
            .values()
            .filter(|n| n.state == shoal_meta::NodeState::Active)
            .count()
            .max(1) as u32;
        for e in &entries {
            match state.collections.get(&e.config.name) {
                Some(c) if c.restoring => {
                    return Err(MetaError::BeingRestored(e.config.name.clone()).into());
                }
                Some(_) => return Err(MetaError::CollectionExists(e.config.name.clone()).into()),
                None => {}
            }
        }
        let mut created: Vec<String> = Vec::new();
        let result = self
            .restore_entries(&backup, &entries, &opts, active, &mut created, &progress)
            .await;
        match result {
            Ok(out) => Ok(out),
            Err(e) => {
                for name in created {
                    if let Err(d) = self.delete_collection(&name).await {
                        tracing::warn!(collection = %name, error = %d,
                            "could not delete a collection of a failed restore");
                    }
                }
                Err(e)
            }
        }
    }

    async fn restore_entries(
        &self,
        backup: &Arc<Backup>,
        entries: &[shoal_backup::CollectionEntry],
        opts: &RestoreOptions,
        active: u32,
        created: &mut Vec<String>,
        progress: &impl Fn(u64),
    ) -> Result<Vec<Restored>> {
        let mut out = Vec::new();
        let mut total = 0u64;
        for e in entries {
            let mut config = e.config.clone();
            config.replication_factor = opts
                .replication_factor
                .unwrap_or_else(|| config.replication_factor.min(active));
            let cm = self.create_collection_as(config, true).await?;
            created.push(cm.config.name.clone());
            let mut points = 0u64;
            for sh in &e.shards {
                let (b, s) = (backup.clone(), sh.clone());
                let mut frames = blocking(move || b.points(&s)).await?;
                let mut in_flight = FuturesUnordered::new();
                loop {
                    let (next, rest) = blocking(move || {
                        let next = frames.next().transpose()?;
                        Ok((next, frames))
                    })
                    .await?;
                    frames = rest;
                    let Some(batch) = next else { break };
                    let n = batch.len() as u64;
                    let cm = &cm;
                    in_flight.push(async move { self.write_restored(cm, batch).await.map(|_| n) });
                    if in_flight.len() >= RESTORE_IN_FLIGHT
                        && let Some(r) = in_flight.next().await
                    {
                        points += r?;
                        progress(total + points);
                    }
                }
                while let Some(r) = in_flight.next().await {
                    points += r?;
                    progress(total + points);
                }
            }
            total += points;
            let reply = self
                .router
                .propose(
                    META_GROUP,
                    &self.voters().await?,
                    Command::Meta(MetaCommand::FinishRestore(cm.config.name.clone())),
                )
                .await?;
            let index = crate::database::committed(reply)?;
            self.router
                .host()
                .wait_state(index, self.router.timeout())
                .await?;
            out.push(Restored {
                name: cm.config.name.clone(),
                points,
            });
        }
        Ok(out)
    }

    /// Commits restored points into a hidden collection, validated as any upsert.
    async fn write_restored(
        &self,
        cm: &shoal_meta::CollectionMeta,
        points: Vec<shoal_core::Point>,
    ) -> Result<()> {
        let points = shoal_core::validate::upsert(&cm.config, points, self.limits())?;
        let n = points.len() as u64;
        self.write_shards(cm, Write::Upsert(points), n).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{TestCluster, config, points, strong};
    use shoal_core::Error;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collection_being_restored_is_hidden_until_it_finishes() {
        let cluster = TestCluster::start(2).await;
        let db = cluster.node(1).database().clone();
        let cm = db
            .create_collection_as(config("r", 2, 2), true)
            .await
            .unwrap();
        // The restore writes into it...
        db.write_restored(&cm, points(0..50)).await.unwrap();
        // ...while clients, through either node, cannot see or write it.
        for n in [1, 2] {
            let node = cluster.node(n);
            let hidden =
                |e: Error| matches!(&e, Error::NotFound(m) if m.contains("being restored"));
            assert!(hidden(node.collection("r").await.unwrap_err()));
            assert!(hidden(node.upsert("r", points(50..51)).await.unwrap_err()));
            assert!(hidden(node.count("r", None, strong()).await.unwrap_err()));
            assert!(node.list_collections().await.unwrap().is_empty());
            // Its name is taken.
            assert!(matches!(
                node.create_collection(config("r", 1, 1)).await.unwrap_err(),
                Error::AlreadyExists(_)
            ));
        }
        // Finished: visible everywhere, with what was restored.
        let reply = db
            .router
            .propose(
                shoal_meta::META_GROUP,
                &db.voters().await.unwrap(),
                shoal_raft::Command::Meta(shoal_meta::MetaCommand::FinishRestore("r".into())),
            )
            .await
            .unwrap();
        let index = crate::database::committed(reply).unwrap();
        for n in [1, 2] {
            let node = cluster.node(n);
            node.database()
                .router
                .host()
                .wait_state(index, std::time::Duration::from_secs(10))
                .await
                .unwrap();
            assert_eq!(node.count("r", None, strong()).await.unwrap(), 50);
            assert_eq!(node.list_collections().await.unwrap().len(), 1);
        }
        // A restore cut short is cleared by deleting the collection.
        let cm = db
            .create_collection_as(config("s", 1, 1), true)
            .await
            .unwrap();
        assert!(cm.restoring);
        cluster.node(2).delete_collection("s").await.unwrap();
        assert!(
            cluster
                .node(2)
                .create_collection(config("s", 1, 1))
                .await
                .is_ok()
        );
    }
}
