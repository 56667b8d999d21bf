//! gRPC service `shoal.v1.Backups` over a node and its backup directory
//! (`--backup-dir`). Creating and restoring are the node's (`shoal_cluster`'s
//! `backup` module); the backup format is `shoal_backup`'s. This service moves
//! bytes: a download is the backup's tar stream read on a blocking thread into
//! chunks of [`CHUNK_BYTES`], an upload is fed chunk by chunk to the unpacker, with
//! at most a few chunks in memory either way.
//!
//! It must never read or write a shard: backups go through the node.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use shoal_backup::{BackupStore, Manifest};
use shoal_cluster::{Node, RestoreOptions, backup_error};
use shoal_proto::v1::{self as pb, backups_server::Backups, restore_backup_request::Part};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Authorized;
use crate::status::to_status;

/// Bytes per download chunk.
pub const CHUNK_BYTES: usize = 1 << 20;

/// `shoal.v1.Backups`.
pub struct BackupsService {
    node: Node,
    store: Arc<BackupStore>,
}

impl BackupsService {
    pub fn new(node: Node, store: Arc<BackupStore>) -> Self {
        BackupsService { node, store }
    }
}

fn cluster_status(e: shoal_backup::BackupError) -> Status {
    to_status(shoal_core::Error::from(backup_error(e)))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, shoal_backup::BackupError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("a backup task failed: {e}")))?
        .map_err(cluster_status)
}

/// A manifest as the API describes a backup.
pub fn backup_info(m: &Manifest, node: u64) -> pb::BackupInfo {
    pb::BackupInfo {
        name: m.name.clone(),
        created_unix_ms: m.created_unix_ms,
        duration_ms: m.duration_ms,
        shoal_version: m.shoal_version.clone(),
        points: m.points(),
        bytes: m.bytes(),
        collections: m
            .collections
            .iter()
            .map(|c| pb::BackupCollection {
                name: c.config.name.clone(),
                points: c.points(),
                shards: c
                    .shards
                    .iter()
                    .map(|s| pb::BackupShard {
                        shard: s.shard,
                        applied_index: s.applied_index,
                        points: s.points,
                        bytes: s.bytes,
                        sha256: s.sha256.clone(),
                    })
                    .collect(),
            })
            .collect(),
        node,
    }
}

