//! The engine: collection catalogue, routing, scatter-gather.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use rayon::prelude::*;
use shoal_core::{
    CollectionConfig, Error, Filter, Limits, Metric, Point, PointId, Result, RetrievedPoint,
    ScoredPoint, SearchRequest, routing, validate,
};
use shoal_shard::{Shard, ShardOptions, ShardStats};
use shoal_storage::{CollectionRecord, Store};

/// How to open an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub data_dir: PathBuf,
    pub limits: Limits,
    pub shard: ShardOptions,
    /// Threads of the search pool (0: one per core).
    pub search_threads: usize,
}

/// A collection's configuration and per-shard counters.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    pub config: CollectionConfig,
    pub points: u64,
    pub shards: Vec<ShardStats>,
}

struct Collection {
    config: Arc<CollectionConfig>,
    shards: Vec<Shard>,
    /// Writes hold it shared; deletion takes it exclusively and clears it, so no write
    /// lands in a collection being deleted.
    alive: RwLock<bool>,
}

impl Collection {
    fn info(&self) -> CollectionInfo {
        let shards: Vec<ShardStats> = self.shards.iter().map(Shard::stats).collect();
        CollectionInfo {
            config: (*self.config).clone(),
            points: shards.iter().map(|s| s.points).sum(),
            shards,
        }
    }
}

