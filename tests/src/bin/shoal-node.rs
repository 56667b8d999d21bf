//! The `shoal` binary under test (identical to `crates/shoal-server/src/main.rs`).

fn main() -> std::process::ExitCode {
    shoal_server::cli::exit(shoal_server::cli::main())
}
