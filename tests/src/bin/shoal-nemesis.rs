//! The nemesis suite's long soak (issue 14): the same run as the CI test
//! `nemesis::a_short_seeded_nemesis_run_loses_nothing_and_stays_linearizable`, for
//! as long as asked, then the summary table (faults by kind, operations by outcome,
//! lost, violations, stall and heal figures per fault kind, hangs). Needs root.
//!
//! ```text
//! shoal-nemesis [--duration 30m] [--seed N] [--out DIR] [--bin PATH]
//! ```
//! `--bin`: the `shoal` executable (default: `shoal-node` beside this binary, the
//! test build with failpoints compiled in and off). `--out`: logs, the history
//! (`history.txt`), the report (`report.txt`) and thread dumps of hung nodes. Exit
//! status 0 when the checkers found nothing, 1 otherwise, 2 if the run could not be
//! made.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use shoal_tests::nemesis::{self, Config, FaultKind, RunError};

#[derive(Parser)]
#[command(about = "Fault injection against a three-node Shoal cluster, with checkers")]
struct Args {
    /// How long the nemesis injects faults: `90s`, `30m`, `1h` (or seconds).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the nemesis's and the clients' choices.
    #[arg(long, default_value_t = 14)]
    seed: u64,
    /// Output directory (created).
    #[arg(long, default_value = "nemesis-out")]
    out: PathBuf,
    /// The `shoal` executable.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Keep the nodes' data directories (under OUT/data).
    #[arg(long)]
    keep_data: bool,
    /// A node silent for longer than this many seconds (while neither killed nor
    /// paused) counts as a hang.
    #[arg(long, default_value_t = 15)]
    hang_after_s: u64,
    /// Only these kinds of fault, comma-separated (default: all): kill-leader,
    /// kill-node, kill-all, pause, partition, partition-meta-leader, disk-full.
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    faults: Vec<FaultKind>,
}

fn parse_kind(s: &str) -> Result<FaultKind, String> {
    FaultKind::ALL
        .into_iter()
        .find(|k| k.flag() == s)
        .ok_or_else(|| {
            let names: Vec<_> = FaultKind::ALL.iter().map(|k| k.flag()).collect();
            format!("unknown fault {s:?}; one of {}", names.join(", "))
        })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = number.parse().map_err(|e| format!("{s}: {e}"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => return Err(format!("{s}: unknown unit {other:?} (s, m, h)")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("shoal-nemesis: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let args = Args::parse();
    let bin = match args.bin {
        Some(b) => b,
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("shoal-node"),
    };
    if !bin.exists() {
        bail!(
            "{} not found (build it: cargo build --release -p shoal-tests, or pass --bin)",
            bin.display()
        );
    }
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let out = std::fs::canonicalize(&args.out)?;
    let mut config = Config::new(
        args.seed,
        args.duration,
        std::fs::canonicalize(bin)?,
        out.clone(),
    );
    config.keep_data = args.keep_data;
    config.hang_after = Duration::from_secs(args.hang_after_s);
    if !args.faults.is_empty() {
        config.kinds = args.faults.clone();
    }
    eprintln!(
        "nemesis: seed {}, {} s of faults; logs and history in {}",
        args.seed,
        args.duration.as_secs(),
        out.display()
    );
    match nemesis::run(&config) {
        Ok(report) => {
            print!("{}", report.table());
            Ok(report.violations().is_empty())
        }
        Err(RunError::Skip(why)) => bail!("cannot run here: {why}"),
        Err(RunError::Failed(e)) => bail!("the run failed: {e}"),
    }
}