/// One node's database.
pub struct Engine {
    store: Store,
    limits: Limits,
    shard_options: ShardOptions,
    pool: Arc<rayon::ThreadPool>,
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    /// Serialises collection creation and deletion.
    ddl: parking_lot::Mutex<()>,
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

/// Orders hits best first for `metric`, ties by id so results are deterministic.
fn compare_hits(metric: Metric, a: &ScoredPoint, b: &ScoredPoint) -> Ordering {
    let by_score = if metric.higher_is_better() {
        b.score.total_cmp(&a.score)
    } else {
        a.score.total_cmp(&b.score)
    };
    by_score.then_with(|| a.id.cmp(&b.id))
}

impl Engine {
    /// Opens the data directory (creating it if needed) and rebuilds every shard's
    /// in-memory state, shards in parallel.
    pub fn open(options: EngineOptions) -> Result<Engine> {
        std::fs::create_dir_all(&options.data_dir).map_err(|e| {
            internal(format!(
                "cannot create data directory {}: {e}",
                options.data_dir.display()
            ))
        })?;
        let store = Store::open(&options.data_dir)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.search_threads)
            .thread_name(|i| format!("shoal-search-{i}"))
            // A panic in a job must not abort the node: the job's caller sees its
            // result channel closed and answers INTERNAL.
            .panic_handler(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %msg, "search job panicked");
            })
            .build()
            .map(Arc::new)
            .map_err(internal)?;
        let engine = Engine {
            store,
            limits: options.limits,
            shard_options: options.shard,
            pool,
            collections: RwLock::new(BTreeMap::new()),
            ddl: parking_lot::Mutex::new(()),
        };
        let started = std::time::Instant::now();
        let records = engine.store.collections()?;
        let mut total = 0;
        for record in records {
            let collection = engine.open_collection(&record)?;
            let points = collection.info().points;
            total += points;
            tracing::info!(collection = %record.config.name, points, "collection loaded");
            engine
                .collections
                .write()
                .insert(record.config.name.clone(), Arc::new(collection));
        }
        tracing::info!(
            points = total,
            secs = started.elapsed().as_secs_f64(),
            "engine open"
        );
        Ok(engine)
    }

    fn open_collection(&self, record: &CollectionRecord) -> Result<Collection> {
        let config = Arc::new(record.config.clone());
        let shards = self.pool.install(|| {
            (0..config.shard_count)
                .into_par_iter()
                .map(|s| {
                    let store = self.store.shard(record, s)?;
                    Ok(Shard::open(
                        config.clone(),
                        s,
                        store,
                        self.shard_options.clone(),
                        self.pool.clone(),
                    )?)
                })
                .collect::<Result<Vec<Shard>>>()
        })?;
        Ok(Collection {
            config,
            shards,
            alive: RwLock::new(true),
        })
    }

    /// The request limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The pool searches (and index builds) run on.
    pub fn pool(&self) -> &rayon::ThreadPool {
        &self.pool
    }

    /// Saves an index checkpoint of every shard with writes since its last one, so
    /// the next start skips rebuilding graphs. Blocks each shard's writes while it runs.
    pub fn checkpoint_all(&self) -> Result<()> {
        let all: Vec<Arc<Collection>> = self.collections.read().values().cloned().collect();
        for c in all {
            let alive = c.alive.read();
            if *alive {
                for s in &c.shards {
                    s.checkpoint()?;
                }
            }
        }
        Ok(())
    }

    /// Number of fsyncs issued so far.
    pub fn fsyncs(&self) -> u64 {
        self.store.fsyncs()
    }

    fn get_collection(&self, name: &str) -> Result<Arc<Collection>> {
        validate::collection_name(name)?;
        self.collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("collection {name:?}")))
    }

    /// Creates a collection (durably).
    pub fn create_collection(&self, config: CollectionConfig) -> Result<CollectionInfo> {
        validate::collection_config(&config, &self.limits)?;
        let _ddl = self.ddl.lock();
        if self.collections.read().contains_key(&config.name) {
            return Err(Error::AlreadyExists(format!(
                "collection {:?}",
                config.name
            )));
        }
        if self.collections.read().len() >= self.limits.max_collections {
            return Err(Error::exhausted(
                "name",
                format!(
                    "this node holds the maximum of {} collections",
                    self.limits.max_collections
                ),
            ));
        }
        let record = self.store.create_collection(config)?;
        let collection = Arc::new(self.open_collection(&record)?);
        let info = collection.info();
        self.collections
            .write()
            .insert(record.config.name.clone(), collection);
        Ok(info)
    }

    /// Deletes a collection and its points (durably).
    pub fn delete_collection(&self, name: &str) -> Result<()> {
        let _ddl = self.ddl.lock();
        let collection = self.get_collection(name)?;
        let mut alive = collection.alive.write();
        self.store.delete_collection(name)?;
        *alive = false;
        self.collections.write().remove(name);
        Ok(())
    }

    /// Describes one collection.
    pub fn collection(&self, name: &str) -> Result<CollectionInfo> {
        Ok(self.get_collection(name)?.info())
    }

    /// Describes every collection, by name.
    pub fn list_collections(&self) -> Vec<CollectionInfo> {
        let all: Vec<Arc<Collection>> = self.collections.read().values().cloned().collect();
        all.iter().map(|c| c.info()).collect()
    }

    /// Runs `f` on a live collection with deletion held off.
    fn write_to<T>(&self, name: &str, f: impl FnOnce(&Collection) -> Result<T>) -> Result<T> {
        let collection = self.get_collection(name)?;
        let alive = collection.alive.read();
        if !*alive {
            return Err(Error::NotFound(format!("collection {name:?}")));
        }
        f(&collection)
    }

    /// Validates and writes points; returns once they are durable. Blocks on fsync:
    /// call from a blocking thread, never from a thread of [`Engine::pool`].
    pub fn upsert(&self, name: &str, points: Vec<Point>) -> Result<u64> {
        self.write_to(name, |c| {
            let points = validate::upsert(&c.config, points, &self.limits)?;
            let n = points.len() as u64;
            let mut by_shard: Vec<Vec<Point>> = vec![Vec::new(); c.shards.len()];
            for p in points {
                by_shard[routing::shard_of(&p.id, c.config.shard_count) as usize].push(p);
            }
            let mut last = None;
            for (shard, points) in c.shards.iter().zip(by_shard) {
                if !points.is_empty() {
                    // On the caller's thread, never on the pool: see `Shard::upsert`.
                    last = Some(shard.upsert(points)?);
                }
            }
            // Tickets are ordered node-wide: syncing the last covers every shard's batch.
            if let Some(t) = last {
                c.shards[0].sync(t)?;
            }
            Ok(n)
        })
    }

    /// Deletes points by id; returns once durable.
    pub fn delete_points(&self, name: &str, ids: Vec<PointId>) -> Result<u64> {
        self.write_to(name, |c| {
            let ids = validate::ids(ids, &self.limits)?;
            let n = ids.len() as u64;
            let mut by_shard: Vec<Vec<PointId>> = vec![Vec::new(); c.shards.len()];
            for id in ids {
                by_shard[routing::shard_of(&id, c.config.shard_count) as usize].push(id);
            }
            let mut last = None;
            for (shard, ids) in c.shards.iter().zip(by_shard) {
                if !ids.is_empty() {
                    last = Some(shard.delete(ids)?);
                }
            }
            if let Some(t) = last {
                c.shards[0].sync(t)?;
            }
            Ok(n)
        })
    }

    /// Points by id, in the order asked; missing ids are left out.
    pub fn get(
        &self,
        name: &str,
        ids: Vec<PointId>,
        with_payload: bool,
        with_vector: bool,
    ) -> Result<Vec<RetrievedPoint>> {
        let c = self.get_collection(name)?;
        let ids = validate::ids(ids, &self.limits)?;
        Ok(ids
            .iter()
            .filter_map(|id| {
                let shard = &c.shards[routing::shard_of(id, c.config.shard_count) as usize];
                shard
                    .get(std::slice::from_ref(id), with_payload, with_vector)
                    .pop()
            })
            .collect())
    }

    /// One search.
    pub fn search(&self, name: &str, req: SearchRequest) -> Result<Vec<ScoredPoint>> {
        let c = self.get_collection(name)?;
        let req = validate::search(&c.config, "", req, &self.limits)?;
        let mut out = self.run_searches(&c, &[req]);
        Ok(out.pop().unwrap_or_default())
    }

    /// Many searches, as one parallel job over (query × shard).
    pub fn search_batch(
        &self,
        name: &str,
        reqs: Vec<SearchRequest>,
    ) -> Result<Vec<Vec<ScoredPoint>>> {
        let c = self.get_collection(name)?;
        validate::search_batch_len(reqs.len(), &self.limits)?;
        let reqs = reqs
            .into_iter()
            .enumerate()
            .map(|(i, r)| validate::search(&c.config, &format!("searches[{i}]"), r, &self.limits))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.run_searches(&c, &reqs))
    }

    fn run_searches(&self, c: &Collection, reqs: &[SearchRequest]) -> Vec<Vec<ScoredPoint>> {
        let ns = c.shards.len();
        let per_shard: Vec<Vec<ScoredPoint>> = self.pool.install(|| {
            (0..reqs.len() * ns)
                .into_par_iter()
                .map(|j| c.shards[j % ns].search(&reqs[j / ns]))
                .collect()
        });
        let metric = c.config.metric;
        let mut per_shard = per_shard.into_iter();
        reqs.iter()
            .map(|r| {
                let mut merged: Vec<ScoredPoint> = per_shard.by_ref().take(ns).flatten().collect();
                if ns > 1 {
                    merged.sort_by(|a, b| compare_hits(metric, a, b));
                }
                merged.truncate(r.top_k as usize);
                merged
            })
            .collect()
    }

    /// A page of points in id order from `offset` (inclusive), and the offset of the
    /// next page if there is one.
    pub fn scroll(
        &self,
        name: &str,
        offset: Option<PointId>,
        limit: u32,
        filter: Option<Filter>,
        with_payload: bool,
        with_vector: bool,
    ) -> Result<(Vec<RetrievedPoint>, Option<PointId>)> {
        let c = self.get_collection(name)?;
        validate::scroll_limit(limit, &self.limits)?;
        if let Some(f) = &filter {
            validate::filter("filter", f)?;
        }
        let limit = limit as usize;
        let mut all: Vec<RetrievedPoint> = self.pool.install(|| {
            c.shards
                .par_iter()
                .flat_map_iter(|s| {
                    s.scroll(
                        offset,
                        limit + 1,
                        filter.as_ref(),
                        with_payload,
                        with_vector,
                    )
                })
                .collect()
        });
        all.sort_by_key(|p| p.id);
        let next = all.get(limit).map(|p| p.id);
        all.truncate(limit);
        Ok((all, next))
    }

    /// Number of points, optionally matching a filter.
    pub fn count(&self, name: &str, filter: Option<Filter>) -> Result<u64> {
        let c = self.get_collection(name)?;
        if let Some(f) = &filter {
            validate::filter("filter", f)?;
        }
        Ok(self
            .pool
            .install(|| c.shards.par_iter().map(|s| s.count(filter.as_ref())).sum()))
    }
}
