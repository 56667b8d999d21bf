//! A node's identity, kept in its data directory (`node-identity`): its id and, for
//! a node that joined with `--join`, the uuid it joined with.
//!
//! - A data directory belongs to one node id for its whole life: started with
//!   another `--node-id`, the node refuses to start rather than answer Raft messages
//!   under another name.
//! - A node started with `--join` and no identity creates a uuid, saves it, then asks
//!   the cluster for an id and saves that: a join repeated after a crash sends the
//!   same uuid and gets the same id. A node that joined before sends its join again
//!   with its id, so that the cluster learns its current address; the cluster's
//!   answer that the node was removed is final (the node marks its identity removed,
//!   deletes its data and refuses to start), no answer within 10 s is not.
//! - A data directory marked removed is never served again.
//!
//! The file is written atomically (a temporary file renamed over it, fsynced).

use std::io::Write;
use std::path::{Path, PathBuf};

use shoal_meta::NodeId;

use crate::error::{ClusterError, Result};
use crate::options::NodeOptions;

const FILE: &str = "node-identity";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Identity {
    id: Option<NodeId>,
    uuid: String,
    /// The cluster removed this node (see `eviction`): it must not serve again.
    removed: bool,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn load(dir: &Path) -> Result<Option<Identity>> {
    let text = match std::fs::read_to_string(path(dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ClusterError::Storage(format!("reading {FILE}: {e}"))),
    };
    let mut identity = Identity::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("id", v)) => {
                identity.id = Some(v.trim().parse().map_err(|_| {
                    ClusterError::Storage(format!("{FILE}: {v:?} is not a node id"))
                })?)
            }
            Some(("uuid", v)) => identity.uuid = v.trim().to_string(),
            Some(("removed", v)) => identity.removed = v.trim() == "true",
            _ => {}
        }
    }
    Ok(Some(identity))
}

fn save(dir: &Path, identity: &Identity) -> Result<()> {
    let err = |e: std::io::Error| ClusterError::Storage(format!("writing {FILE}: {e}"));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    if let Some(id) = identity.id {
        writeln!(f, "id={id}").map_err(err)?;
    }
    writeln!(f, "uuid={}", identity.uuid).map_err(err)?;
    if identity.removed {
        writeln!(f, "removed=true").map_err(err)?;
    }
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path(dir)).map_err(err)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The id this node runs under; see the module doc.
pub(crate) async fn resolve(options: &NodeOptions) -> Result<NodeId> {
    let dir = &options.data_dir;
    let mut identity = load(dir)?.unwrap_or_default();
    if let (Some(id), true) = (identity.id, identity.removed) {
        discard_data(dir).await?;
        return Err(ClusterError::Removed(id));
    }
    if let (Some(id), Some(addr)) = (identity.id, &options.join)
        && !identity.uuid.is_empty()
    {
        return rejoin(options, &identity, id, addr).await;
    }
    if let Some(id) = identity.id {
        if options.join.is_none() && options.node_id != id {
            return Err(shoal_core::Error::invalid(
                "node_id",
                format!(
                    "the data directory {} belongs to node {id}, not node {}; start it with \
                     --node-id {id}",
                    dir.display(),
                    options.node_id
                ),
            )
            .into());
        }
        return Ok(id);
    }
    let Some(addr) = &options.join else {
        identity.id = Some(options.node_id);
        save(dir, &identity)?;
        return Ok(options.node_id);
    };
    if identity.uuid.is_empty() {
        identity.uuid = uuid::Uuid::new_v4().to_string();
        save(dir, &identity)?;
    }
    // Joining may wait for a cluster that is still forming.
    let wait = options
        .request_timeout
        .max(std::time::Duration::from_secs(60));
    tracing::info!(join = %addr, advertise = %options.advertise, "joining the cluster");
    let id = crate::admin::join_cluster(
        addr,
        &options.advertise,
        &identity.uuid,
        None,
        &options.internal,
        wait,
    )
    .await?;
    identity.id = Some(id);
    save(dir, &identity)?;
    tracing::info!(node = id, "joined the cluster");
    Ok(id)
}

/// A node that joined before starts again: it tells the cluster its address (which
/// may have changed, e.g. a container recreated under a new host name). The cluster
/// answering that it removed the node is final; the cluster not answering is not (the
/// node starts under its id and catches up once the others are back).
async fn rejoin(
    options: &NodeOptions,
    identity: &Identity,
    id: NodeId,
    addr: &str,
) -> Result<NodeId> {
    let wait = std::time::Duration::from_secs(10);
    match crate::admin::join_cluster(
        addr,
        &options.advertise,
        &identity.uuid,
        Some(id),
        &options.internal,
        wait,
    )
    .await
    {
        Ok(_) => {
            tracing::info!(node = id, advertise = %options.advertise, "rejoined the cluster");
            Ok(id)
        }
        Err(ClusterError::Removed(id)) => {
            // Its replicas live elsewhere now; these copies would only resurrect old
            // data. Nothing is open yet.
            mark_removed(&options.data_dir, id)?;
            discard_data(&options.data_dir).await?;
            Err(ClusterError::Removed(id))
        }
        Err(e) if e.is_retryable() => {
            tracing::warn!(node = id, error = %e, "could not tell the cluster this node's address; starting under its id");
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// Deletes what a removed node kept besides its identity (its replicas live
/// elsewhere; these copies would only resurrect old data). Nothing may be open.
async fn discard_data(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        shoal_storage::Store::destroy(&dir)?;
        match std::fs::remove_dir_all(dir.join(crate::host::SNAPSHOT_DIR)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    })
    .await
    .map_err(ClusterError::internal)?
    .map_err(|e| ClusterError::Storage(format!("deleting a removed node's data: {e}")))
}

/// Records that the cluster removed this node: it will refuse to start again over
/// this data directory.
pub(crate) fn mark_removed(dir: &Path, id: NodeId) -> Result<()> {
    let mut identity = load(dir)?.unwrap_or_default();
    identity.id = Some(id);
    identity.removed = true;
    save(dir, &identity)
}

/// The id of the node this data directory belonged to, if the cluster removed it.
#[cfg(test)]
pub(crate) fn removed_node(dir: &Path) -> Result<Option<NodeId>> {
    Ok(load(dir)?.filter(|i| i.removed).and_then(|i| i.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let id = Identity {
            id: Some(7),
            uuid: "u".into(),
            removed: false,
        };
        save(dir.path(), &id).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(id));
        assert_eq!(removed_node(dir.path()).unwrap(), None);
        mark_removed(dir.path(), 7).unwrap();
        assert_eq!(removed_node(dir.path()).unwrap(), Some(7));
        assert_eq!(load(dir.path()).unwrap().unwrap().uuid, "u");
        std::fs::write(dir.path().join(FILE), "id=x\n").unwrap();
        assert!(load(dir.path()).is_err());
    }
}
