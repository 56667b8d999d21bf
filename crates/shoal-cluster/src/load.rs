//! A node's load as it reports it (`Cluster.Status`), for operators and autoscalers:
//! CPU of the process, resident memory, and requests per second through its public
//! API, each over the last sampling period ([`SAMPLE_EVERY`]).
//!
//! Linux only for CPU and memory (`/proc/self`); elsewhere they read 0. It must never
//! block: a sample is a few small file reads on a background task, and a reader only
//! loads atomics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often the load is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// A node's load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Process CPU over the last period, in percent of one core.
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    /// Public-API requests per second over the last period.
    pub requests_per_second: f64,
    /// Points in the replicas the node holds.
    pub points: u64,
    pub replicas: u32,
    /// Replicas it leads.
    pub leaders: u32,
}

/// Counts requests and keeps the latest sample. Cheap to share.
#[derive(Default)]
pub(crate) struct LoadMeter {
    requests: AtomicU64,
    cpu_centi_percent: AtomicU64,
    rss_bytes: AtomicU64,
    rps_centi: AtomicU64,
}

impl LoadMeter {
    /// Counts one public request.
    pub fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// The latest sample (replica counts are the caller's).
    pub fn sample(&self) -> NodeLoad {
        NodeLoad {
            cpu_percent: self.cpu_centi_percent.load(Relaxed) as f64 / 100.0,
            rss_bytes: self.rss_bytes.load(Relaxed),
            requests_per_second: self.rps_centi.load(Relaxed) as f64 / 100.0,
            ..NodeLoad::default()
        }
    }

    /// Samples every [`SAMPLE_EVERY`] while the meter lives.
    pub fn spawn_sampler(meter: &Arc<LoadMeter>) {
        // Resident memory is known from the start (admission control reads it).
        meter.rss_bytes.store(rss_bytes(), Relaxed);
        let weak = Arc::downgrade(meter);
        tokio::spawn(async move {
            let mut last = (Instant::now(), cpu_seconds(), 0u64);
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(m) = weak.upgrade() else { break };
                let now = (Instant::now(), cpu_seconds(), m.requests.load(Relaxed));
                let secs = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
                let cpu = (now.1 - last.1).max(0.0) / secs * 100.0;
                let rps = now.2.saturating_sub(last.2) as f64 / secs;
                m.cpu_centi_percent.store((cpu * 100.0) as u64, Relaxed);
                m.rps_centi.store((rps * 100.0) as u64, Relaxed);
                m.rss_bytes.store(rss_bytes(), Relaxed);
                last = now;
            }
        });
    }
}

/// User + system CPU seconds of this process so far.
pub(crate) fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name may hold spaces: fields count from after its ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let hz = clock_ticks();
    (ticks(11) + ticks(12)) as f64 / hz
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

pub(crate) fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * if page > 0 { page as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_reads_its_own_cpu_and_memory() {
        if !cfg!(target_os = "linux") {
            return;
        }
        // Burn CPU (at most 5 s) until the kernel's counter moves past a tick.
        let before = cpu_seconds();
        let started = Instant::now();
        let mut x = 0u64;
        while cpu_seconds() <= before && started.elapsed() < Duration::from_secs(5) {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
        assert!(cpu_seconds() > before, "the process's CPU time moves");
        assert!(rss_bytes() > 1 << 20);
    }
}
