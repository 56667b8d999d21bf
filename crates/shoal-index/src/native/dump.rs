//! Dump format of the native backend: one file, `native.graph`, listed with its
//! checksum in the crate's manifest ([`crate::meta`]).
//!
//! Layout, little-endian: magic `SHOALNAT`, version `u32`, dim `u32`, m `u32`, entry
//! id `u32` and entry level `u32` (`u32::MAX`: no entry), node count `u64`; then per
//! present node in increasing id order: id `u32`, flags `u8` (1: deleted, 2: in the
//! graph), level `u8`, `dim` × `f32`, and for a node in the graph, for each layer
//! `0..=level`, a link count `u32` and that many ids.
//!
//! Reading checks every field (order, flags, levels, list capacities, that every
//! link names another node of the graph on that layer, that the entry point is the
//! top node), so a loaded graph satisfies the store's invariants whatever the bytes.
//!
//! It must never do IO outside the directory it is handed, and never panic on any
//! file content.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::graph::{Graph, MAX_LEVEL};
use crate::meta::{self, Meta};
use crate::{Backend, IndexError, IndexParams, InternalId};

pub(super) const FILE: &str = "native.graph";
const MAGIC: &[u8; 8] = b"SHOALNAT";
const VERSION: u32 = 1;
const DELETED: u8 = 1;
const IN_GRAPH: u8 = 2;

/// Writes the graph into `dir` (which exists and is empty) and its manifest. No
/// insertion or deletion runs meanwhile (the caller holds the gate).
pub(super) fn write(graph: &Graph, params: &IndexParams, dir: &Path) -> Result<(), IndexError> {
    let path = dir.join(FILE);
    let write_file = || -> std::io::Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        let store = &graph.store;
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(params.dim as u32).to_le_bytes())?;
        out.write_all(&(params.m as u32).to_le_bytes())?;
        let (eid, elevel) = graph
            .entry()
            .map_or((0, u32::MAX), |(id, l)| (id, l as u32));
        out.write_all(&eid.to_le_bytes())?;
        out.write_all(&elevel.to_le_bytes())?;
        let mut nodes = Vec::new();
        store.for_each_present(|id, n| nodes.push((id, n)));
        out.write_all(&(nodes.len() as u64).to_le_bytes())?;
        let mut rec = Vec::new();
        for (id, n) in nodes {
            let (deleted, in_graph) = store.flags(n);
            let level = store.level(id);
            rec.clear();
            rec.extend_from_slice(&id.to_le_bytes());
            rec.push((u8::from(deleted) * DELETED) | (u8::from(in_graph) * IN_GRAPH));
            rec.push(level as u8);
            for x in store.vector_of(n) {
                rec.extend_from_slice(&x.to_le_bytes());
            }
            if in_graph {
                for l in 0..=level {
                    let at = rec.len();
                    rec.extend_from_slice(&0u32.to_le_bytes());
                    let mut c = 0u32;
                    for link in graph.links_of(id, l) {
                        rec.extend_from_slice(&link.to_le_bytes());
                        c += 1;
                    }
                    rec[at..at + 4].copy_from_slice(&c.to_le_bytes());
                }
            }
            out.write_all(&rec)?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    write_file().map_err(|e| IndexError::io(&path, e))?;
    meta::write(
        dir,
        &Meta {
            backend: Backend::Native,
            params: *params,
            files: vec![FILE.to_string()],
        },
    )
}

/// A cursor that fails politely at the end of the bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], IndexError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| bad(format!("truncated at byte {}", self.at)))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, IndexError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, IndexError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, IndexError> {
        Ok(u64::from(self.u32()?) | u64::from(self.u32()?) << 32)
    }
}

fn bad(reason: impl std::fmt::Display) -> IndexError {
    IndexError::corrupt(format!("{FILE}: {reason}"))
}

