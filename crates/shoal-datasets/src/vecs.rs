//! TEXMEX vector files: `.fvecs` (f32 components) and `.ivecs` (int32 ids).
//!
//! Each record is a little-endian int32 `dim` followed by `dim` little-endian 4-byte
//! values. Readers insist that every record has the same positive `dim`, and report
//! the file and the record number (from 0) of the first bad record.

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::Path;

use crate::DatasetError;

/// Largest `dim` a reader accepts; a bigger one means the file is not what it claims
/// (and would otherwise make us allocate gigabytes for one record).
pub const MAX_DIM: usize = 1 << 20;

/// Reads every vector of an `.fvecs` file.
pub fn read_fvecs(path: &Path) -> Result<Vec<Vec<f32>>, DatasetError> {
    read_fvecs_limit(path, None)
}

/// Reads the first `max` vectors of an `.fvecs` file (all of them when `None`).
pub fn read_fvecs_limit(path: &Path, max: Option<usize>) -> Result<Vec<Vec<f32>>, DatasetError> {
    read_records(path, max, |_record, bytes| {
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("chunk of 4")))
            .collect())
    })
}

/// Reads every row of an `.ivecs` file. Ids must be non-negative.
pub fn read_ivecs(path: &Path) -> Result<Vec<Vec<u32>>, DatasetError> {
    read_ivecs_limit(path, None)
}

/// Reads the first `max` rows of an `.ivecs` file (all of them when `None`).
pub fn read_ivecs_limit(path: &Path, max: Option<usize>) -> Result<Vec<Vec<u32>>, DatasetError> {
    read_records(path, max, |record, bytes| {
        bytes
            .chunks_exact(4)
            .enumerate()
            .map(|(i, c)| {
                let v = i32::from_le_bytes(c.try_into().expect("chunk of 4"));
                u32::try_from(v).map_err(|_| DatasetError::Record {
                    path: path.to_path_buf(),
                    record,
                    reason: format!("value {i} is negative ({v})"),
                })
            })
            .collect()
    })
}

/// Writes vectors as an `.fvecs` file (created or truncated). All vectors must have
/// the same positive length.
pub fn write_fvecs(path: &Path, vectors: &[Vec<f32>]) -> Result<(), DatasetError> {
    write_records(path, vectors, |v, out| {
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
        Ok(())
    })
}

