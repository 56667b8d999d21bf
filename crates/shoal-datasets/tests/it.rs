//! Integration tests of `shoal-datasets` on the real siftsmall files, when present.

use std::path::PathBuf;

use shoal_core::Metric;
use shoal_datasets::{ground_truth, read_fvecs, read_ivecs, recall_at_k};

fn siftsmall() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/siftsmall"
    ));
    if dir.join("siftsmall_base.fvecs").exists() {
        Some(dir)
    } else {
        eprintln!("skipping: siftsmall not found at {}", dir.display());
        None
    }
}

#[test]
fn siftsmall_ground_truth_matches_the_file() {
    let Some(dir) = siftsmall() else { return };
    let base = read_fvecs(&dir.join("siftsmall_base.fvecs")).unwrap();
    let queries = read_fvecs(&dir.join("siftsmall_query.fvecs")).unwrap();
    let truth = read_ivecs(&dir.join("siftsmall_groundtruth.ivecs")).unwrap();
    assert_eq!((base.len(), base[0].len()), (10_000, 128));
    assert_eq!(queries.len(), 100);
    assert_eq!((truth.len(), truth[0].len()), (100, 100));
    assert_eq!(&base[0][..5], &[0.0, 16.0, 35.0, 5.0, 32.0]);

    let computed = ground_truth(&base, &queries, 100, Metric::L2);
    assert_eq!(computed.len(), 100);
    for (q, (c, t)) in computed.iter().zip(&truth).enumerate() {
        assert_eq!(c.len(), 100);
        assert_eq!(c[..10], t[..10], "query {q}");
    }
    assert_eq!(
        computed[0][..10],
        [2176, 3752, 882, 4009, 2837, 190, 3615, 816, 1045, 1884]
    );
    assert_eq!(recall_at_k(&computed, &truth, 10), 1.0);
}