/// `backup-YYYYMMDD-HHMMSS` (UTC) for a backup created now.
pub fn default_name(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "backup-{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

type ChunkStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Backups for BackupsService {
    async fn create(
        &self,
        req: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<pb::BackupInfo>, Status> {
        Authorized::of(&req)?;
        let req = req.into_inner();
        let name = if req.name.is_empty() {
            default_name(SystemTime::now())
        } else {
            req.name
        };
        tracing::info!(backup = %name, collections = ?req.collections, "backup started");
        let m = self
            .node
            .create_backup(self.store.clone(), &name, &req.collections, |_| {})
            .await
            .map_err(to_status)?;
        tracing::info!(backup = %name, points = m.points(), bytes = m.bytes(),
            ms = m.duration_ms, "backup written");
        Ok(Response::new(backup_info(&m, self.node.id())))
    }

    async fn list(
        &self,
        req: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        Authorized::of(&req)?;
        let store = self.store.clone();
        let all = blocking(move || store.list()).await?;
        let node = self.node.id();
        Ok(Response::new(pb::ListBackupsResponse {
            backups: all.iter().map(|m| backup_info(m, node)).collect(),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteBackupRequest>,
    ) -> Result<Response<pb::DeleteBackupResponse>, Status> {
        Authorized::of(&req)?;
        let name = req.into_inner().name;
        let store = self.store.clone();
        blocking(move || store.delete(&name)).await?;
        Ok(Response::new(pb::DeleteBackupResponse {}))
    }

    type DownloadStream = ChunkStream;

    async fn download(
        &self,
        req: Request<pb::DownloadBackupRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        Authorized::of(&req)?;
        let name = req.into_inner().name;
        let store = self.store.clone();
        // Verified before the first byte leaves: a damaged backup is refused, not
        // sent.
        let backup = blocking(move || store.open_backup(&name)).await?;
        let (tx, rx) = mpsc::channel::<Result<pb::BackupChunk, Status>>(2);
        tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK_BYTES),
            };
            let r = shoal_backup::pack(backup.dir(), &mut out).and_then(|_| {
                out.flush()
                    .map_err(|e| shoal_backup::BackupError::Archive(e.to_string()))
            });
            if let Err(e) = r {
                let _ = tx.blocking_send(Err(cluster_status(e)));
            }
        });
        Ok(Response::new(Box::pin(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
        ))))
    }

    async fn restore(
        &self,
        req: Request<Streaming<pb::RestoreBackupRequest>>,
    ) -> Result<Response<pb::RestoreBackupResponse>, Status> {
        Authorized::of(&req)?;
        let started = Instant::now();
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .and_then(|m| m.part)
            .ok_or_else(|| {
                Status::invalid_argument("options: the first message must say what to restore")
            })?;
        let Part::Options(o) = first else {
            return Err(Status::invalid_argument(
                "options: the first message must be the options, before any chunk",
            ));
        };
        let backup = if !o.backup.is_empty() {
            let (store, name) = (self.store.clone(), o.backup.clone());
            let b = blocking(move || store.open_backup(&name)).await?;
            if stream.message().await?.is_some() {
                return Err(Status::invalid_argument(
                    "chunk: a restore of a backup on the server takes no upload",
                ));
            }
            b
        } else {
            // The upload is unpacked and verified as it arrives.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
            let store = self.store.clone();
            let unpack = tokio::task::spawn_blocking(move || {
                store.receive(ChunkReader {
                    rx,
                    buf: Vec::new(),
                    at: 0,
                })
            });
            let mut fed = Ok(());
            loop {
                match stream.message().await {
                    Ok(Some(pb::RestoreBackupRequest {
                        part: Some(Part::Chunk(c)),
                    })) => {
                        let tx = tx.clone();
                        // The unpacker stopped early (a bad archive): its error says why.
                        let sent = tokio::task::spawn_blocking(move || tx.send(c).is_ok())
                            .await
                            .unwrap_or(false);
                        if !sent {
                            break;
                        }
                    }
                    Ok(Some(_)) => {
                        fed = Err(Status::invalid_argument(
                            "options: sent twice; after the options come only chunks",
                        ));
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        fed = Err(e);
                        break;
                    }
                }
            }
            drop(tx);
            let unpacked = unpack
                .await
                .map_err(|e| Status::internal(format!("a backup task failed: {e}")))?;
            fed?;
            unpacked.map_err(cluster_status)?
        };
        let options = RestoreOptions {
            collections: o.collections,
            rename: (!o.rename.is_empty()).then_some(o.rename),
            replication_factor: (o.replication_factor > 0).then_some(o.replication_factor),
        };
        tracing::info!(backup = %backup.manifest().name, ?options, "restore started");
        // On a task of its own: a client that goes away (or whose deadline passes)
        // does not cut the restore short; it finishes, or fails and deletes what it
        // created, either way leaving no hidden collection behind.
        let node = self.node.clone();
        let restored =
            tokio::spawn(
                async move { node.restore_backup(Arc::new(backup), options, |_| {}).await },
            )
            .await
            .map_err(|e| Status::internal(format!("the restore task failed: {e}")))?
            .map_err(to_status)?;
        tracing::info!(collections = ?restored, "restore finished");
        Ok(Response::new(pb::RestoreBackupResponse {
            collections: restored
                .into_iter()
                .map(|r| pb::RestoredCollection {
                    name: r.name,
                    points: r.points,
                })
                .collect(),
            duration_ms: started.elapsed().as_millis() as u64,
        }))
    }
}

/// Collects written bytes into chunks sent on a channel (a blocking thread's side).
struct ChunkWriter {
    tx: mpsc::Sender<Result<pb::BackupChunk, Status>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.tx
            .blocking_send(Ok(pb::BackupChunk { data }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = b.len().min(CHUNK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

/// Reads the chunks of an upload as one byte stream (a blocking thread's side).
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.at = 0;
                }
                Err(_) => return Ok(0), // The upload ended.
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn default_names_are_utc_times() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_601_599); // 2026-12-06 23:59:59
        assert_eq!(default_name(t), "backup-20261206-235959");
        assert_eq!(default_name(UNIX_EPOCH), "backup-19700101-000000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(default_name(leap), "backup-20000229-000000");
    }

    #[test]
    fn chunks_join_into_the_stream_they_came_from() {
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        for part in [&b"ab"[..], b"", b"cde", b"f"] {
            tx.send(part.to_vec()).unwrap();
        }
        drop(tx);
        let mut r = ChunkReader {
            rx,
            buf: Vec::new(),
            at: 0,
        };
        let mut all = String::new();
        r.read_to_string(&mut all).unwrap();
        assert_eq!(all, "abcdef");
    }
}