/// Writes rows of ids as an `.ivecs` file (created or truncated). All rows must have
/// the same positive length and every id must fit in an int32.
pub fn write_ivecs(path: &Path, rows: &[Vec<u32>]) -> Result<(), DatasetError> {
    write_records(path, rows, |row, out| {
        for &id in row {
            let v = i32::try_from(id).map_err(|_| format!("id {id} does not fit in an int32"))?;
            out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(())
    })
}

/// Reads up to `max` records, handing each record's value bytes (and its number) to
/// `decode`.
fn read_records<T>(
    path: &Path,
    max: Option<usize>,
    decode: impl Fn(usize, &[u8]) -> Result<Vec<T>, DatasetError>,
) -> Result<Vec<Vec<T>>, DatasetError> {
    let file = File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let bad = |record: usize, reason: String| DatasetError::Record {
        path: path.to_path_buf(),
        record,
        reason,
    };
    let mut out = Vec::new();
    let mut dim: Option<usize> = None;
    let mut buf = Vec::new();
    let max = max.unwrap_or(usize::MAX);
    while out.len() < max {
        let record = out.len();
        let mut head = [0u8; 4];
        match read_full(&mut reader, &mut head).map_err(|e| DatasetError::io(path, e))? {
            0 => break,
            4 => {}
            n => {
                return Err(bad(
                    record,
                    format!("truncated: only {n} of the 4 bytes of the dimension"),
                ));
            }
        }
        let d = i32::from_le_bytes(head);
        let d = usize::try_from(d)
            .ok()
            .filter(|&d| (1..=MAX_DIM).contains(&d))
            .ok_or_else(|| bad(record, format!("invalid dimension {d}")))?;
        if let Some(first) = dim
            && first != d
        {
            return Err(bad(
                record,
                format!("dimension {d} differs from the first record's {first}"),
            ));
        }
        dim = Some(d);
        buf.resize(d * 4, 0);
        let n = read_full(&mut reader, &mut buf).map_err(|e| DatasetError::io(path, e))?;
        if n != buf.len() {
            return Err(bad(
                record,
                format!("truncated: {n} of {} value bytes", buf.len()),
            ));
        }
        out.push(decode(record, &buf)?);
    }
    Ok(out)
}

/// Reads until `buf` is full or the reader ends; returns the number of bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn write_records<T>(
    path: &Path,
    rows: &[Vec<T>],
    encode: impl Fn(&[T], &mut Vec<u8>) -> Result<(), String>,
) -> Result<(), DatasetError> {
    let unwritable = |reason: String| DatasetError::Unwritable {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(first) = rows.first() {
        let d = first.len();
        if d == 0 || d > MAX_DIM {
            return Err(unwritable(format!("dimension {d} is not in 1..={MAX_DIM}")));
        }
        if let Some(i) = rows.iter().position(|r| r.len() != d) {
            return Err(unwritable(format!(
                "row {i} has {} values, row 0 has {d}",
                rows[i].len()
            )));
        }
    }
    let file = File::create(path).map_err(|e| DatasetError::io(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut bytes = Vec::new();
    for row in rows {
        bytes.clear();
        bytes.extend_from_slice(&(row.len() as i32).to_le_bytes());
        encode(row, &mut bytes).map_err(unwritable)?;
        out.write_all(&bytes)
            .map_err(|e| DatasetError::io(path, e))?;
    }
    let file = out
        .into_inner()
        .map_err(|e| DatasetError::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| DatasetError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fvecs_and_ivecs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.fvecs");
        let vs = vec![vec![1.5f32, -2.0, 0.0], vec![f32::MIN_POSITIVE, 3.25, -0.5]];
        write_fvecs(&f, &vs).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 2 * (4 + 3 * 4));
        assert_eq!(read_fvecs(&f).unwrap(), vs);
        assert_eq!(read_fvecs_limit(&f, Some(1)).unwrap(), vs[..1]);
        assert_eq!(
            read_fvecs_limit(&f, Some(0)).unwrap(),
            Vec::<Vec<f32>>::new()
        );

        let i = dir.path().join("a.ivecs");
        let rows = vec![vec![0u32, 7, i32::MAX as u32], vec![3, 2, 1]];
        write_ivecs(&i, &rows).unwrap();
        assert_eq!(read_ivecs(&i).unwrap(), rows);
        assert_eq!(read_ivecs_limit(&i, Some(1)).unwrap(), rows[..1]);

        let empty = dir.path().join("empty.fvecs");
        write_fvecs(&empty, &[]).unwrap();
        assert!(read_fvecs(&empty).unwrap().is_empty());
    }

    #[test]
    fn little_endian_layout() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("le.fvecs");
        std::fs::write(&f, [1, 0, 0, 0, 0, 0, 0x80, 0x3f]).unwrap();
        assert_eq!(read_fvecs(&f).unwrap(), vec![vec![1.0f32]]);
    }

    fn record_error(e: DatasetError) -> (usize, String) {
        match e {
            DatasetError::Record { record, reason, .. } => (record, reason),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_and_inconsistent_files_name_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.fvecs");
        write_fvecs(&f, &[vec![1.0; 4], vec![2.0; 4], vec![3.0; 4]]).unwrap();
        let full = std::fs::read(&f).unwrap();

        std::fs::write(&f, &full[..full.len() - 3]).unwrap();
        let e = read_fvecs(&f).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("t.fvecs") && msg.contains("record 2"), "{msg}");
        let (record, reason) = record_error(e);
        assert_eq!(record, 2);
        assert!(reason.contains("truncated"), "{reason}");
        // The first two records are still readable with a limit.
        assert_eq!(read_fvecs_limit(&f, Some(2)).unwrap().len(), 2);

        // Cut inside the dimension of record 1.
        std::fs::write(&f, &full[..20 + 2]).unwrap();
        assert_eq!(record_error(read_fvecs(&f).unwrap_err()).0, 1);

        let mut bad = full.clone();
        bad[20..24].copy_from_slice(&5i32.to_le_bytes());
        std::fs::write(&f, &bad).unwrap();
        let (record, reason) = record_error(read_fvecs(&f).unwrap_err());
        assert_eq!(record, 1);
        assert!(reason.contains("differs"), "{reason}");

        bad[20..24].copy_from_slice(&(-1i32).to_le_bytes());
        std::fs::write(&f, &bad).unwrap();
        assert_eq!(record_error(read_fvecs(&f).unwrap_err()).0, 1);

        let i = dir.path().join("neg.ivecs");
        let mut bytes = 2i32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&5i32.to_le_bytes());
        bytes.extend_from_slice(&(-3i32).to_le_bytes());
        std::fs::write(&i, &bytes).unwrap();
        let (record, reason) = record_error(read_ivecs(&i).unwrap_err());
        assert_eq!(record, 0);
        assert!(reason.contains("negative"), "{reason}");

        let missing = dir.path().join("missing.fvecs");
        assert!(matches!(read_fvecs(&missing), Err(DatasetError::Io { .. })));
    }

    #[test]
    fn writers_refuse_what_the_format_cannot_hold() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.fvecs");
        assert!(matches!(
            write_fvecs(&f, &[vec![1.0], vec![1.0, 2.0]]),
            Err(DatasetError::Unwritable { .. })
        ));
        assert!(matches!(
            write_fvecs(&f, &[vec![]]),
            Err(DatasetError::Unwritable { .. })
        ));
        let i = dir.path().join("w.ivecs");
        assert!(matches!(
            write_ivecs(&i, &[vec![u32::MAX]]),
            Err(DatasetError::Unwritable { .. })
        ));
    }
}
