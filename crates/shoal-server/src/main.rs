//! The `shoal` binary. All of it lives in the library: see `shoal_server::cli`.

fn main() -> anyhow::Result<()> {
    shoal_server::cli::main()
}
