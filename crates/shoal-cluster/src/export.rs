//! Streaming a point-in-time copy of a shard out of its leader (for backups).
//!
//! The leader confirms its leadership first (as a STRONG read does), so the copy
//! holds every write committed before the export began; then it reads its replica
//! from one storage snapshot (`Shard::export`), which never holds off writes, and
//! hands the points on in frames of at most [`FRAME_POINTS`] points or about
//! [`FRAME_BYTES`], through a channel of two frames: a slow reader slows the
//! producer, and no more than a few frames are ever in memory. Across the network the
//! frames are the `ClusterInternal.Export` stream: [`ExportFrame::Start`], points,
//! [`ExportFrame::End`] with the count, so a stream cut short is told from a short
//! shard.
//!
//! This module must never write: it only reads a replica.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_core::Point;
use shoal_meta::NodeId;
use tokio::sync::mpsc;

use crate::error::{ClusterError, Result};

/// Most points in one frame.
pub(crate) const FRAME_POINTS: usize = 1024;
/// A frame is closed once its points hold about this many bytes.
pub(crate) const FRAME_BYTES: usize = 1 << 20;
/// How long a reader waits for the next frame of a peer's stream.
pub(crate) const FRAME_WAIT: Duration = Duration::from_secs(60);

/// One message of the `Export` stream (postcard in a `Payload`, wrapped in
/// `Result<ExportFrame, ClusterError>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ExportFrame {
    /// The copy's applied sequence number (the shard's Raft log index + 1).
    Start {
        seq: u64,
    },
    Points(Vec<Point>),
    /// Every point has been sent: this many.
    End {
        points: u64,
    },
}

/// A shard's copy being read.
pub struct Export {
    /// The node that serves it (the shard's leader).
    pub node: NodeId,
    /// Its applied sequence number (Raft log index + 1; 0 for an empty log).
    pub seq: u64,
    frames: mpsc::Receiver<Result<Vec<Point>>>,
}

impl Export {
    /// The next frame of points; `None` once every point was received. An error
    /// ends the copy (it is incomplete).
    pub async fn next(&mut self) -> Option<Result<Vec<Point>>> {
        self.frames.recv().await
    }

    /// Reads `points` (from `Shard::export`) on a blocking thread into frames.
    pub(crate) fn produce(
        node: NodeId,
        seq: u64,
        points: impl Iterator<Item = std::result::Result<Point, shoal_shard::ShardError>>
        + Send
        + 'static,
    ) -> Export {
        let (tx, rx) = mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            let mut frame = Vec::new();
            let mut bytes = 0usize;
            for p in points {
                match p {
                    Ok(p) => {
                        bytes += p.vector.len() * 4 + 64;
                        frame.push(p);
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(ClusterError::from(e)));
                        return;
                    }
                }
                if frame.len() >= FRAME_POINTS || bytes >= FRAME_BYTES {
                    bytes = 0;
                    if tx.blocking_send(Ok(std::mem::take(&mut frame))).is_err() {
                        return; // The reader is gone.
                    }
                }
            }
            if !frame.is_empty() {
                let _ = tx.blocking_send(Ok(frame));
            }
        });
        Export {
            node,
            seq,
            frames: rx,
        }
    }

    /// This export as the frames of the `Export` stream, each encoded.
    pub(crate) fn into_wire(mut self) -> mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let enc = |f: Result<ExportFrame>| crate::wire::encode(&f);
            let Ok(start) = enc(Ok(ExportFrame::Start { seq: self.seq })) else {
                return;
            };
            if tx.send(start).await.is_err() {
                return;
            }
            let mut count = 0u64;
            while let Some(frame) = self.next().await {
                let msg = match frame {
                    Ok(points) => {
                        count += points.len() as u64;
                        enc(Ok(ExportFrame::Points(points)))
                    }
                    Err(e) => {
                        if let Ok(m) = enc(Err(e)) {
                            let _ = tx.send(m).await;
                        }
                        return;
                    }
                };
                let Ok(m) = msg else { return };
                if tx.send(m).await.is_err() {
                    return;
                }
            }
            if let Ok(m) = enc(Ok(ExportFrame::End { points: count })) {
                let _ = tx.send(m).await;
            }
        });
        rx
    }

    /// Reads a peer's `Export` stream: waits for its start frame (or its refusal),
    /// then forwards its points; a stream that ends before its end frame, or whose
    /// count disagrees, ends with an error.
    pub(crate) async fn from_wire(
        node: NodeId,
        mut stream: tonic::Streaming<shoal_proto::internal::v1::Payload>,
        unreachable: impl Fn(String) -> ClusterError + Send + 'static,
    ) -> Result<Export> {
        let decode = |m: shoal_proto::internal::v1::Payload| {
            crate::wire::decode::<Result<ExportFrame>>(&m.payload)?
        };
        let first = match tokio::time::timeout(FRAME_WAIT, stream.message()).await {
            Err(_) => return Err(unreachable("no answer to an export".into())),
            Ok(Err(s)) => return Err(unreachable(s.message().to_string())),
            Ok(Ok(None)) => return Err(unreachable("the export stream ended at once".into())),
            Ok(Ok(Some(m))) => decode(m)?,
        };
        let ExportFrame::Start { seq } = first else {
            return Err(ClusterError::Internal(
                "an export stream without a start".into(),
            ));
        };
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut count = 0u64;
            loop {
                let item = match tokio::time::timeout(FRAME_WAIT, stream.message()).await {
                    Err(_) => Err(unreachable("the export stream stalled".into())),
                    Ok(Err(s)) => Err(unreachable(s.message().to_string())),
                    Ok(Ok(None)) => Err(unreachable("the export stream ended early".into())),
                    Ok(Ok(Some(m))) => match decode(m) {
                        Ok(ExportFrame::Points(p)) => {
                            count += p.len() as u64;
                            Ok(p)
                        }
                        Ok(ExportFrame::End { points }) if points == count => return,
                        Ok(ExportFrame::End { points }) => Err(ClusterError::Internal(format!(
                            "an export of {points} points delivered {count}"
                        ))),
                        Ok(ExportFrame::Start { .. }) => Err(ClusterError::Internal(
                            "a second start in an export stream".into(),
                        )),
                        Err(e) => Err(e),
                    },
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Export {
            node,
            seq,
            frames: rx,
        })
    }
}
