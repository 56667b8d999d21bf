//! The `shoal` binary under test (identical to `crates/shoal-cli/src/main.rs`).

fn main() -> std::process::ExitCode {
    shoal_cli::cli::exit(shoal_cli::cli::main())
}
