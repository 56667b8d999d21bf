//! Concurrent single searches of one collection answered as batches
//! ([`SearchCoalescer`]), by the rule of [`Coalescer`]: a lone search runs at once,
//! searches arriving while a batch of their group runs form the next batch.
//!
//! A batch is answered like a `SearchBatch`: one read per shard carrying every query
//! of the batch, one parallel job on the shard's pool, and the per-query top-k merge
//! — on this node's replicas or, in a cluster, one internal call per remote shard
//! instead of one per query. Each search is validated before it queues, so only
//! failures of the read itself, shared by the whole batch, reach every member.

use std::sync::Arc;

use shoal_core::{Error, Result, ScoredPoint, SearchRequest};

use crate::coalesce::{BatchFuture, CoalesceOptions, CoalesceStats, Coalescer};
use crate::database::{Database, PreparedSearch, ReadOptions};
use crate::error::ClusterError;
use crate::load::LoadMeter;
use crate::node::Node;

type Answer = std::result::Result<Vec<ScoredPoint>, ClusterError>;

/// Searches of one collection at one set of read options can share a batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SearchKey {
    collection_id: u64,
    read: ReadOptions,
}

/// Single searches of a node, coalesced (see the module docs). Cheap to share.
pub struct SearchCoalescer {
    db: Arc<Database>,
    load: Option<Arc<LoadMeter>>,
    batches: Coalescer<SearchKey, PreparedSearch, Answer>,
}

impl SearchCoalescer {
    /// Coalesces `node`'s searches with `options` (batches are capped at the node's
    /// `max_search_batch`). Call it inside the tokio runtime that serves the node.
    pub fn new(node: &Node, options: CoalesceOptions) -> Self {
        let db = node.database().clone();
        let runner_db = db.clone();
        let mut me = Self::with_runner(db, options, move |key, batch| {
            let db = runner_db.clone();
            Box::pin(async move { db.run_prepared(&key.read, batch).await })
        });
        me.load = Some(node.load_meter().clone());
        me
    }

    fn with_runner(
        db: Arc<Database>,
        mut options: CoalesceOptions,
        runner: impl Fn(SearchKey, Vec<PreparedSearch>) -> BatchFuture<Answer> + Send + Sync + 'static,
    ) -> Self {
        options.max_batch = options.max_batch.min(db.limits().max_search_batch);
        SearchCoalescer {
            batches: Coalescer::new(options, runner),
            db,
            load: None,
        }
    }

    /// The options in force.
    pub fn options(&self) -> CoalesceOptions {
        self.batches.options()
    }

    /// Counters since start.
    pub fn stats(&self) -> CoalesceStats {
        self.batches.stats()
    }

    /// One search, answered exactly as [`Node::search`] answers it.
    pub async fn search(
        &self,
        name: &str,
        req: SearchRequest,
        read: ReadOptions,
    ) -> Result<Vec<ScoredPoint>> {
        if let Some(load) = &self.load {
            load.request();
        }
        if !self.batches.options().enabled() {
            return Ok(self.db.search(name, req, read).await?);
        }
        let prepared = self.db.prepare_search(name, req, &read).await?;
        let key = SearchKey {
            collection_id: prepared.0.id,
            read,
        };
        match self.batches.submit(key, prepared).await {
            Some(answer) => Ok(answer?),
            None => Err(Error::Internal(
                "a batch of coalesced searches failed; see the server log".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shoal_core::{
        CollectionConfig, Condition, Filter, HnswParams, Metric, Point, PointId, Value,
    };
    use tokio::sync::Semaphore;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// Waits (at most a minute, polling) until `cond` holds.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..60_000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("never saw {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn coalesced_searches_return_exactly_what_direct_searches_return() {
        let dir = tempfile::tempdir().unwrap();
        let node = crate::testing::single_node(dir.path()).await;
        let dim = 8;
        node.create_collection(CollectionConfig {
            name: "c".into(),
            dim,
            metric: Metric::L2,
            shard_count: 2,
            replication_factor: 1,
            hnsw: HnswParams::default(),
        })
        .await
        .unwrap();
        let vector = |i: u64| -> Vec<f32> {
            (0..dim as u64)
                .map(|d| ((i * 31 + d * 17) % 97) as f32 / 97.0)
                .collect()
        };
        let points = (0..3000)
            .map(|i| Point {
                id: PointId::Num(i),
                vector: vector(i),
                payload: [("mod".to_string(), Value::Integer(i as i64 % 2))].into(),
            })
            .collect();
        node.upsert("c", points).await.unwrap();

        // Varied parameters (they travel with each search), and one bad search.
        let even = Filter {
            must: vec![Condition::Integer {
                key: "mod".into(),
                any: vec![0],
            }],
            ..Filter::default()
        };
        let requests: Vec<SearchRequest> = (0..48u64)
            .map(|i| SearchRequest {
                vector: if i == 13 {
                    vec![1.0; 3]
                } else {
                    vector(i * 7 + 5000)
                },
                top_k: 1 + (i % 12) as u32,
                ef: Some([16, 32, 64][i as usize % 3]),
                filter: (i % 5 == 0).then(|| even.clone()),
                with_payload: i % 2 == 0,
                with_vector: i % 3 == 0,
            })
            .collect();
        let read = ReadOptions::default();
        let mut direct = Vec::new();
        for r in &requests {
            direct.push(node.search("c", r.clone(), read.clone()).await);
        }
        assert!(direct[13].is_err() && direct.iter().filter(|r| r.is_ok()).count() == 47);

        // The first batch is held until every other search queued behind it, so the
        // rest are answered in full batches of 8.
        let gate = Arc::new(Semaphore::new(0));
        let (runner_db, runner_gate) = (node.database().clone(), gate.clone());
        let coalescer = Arc::new(SearchCoalescer::with_runner(
            node.database().clone(),
            CoalesceOptions {
                window: HOUR,
                max_batch: 8,
            },
            move |key, batch| {
                let (db, gate) = (runner_db.clone(), runner_gate.clone());
                Box::pin(async move {
                    drop(gate.acquire().await);
                    db.run_prepared(&key.read, batch).await
                })
            },
        ));
        let first = tokio::spawn({
            let (c, r) = (coalescer.clone(), requests[0].clone());
            async move { c.search("c", r, ReadOptions::default()).await }
        });
        until("the first batch", || coalescer.stats().batches > 0).await;
        let rest: Vec<_> = requests[1..]
            .iter()
            .map(|r| {
                let (c, r) = (coalescer.clone(), r.clone());
                tokio::spawn(async move { c.search("c", r, ReadOptions::default()).await })
            })
            .collect();
        let mut got = vec![first];
        got.extend(rest);
        gate.add_permits(1_000);
        for (i, (t, want)) in got.into_iter().zip(&direct).enumerate() {
            assert_eq!(&t.await.unwrap(), want, "search {i}");
        }
        let stats = coalescer.stats();
        assert_eq!(stats.queries, 47, "{stats:?}");
        assert_eq!(stats.largest, 8, "{stats:?}");
        node.shutdown().await.unwrap();
    }
}
