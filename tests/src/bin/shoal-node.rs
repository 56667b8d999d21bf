//! The `shoal` binary under test (identical to `crates/shoal-server/src/main.rs`).

fn main() -> anyhow::Result<()> {
    shoal_server::cli::main()
}
