use std::io::Write;

use shoal_core::{CollectionConfig, HnswParams, Metric, Point, PointId, Value};

use crate::{Backup, BackupError, BackupStore, BackupWriter, pack};

fn config(name: &str) -> CollectionConfig {
    CollectionConfig {
        name: name.into(),
        dim: 3,
        metric: Metric::L2,
        shard_count: 2,
        replication_factor: 1,
        hnsw: HnswParams::default(),
    }
}

fn points(range: std::ops::Range<u64>) -> Vec<Point> {
    range
        .map(|i| Point {
            id: PointId::Num(i),
            vector: vec![i as f32, 1.0, -2.5],
            payload: [("n".to_string(), Value::Integer(i as i64))].into(),
        })
        .collect()
}

/// Writes backup `name` with collection "docs": shard 0 holds 0..250 in frames of
/// 100, shard 1 holds nothing.
fn write(store: &BackupStore, name: &str) {
    let mut w = BackupWriter::begin(store, name).unwrap();
    w.collection(config("docs"), 3).unwrap();
    let mut f = w.shard(0, 0, u64::MAX / 2).unwrap();
    for chunk in points(0..250).chunks(100) {
        f.write(chunk).unwrap();
    }
    let e = f.finish(41).unwrap();
    w.add(e).unwrap();
    let f = w.shard(1, u64::MAX / 2 + 1, u64::MAX).unwrap();
    let e = f.finish(7).unwrap();
    w.add(e).unwrap();
    w.finish("test").unwrap();
}

fn read_all(b: &Backup) -> Vec<Point> {
    let c = &b.manifest().collections[0];
    c.shards
        .iter()
        .flat_map(|s| b.points(s).unwrap())
        .flat_map(|f| f.unwrap())
        .collect()
}

#[test]
fn a_backup_reads_back_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = BackupStore::open(dir.path()).unwrap();
    write(&store, "b1");
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    let m = &listed[0];
    assert_eq!((m.name.as_str(), m.points()), ("b1", 250));
    assert_eq!(m.collections[0].routing_version, 3);
    assert_eq!(m.collections[0].shards[0].applied_index, 41);
    let b = store.open_backup("b1").unwrap();
    assert_eq!(read_all(&b), points(0..250));
    // The name is taken now.
    assert!(matches!(
        BackupWriter::begin(&store, "b1"),
        Err(BackupError::Exists(_))
    ));
    store.delete("b1").unwrap();
    assert!(matches!(store.get("b1"), Err(BackupError::NotFound(_))));
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn an_unfinished_backup_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = BackupStore::open(dir.path()).unwrap();
    {
        let mut w = BackupWriter::begin(&store, "half").unwrap();
        w.collection(config("docs"), 1).unwrap();
        let mut f = w.shard(0, 0, u64::MAX).unwrap();
        f.write(&points(0..10)).unwrap();
    }
    assert!(store.list().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_corrupted_or_truncated_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = BackupStore::open(dir.path()).unwrap();
    write(&store, "b");
    let file = store.path("b").join("collections/docs/shard-0.points");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let e = store.open_backup("b").unwrap_err();
    match &e {
        BackupError::Corrupt { file, reason } => {
            assert_eq!(file, "collections/docs/shard-0.points");
            assert!(reason.contains("SHA-256"), "{reason}");
        }
        e => panic!("{e}"),
    }
    bytes.truncate(mid);
    std::fs::write(&file, &bytes).unwrap();
    let e = store.open_backup("b").unwrap_err().to_string();
    assert!(
        e.contains("collections/docs/shard-0.points") && e.contains("truncated"),
        "{e}"
    );
    std::fs::remove_file(&file).unwrap();
    let e = store.open_backup("b").unwrap_err().to_string();
    assert!(e.contains("shard-0.points: missing"), "{e}");
}

#[test]
fn a_packed_backup_unpacks_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = BackupStore::open(&dir.path().join("a")).unwrap();
    write(&store, "b");
    let mut tar = Vec::new();
    pack(&store.path("b"), &mut tar).unwrap();

    let other = BackupStore::open(&dir.path().join("b")).unwrap();
    let got = other.receive(&tar[..]).unwrap();
    assert_eq!(got.manifest(), &store.get("b").unwrap());
    assert_eq!(read_all(&got), points(0..250));
    let tmp = got.dir().to_path_buf();
    drop(got);
    assert!(!tmp.exists(), "an upload is removed when dropped");

    // Truncated anywhere: refused, and nothing left behind.
    for cut in [10, 700, tar.len() / 2, tar.len() - 1500] {
        let e = other.receive(&tar[..cut]).unwrap_err();
        assert!(
            matches!(e, BackupError::Archive(_) | BackupError::Corrupt { .. }),
            "cut at {cut}: {e}"
        );
    }
    // A flipped byte in a shard file's data.
    let mut bad = tar.clone();
    let at = bad.len() - 3000;
    bad[at] ^= 1;
    let e = other.receive(&bad[..]).unwrap_err().to_string();
    assert!(e.contains("shard-0.points"), "{e}");
    assert_eq!(std::fs::read_dir(other.dir()).unwrap().count(), 0);
}

#[test]
fn an_archive_with_foreign_paths_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = BackupStore::open(dir.path()).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let data = b"hello";
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, "collections/docs/evil.sh", &data[..])
        .unwrap();
    let mut bytes = tar.into_inner().unwrap();
    bytes.flush().unwrap();
    let e = store.receive(&bytes[..]).unwrap_err().to_string();
    assert!(e.contains("unexpected entry"), "{e}");
}

#[test]
fn names_and_manifests_are_checked() {
    assert!(crate::validate_name("nightly-2026_12").is_ok());
    for bad in ["", "a/b", "..", "a b", &"x".repeat(129)] {
        assert!(crate::validate_name(bad).is_err(), "{bad:?}");
    }
    let e = crate::Manifest::parse(br#"{"format":"other"}"#).unwrap_err();
    assert!(matches!(e, BackupError::Unsupported(_)), "{e}");
    let e =
        crate::Manifest::parse(br#"{"format":"shoal-backup","format_version":99}"#).unwrap_err();
    assert!(e.to_string().contains("format_version"), "{e}");
}
