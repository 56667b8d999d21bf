//! The `shoal` binary. All of it lives in the library: see `shoal_server::cli`.

fn main() -> std::process::ExitCode {
    shoal_server::cli::exit(shoal_server::cli::main())
}
