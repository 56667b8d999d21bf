//! `shoal backup` (alias `shoal snapshot`): backups made on a node, listed, deleted,
//! downloaded as a tar file, and restored from such a file or from a backup kept on
//! the node. A client of the `Backups` service only.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt;
use shoal_proto::v1::{self as pb, backups_client::BackupsClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{self, Conn, MAX_MESSAGE, Progress, Target, status_err};

/// Bytes per uploaded chunk.
const CHUNK: usize = 1 << 20;

#[derive(Subcommand)]
pub enum BackupCmd {
    /// Back up collections (all if none named) into the node's backup directory:
    /// each shard's copy is taken at its leader while writes go on, with a manifest
    /// of SHA-256 checksums. `shoal snapshot create COLLECTION` backs up one.
    Create {
        /// The collections to back up; all if none.
        collections: Vec<String>,
        /// The backup's name (default: backup-YYYYMMDD-HHMMSS, UTC).
        #[arg(long)]
        name: Option<String>,
        /// Also download it to this file (a tar archive).
        #[arg(long)]
        download: Option<PathBuf>,
    },
    /// List the backups kept on the node.
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a backup kept on the node.
    Delete { name: String },
    /// Download a backup as a tar archive (manifest.json, then one file per shard).
    Download {
        name: String,
        /// Where to write it (default: NAME.tar); `-` for standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Restore collections from a downloaded backup FILE (uploaded to the node), or
    /// from a backup kept on the node (--name), into this cluster, whatever its
    /// size. The backup is verified first; each collection stays hidden until every
    /// point is committed, and a failed restore leaves nothing behind.
    Restore {
        /// A backup archive written by `shoal backup download`.
        #[arg(required_unless_present = "name", conflicts_with = "name")]
        file: Option<PathBuf>,
        /// Restore a backup kept on the node instead.
        #[arg(long)]
        name: Option<String>,
        /// Only these collections of the backup (repeat the flag for several).
        #[arg(long = "collection")]
        collections: Vec<String>,
        /// Restore the (one) collection under this name.
        #[arg(long = "as")]
        rename: Option<String>,
        /// Replicas per shard (default: the backup's, at most the active nodes).
        #[arg(long)]
        replication_factor: Option<u32>,
    },
}

async fn backups(target: &Target) -> anyhow::Result<BackupsClient<Conn>> {
    Ok(BackupsClient::new(client::channel(target).await?)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

fn print_backup(b: &pb::BackupInfo) {
    let collections: Vec<String> = b
        .collections
        .iter()
        .map(|c| {
            format!(
                "{} ({} points, {} shards)",
                c.name,
                c.points,
                c.shards.len()
            )
        })
        .collect();
    println!(
        "{}: {} points, {:.1} MiB, {} ms, on node {}, shoal {}: {}",
        b.name,
        b.points,
        b.bytes as f64 / (1 << 20) as f64,
        b.duration_ms,
        b.node,
        b.shoal_version,
        if collections.is_empty() {
            "no collections".to_string()
        } else {
            collections.join(", ")
        }
    );
}

/// Runs one `shoal backup` command.
pub async fn run(target: &Target, cmd: BackupCmd) -> anyhow::Result<()> {
    let mut c = backups(target).await?;
    match cmd {
        BackupCmd::Create {
            collections,
            name,
            download,
        } => {
            eprintln!("backing up {} ...", describe(&collections));
            let b = c
                .create(pb::CreateBackupRequest {
                    name: name.unwrap_or_default(),
                    collections,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            print_backup(&b);
            if let Some(out) = download {
                fetch(&mut c, &b.name, &out, b.bytes).await?;
            }
        }
        BackupCmd::List { json } => {
            let all = c
                .list(pb::ListBackupsRequest {})
                .await
                .map_err(status_err)?
                .into_inner()
                .backups;
            if json {
                let v: Vec<serde_json::Value> = all.iter().map(backup_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if all.is_empty() {
                println!("no backups on this node");
            } else {
                all.iter().for_each(print_backup);
            }
        }
        BackupCmd::Delete { name } => {
            c.delete(pb::DeleteBackupRequest { name: name.clone() })
                .await
                .map_err(status_err)?;
            println!("deleted backup {name}");
        }
        BackupCmd::Download { name, out } => {
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{name}.tar")));
            let size = c
                .list(pb::ListBackupsRequest {})
                .await
                .map_err(status_err)?
                .into_inner()
                .backups
                .iter()
                .find(|b| b.name == name)
                .map(|b| b.bytes)
                .unwrap_or(0);
            fetch(&mut c, &name, &out, size).await?;
        }
        BackupCmd::Restore {
            file,
            name,
            collections,
            rename,
            replication_factor,
        } => {
            let options = pb::RestoreOptions {
                backup: name.clone().unwrap_or_default(),
                collections,
                rename: rename.unwrap_or_default(),
                replication_factor: replication_factor.unwrap_or(0),
            };
            let first = pb::RestoreBackupRequest {
                part: Some(pb::restore_backup_request::Part::Options(options)),
            };
            let r = match file {
                Some(path) => {
                    let f = tokio::fs::File::open(&path)
                        .await
                        .with_context(|| format!("opening {}", path.display()))?;
                    let size = f.metadata().await.map(|m| m.len()).unwrap_or(0);
                    eprintln!("uploading {} and restoring ...", path.display());
                    let progress =
                        std::sync::Arc::new(std::sync::Mutex::new(Progress::new(size, "bytes")));
                    let p = progress.clone();
                    let chunks = futures::stream::unfold(Some(f), move |f| {
                        let p = p.clone();
                        async move {
                            let mut f = f?;
                            let mut buf = vec![0u8; CHUNK];
                            let mut n = 0;
                            while n < CHUNK {
                                match f.read(&mut buf[n..]).await {
                                    Ok(0) => break,
                                    Ok(k) => n += k,
                                    // The server sees a short archive and says so.
                                    Err(_) => break,
                                }
                            }
                            if n == 0 {
                                return None;
                            }
                            buf.truncate(n);
                            if let Ok(mut p) = p.lock() {
                                p.inc(n as u64);
                            }
                            Some((
                                pb::RestoreBackupRequest {
                                    part: Some(pb::restore_backup_request::Part::Chunk(buf)),
                                },
                                Some(f),
                            ))
                        }
                    });
                    let r = c
                        .restore(futures::stream::iter([first]).chain(chunks))
                        .await;
                    if let Ok(p) = progress.lock() {
                        p.finish_and_clear();
                    }
                    r
                }
                None => {
                    eprintln!(
                        "restoring backup {} kept on the node ...",
                        name.unwrap_or_default()
                    );
                    c.restore(futures::stream::iter([first])).await
                }
            }
            .map_err(status_err)?
            .into_inner();
            for col in &r.collections {
                println!("restored {}: {} points", col.name, col.points);
            }
            println!("restore finished in {:.1} s", r.duration_ms as f64 / 1000.0);
        }
    }
    Ok(())
}

fn describe(collections: &[String]) -> String {
    if collections.is_empty() {
        "every collection".to_string()
    } else {
        collections.join(", ")
    }
}

/// Downloads backup `name` to `out` (`-`: standard output), `size` bytes expected
/// (the shard files; the archive is a little larger).
async fn fetch(
    c: &mut BackupsClient<Conn>,
    name: &str,
    out: &std::path::Path,
    size: u64,
) -> anyhow::Result<()> {
    let mut stream = c
        .download(pb::DownloadBackupRequest {
            name: name.to_string(),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    let to_stdout = out.as_os_str() == "-";
    // Written beside the target and renamed when complete: a cut download never
    // looks like a backup.
    let partial = out.with_extension("partial");
    let mut file: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if to_stdout {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(
            tokio::fs::File::create(&partial)
                .await
                .with_context(|| format!("creating {}", partial.display()))?,
        )
    };
    let mut progress = Progress::new(size, "bytes");
    let mut total = 0u64;
    let result: anyhow::Result<()> = async {
        while let Some(chunk) = stream.message().await.map_err(status_err)? {
            file.write_all(&chunk.data).await?;
            total += chunk.data.len() as u64;
            progress.inc(chunk.data.len() as u64);
        }
        file.flush().await?;
        Ok(())
    }
    .await;
    progress.finish_and_clear();
    if let Err(e) = result {
        if !to_stdout {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        return Err(e.context(format!("downloading backup {name}")));
    }
    if !to_stdout {
        drop(file);
        tokio::fs::rename(&partial, out)
            .await
            .with_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
        eprintln!(
            "downloaded backup {name} to {} ({total} bytes)",
            out.display()
        );
    }
    Ok(())
}

fn backup_json(b: &pb::BackupInfo) -> serde_json::Value {
    serde_json::json!({
        "name": b.name,
        "created_unix_ms": b.created_unix_ms,
        "duration_ms": b.duration_ms,
        "shoal_version": b.shoal_version,
        "points": b.points,
        "bytes": b.bytes,
        "node": b.node,
        "collections": b.collections.iter().map(|c| serde_json::json!({
            "name": c.name,
            "points": c.points,
            "shards": c.shards.iter().map(|s| serde_json::json!({
                "shard": s.shard,
                "applied_index": s.applied_index,
                "points": s.points,
                "bytes": s.bytes,
                "sha256": s.sha256,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}