/// Reads a dump into the empty `graph`, checking everything.
pub(super) fn read(graph: &Graph, dir: &Path, meta: &Meta) -> Result<(), IndexError> {
    if !meta.has_file(FILE) {
        return Err(IndexError::corrupt(format!(
            "{FILE} missing from the manifest"
        )));
    }
    let path = dir.join(FILE);
    let bytes = std::fs::read(&path).map_err(|e| IndexError::io(&path, e))?;
    parse(graph, &bytes, meta.params.dim, meta.params.m)
}

/// Parses the bytes of a dump file into the empty `graph`, whose manifest says `dim`
/// and `m`, checking everything.
pub(super) fn parse(graph: &Graph, bytes: &[u8], dim: usize, m: usize) -> Result<(), IndexError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(8)? != MAGIC {
        return Err(bad("missing header"));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(bad(format!("unknown version {version}")));
    }
    let (file_dim, file_m) = (r.u32()? as usize, r.u32()? as usize);
    if file_dim != dim || file_m != m || m != graph.m() {
        return Err(bad(format!(
            "dim {file_dim} / m {file_m}, the manifest says {dim} / {m}"
        )));
    }
    let (entry_id, entry_level) = (r.u32()?, r.u32()?);
    let count = r.u64()?;
    let store = &graph.store;
    // Allocated once the first vector's bytes are known to be there.
    let mut v = Vec::new();
    let vector_bytes = dim
        .checked_mul(4)
        .ok_or_else(|| bad(format!("dimension {dim}")))?;
    let mut last: Option<InternalId> = None;
    // (id, level, links) per layer of every node in the graph, checked once all
    // nodes are known.
    let mut lists: Vec<(InternalId, usize, std::ops::Range<usize>)> = Vec::new();
    let mut links: Vec<InternalId> = Vec::new();
    let mut in_graph = Vec::new();
    let mut top: Option<usize> = None;
    for _ in 0..count {
        let id = r.u32()?;
        if last.is_some_and(|l| id <= l) {
            return Err(bad(format!("ids out of order at {id}")));
        }
        last = Some(id);
        let flags = r.u8()?;
        if flags & !(DELETED | IN_GRAPH) != 0 {
            return Err(bad(format!("bad flags {flags} for node {id}")));
        }
        let level = r.u8()? as usize;
        if level > MAX_LEVEL {
            return Err(bad(format!("level {level} of node {id}")));
        }
        let raw = r.take(vector_bytes)?;
        v.clear();
        v.extend(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        store.restore(id, &v, level, flags & DELETED != 0)?;
        if flags & IN_GRAPH != 0 {
            in_graph.push(id);
            top = top.max(Some(level));
            for l in 0..=level {
                let n = r.u32()? as usize;
                if n > store.cap(l) {
                    return Err(bad(format!("{n} links for node {id} on layer {l}")));
                }
                let start = links.len();
                for _ in 0..n {
                    links.push(r.u32()?);
                }
                lists.push((id, l, start..links.len()));
            }
        }
    }
    if r.at != bytes.len() {
        return Err(bad(format!(
            "{} bytes after the last node",
            bytes.len() - r.at
        )));
    }
    for &id in &in_graph {
        store.set_in_graph(id);
    }
    for (id, l, range) in lists {
        let list = &links[range];
        for &t in list {
            if t == id || !store.in_graph(t) || store.level(t) < l {
                return Err(bad(format!(
                    "node {id} links to {t} on layer {l}, which is not a node of that layer"
                )));
            }
        }
        if !graph.restore_links(id, l, list) {
            return Err(bad(format!("links of node {id} on layer {l} do not fit")));
        }
    }
    let entry = match (top, entry_level) {
        (None, u32::MAX) => None,
        (Some(t), l)
            if l as usize == t && store.in_graph(entry_id) && store.level(entry_id) == t =>
        {
            Some((entry_id, t))
        }
        _ => {
            return Err(bad(format!(
                "entry point {entry_id} at level {entry_level} is not the graph's top node"
            )));
        }
    };
    graph.restore_entry(entry);
    Ok(())
}
