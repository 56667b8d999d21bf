//! The `shoal` command line against a running node: collection commands, JSON-lines
//! import, filtered search, count, one-line errors, and the `bench` load generator.

use std::process::Command;

use crate::*;

fn shoal(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .arg("--addr")
        .arg(url)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run shoal");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_commands_and_bench() {
    let tmp = tempfile::tempdir().unwrap();
    let node = shoal_tests::Node::start(binary(), &tmp.path().join("data"), &[]);
    let url = node.url.as_str();

    let (ok, out, err) = shoal(
        url,
        &[
            "collection",
            "create",
            "docs",
            "--dim",
            "3",
            "--metric",
            "COSINE",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("docs: dim=3 metric=COSINE"), "{out}");
    let jsonl = tmp.path().join("docs.jsonl");
    std::fs::write(
        &jsonl,
        concat!(
            r#"{"id": 1, "vector": [0.1, 0.9, 0.0], "payload": {"lang": "en", "year": 2021}}"#, "\n",
            r#"{"id": "67e55044-10b1-426f-9247-bb680e5fe0c8", "vector": [0.8, 0.1, 0.1], "payload": {"lang": "de", "year": 2024}}"#, "\n",
            r#"{"id": 3, "vector": [0.2, 0.7, 0.1], "payload": {"lang": "en", "year": 2019}}"#, "\n",
        ),
    )
    .unwrap();
    let (ok, out, err) = shoal(url, &["import", "docs", jsonl.to_str().unwrap()]);
    assert!(ok && out.contains("imported 3 points"), "{out}{err}");

    let filter = r#"{"must": [{"key": "lang", "keyword": ["en"]}, {"key": "year", "range": {"gte": 2020}}]}"#;
    let (ok, out, err) = shoal(
        url,
        &[
            "search",
            "docs",
            "--vector",
            "0.2,0.8,0",
            "--with-payload",
            "--filter",
            filter,
        ],
    );
    assert!(ok, "{err}");
    let hits: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(hits.len(), 1, "{out}");
    assert!(
        hits[0].starts_with("1\t") && hits[0].contains(r#""year":2021"#),
        "{out}"
    );
    let (_, out, _) = shoal(
        url,
        &[
            "count",
            "docs",
            "--filter",
            r#"{"must": [{"key": "lang", "keyword": ["en"]}]}"#,
        ],
    );
    assert_eq!(out.trim(), "2");
    let (ok, out, err) = shoal(url, &["count", "docs", "--consistency", "strong"]);
    assert!(ok && out.trim() == "3", "{out}{err}");
    let (ok, out, err) = shoal(url, &["cluster", "status", "--digests"]);
    assert!(
        ok && out.contains("node 1") && out.contains("reachable"),
        "{out}{err}"
    );
    assert_eq!(
        out.lines().last(),
        Some("replica digests agree for every shard (1 shard)"),
        "{out}"
    );

    // Errors are one line naming the problem, with a failing exit code.
    let (ok, _, err) = shoal(url, &["search", "docs", "--vector", "1,2"]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: InvalidArgument: vector:"), "{err}");
    let (ok, _, err) = shoal(url, &["count", "nope"]);
    assert!(!ok && err.contains("NotFound"), "{err}");

    // The load generator on a collection filled elsewhere, with a payload filter on
    // every search. The first query's nearest point is the "de" one (not counted:
    // not a numeric id); among the "en" points it is 3, which the filtered ground
    // truth names, so recall 1.0 means the filter reached every search.
    let (queries, truth) = (tmp.path().join("q.fvecs"), tmp.path().join("gt.ivecs"));
    shoal_datasets::write_fvecs(&queries, &[vec![0.8, 0.1, 0.1], vec![0.1, 0.9, 0.0]]).unwrap();
    shoal_datasets::write_ivecs(&truth, &[vec![3], vec![1]]).unwrap();
    let report = tmp.path().join("existing.json");
    let existing = |filter: &str| {
        shoal(
            url,
            &[
                "bench",
                "--existing",
                "--collection",
                "docs",
                "--queries",
                queries.to_str().unwrap(),
                "--ground-truth",
                truth.to_str().unwrap(),
                "--top-k",
                "1",
                "--ef",
                "8",
                "--concurrency",
                "1,2",
                "--seconds",
                "0.1",
                "--filter",
                filter,
                "--out",
                report.to_str().unwrap(),
            ],
        )
    };
    let (ok, out, err) = existing(r#"{"must": [{"key": "lang", "keyword": ["en"]}]}"#);
    assert!(ok, "{out}{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        (r["n"].as_u64(), r["metric"].as_str()),
        (Some(3), Some("COSINE"))
    );
    assert!(r["ingest_points_per_second"].is_null(), "{r}");
    for l in r["levels"].as_array().unwrap() {
        assert_eq!(l["recall"].as_f64(), Some(1.0), "{l}");
    }
    // The same searches under a filter the ground truth does not describe miss.
    let (ok, out, err) = existing(r#"{"must": [{"key": "lang", "keyword": ["de"]}]}"#);
    assert!(ok, "{out}{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["levels"][0]["recall"].as_f64(), Some(0.0), "{r}");
    // Nothing was written or removed; a filter needs --existing; a missing
    // collection is named.
    let (ok, out, _) = shoal(url, &["count", "docs"]);
    assert!(ok && out.trim() == "3", "{out}");
    let (ok, _, err) = shoal(url, &["bench", "--filter", "{}"]);
    assert!(!ok && err.contains("--existing"), "{err}");
    let (ok, _, err) = shoal(
        url,
        &[
            "bench",
            "--existing",
            "--collection",
            "nope",
            "--queries",
            queries.to_str().unwrap(),
            "--ground-truth",
            truth.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && err.contains("NotFound") && err.contains("nope"),
        "{err}"
    );

    // The load generator: a small synthetic run, with its report and cleanup.
    let report = tmp.path().join("bench.json");
    let (ok, out, err) = shoal(
        url,
        &[
            "bench",
            "--n",
            "3000",
            "--dim",
            "16",
            "--n-queries",
            "40",
            "--ef",
            "32",
            "--concurrency",
            "1,4",
            "--seconds",
            "0.2",
            "--shards",
            "2",
            "--out",
            report.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["n"], 3000);
    let levels = r["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    for l in levels {
        assert!(
            l["queries"].as_u64().unwrap() >= 40,
            "every query runs at least once: {l}"
        );
        assert!(l["recall"].as_f64().unwrap() >= 0.95, "{l}");
        assert!(l["qps"].as_f64().unwrap() > 0.0);
    }

    // SearchBatch requests, and the chart.
    let (chart, csv) = (tmp.path().join("chart.png"), tmp.path().join("bench.csv"));
    let (ok, out, err) = shoal(
        url,
        &[
            "bench",
            "--n",
            "2000",
            "--dim",
            "16",
            "--n-queries",
            "40",
            "--ef",
            "16,32",
            "--concurrency",
            "1,2",
            "--seconds",
            "0.2",
            "--batch-size",
            "7",
            "--plot",
            chart.to_str().unwrap(),
            "--out",
            csv.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    let csv = std::fs::read_to_string(&csv).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for r in &rows {
        assert_eq!(r[col("batch_size")], "7", "{csv}");
        assert!(r[col("queries")].parse::<u64>().unwrap() >= 40, "{csv}");
        assert!(r[col("recall")].parse::<f64>().unwrap() >= 0.95, "{csv}");
    }
    // A PNG: signature, a 960 × 640 header first, an end chunk last.
    let png = std::fs::read(&chart).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    assert_eq!((be(&png[16..20]), be(&png[20..24])), (960, 640));
    assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");

    let (_, out, _) = shoal(url, &["collection", "list"]);
    assert!(
        !out.contains("shoal-bench"),
        "the bench collection is removed: {out}"
    );
}
