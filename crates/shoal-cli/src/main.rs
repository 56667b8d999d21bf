//! The `shoal` binary. All of it lives in the library: see `shoal_cli::cli`.

fn main() -> std::process::ExitCode {
    shoal_cli::cli::exit(shoal_cli::cli::main())
}
