//! Snapshot data on disk.
//!
//! openraft moves a snapshot as a seekable byte stream (`TypeConfig::SnapshotData`,
//! here a [`tokio::fs::File`]) and sends it to a follower in chunks read from that
//! stream. A shard's snapshot is written to a file in the node's snapshot directory
//! as frames of points ([`CHUNK`] at a time), so neither building, sending nor
//! receiving one ever holds a whole shard in memory; only installing it does, because
//! the shard replaces its contents in one atomic batch.
//!
//! Frame: `u32` little-endian length, then a postcard `Vec<Point>` of that length.
//! A file is a sequence of frames; an empty shard is an empty file. The metadata
//! group's snapshots (a few kilobytes) use the same file type, unnamed.
//!
//! Files are derived data: a built snapshot's file lives while it is the group's
//! current snapshot, received ones are unnamed and vanish when closed, and the node
//! empties the snapshot directory when it starts.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use shoal_core::Point;

use crate::RaftStoreError;

/// Points per frame.
pub(crate) const CHUNK: usize = 1024;

/// A frame larger than this is corrupt (a frame holds [`CHUNK`] points, each within
/// the server's limits on dimension and payload).
const MAX_FRAME: usize = 1 << 30;

/// Writes frames of points.
pub(crate) struct FrameWriter<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> FrameWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        FrameWriter {
            out: BufWriter::with_capacity(1 << 20, out),
        }
    }

    pub(crate) fn write(&mut self, points: &[Point]) -> Result<(), RaftStoreError> {
        let frame = postcard::to_stdvec(points)?;
        self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.out.write_all(&frame)?;
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<W, RaftStoreError> {
        self.out
            .into_inner()
            .map_err(|e| RaftStoreError::Io(e.into_error()))
    }
}

/// Reads every point of a sequence of frames. Memory grows with the bytes read, never
/// with a length a frame merely claims.
pub fn read_points(input: impl Read) -> Result<Vec<Point>, RaftStoreError> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let mut points = Vec::new();
    let mut frame = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(points),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(RaftStoreError::Corrupt(format!(
                "snapshot frame of {len} bytes"
            )));
        }
        frame.clear();
        (&mut input).take(len as u64).read_to_end(&mut frame)?;
        if frame.len() != len {
            return Err(RaftStoreError::Corrupt(format!(
                "snapshot frame of {len} bytes cut at {}",
                frame.len()
            )));
        }
        let chunk: Vec<Point> = postcard::from_bytes(&frame)?;
        points.extend(chunk);
    }
}

/// An unnamed file in `dir` (removed by the system when closed), for a received
/// snapshot or a small one built in memory.
pub(crate) fn unnamed(dir: Option<&Path>) -> Result<std::fs::File, RaftStoreError> {
    Ok(match dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempfile_in(d)?
        }
        None => tempfile::tempfile()?,
    })
}

/// An unnamed file holding `bytes`, positioned at its start.
pub(crate) fn of_bytes(bytes: &[u8]) -> Result<tokio::fs::File, RaftStoreError> {
    use std::io::Seek;
    let mut f = unnamed(None)?;
    f.write_all(bytes)?;
    f.rewind()?;
    Ok(tokio::fs::File::from_std(f))
}

/// Reads a whole (small) snapshot stream.
pub(crate) async fn read_all(mut f: tokio::fs::File) -> Result<Vec<u8>, RaftStoreError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    f.rewind().await?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).await?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::PointId;

    fn p(id: u64) -> Point {
        Point {
            id: PointId::Num(id),
            vector: vec![id as f32, 1.0],
            payload: Default::default(),
        }
    }

    #[test]
    fn frames_round_trip_and_damage_is_an_error() {
        let points: Vec<Point> = (0..2500).map(p).collect();
        let mut w = FrameWriter::new(Vec::new());
        for c in points.chunks(CHUNK) {
            w.write(c).unwrap();
        }
        let bytes = w.finish().unwrap();
        assert_eq!(read_points(&bytes[..]).unwrap(), points);
        assert!(read_points(&[][..]).unwrap().is_empty(), "an empty shard");
        // Cut inside a frame: an error, never a silently shorter shard.
        assert!(read_points(&bytes[..bytes.len() - 3]).is_err());
        // An absurd length is refused before allocating it.
        assert!(read_points(&[0xff, 0xff, 0xff, 0xff, 0][..]).is_err());
    }
}
