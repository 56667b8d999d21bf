//! The `shoal` binary under test (identical to `crates/shoal-cli/src/main.rs`), with
//! failpoints compiled in and configured from the `FAILPOINTS` environment variable
//! (see `shoal_cluster`'s `failpoints` module).

fn main() -> std::process::ExitCode {
    let _failpoints = fail::FailScenario::setup();
    shoal_cli::cli::exit(shoal_cli::cli::main())
}
