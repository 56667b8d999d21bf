//! Compiles `proto/shoal/v1/*.proto` with the vendored `protoc` (no system protoc
//! needed) and writes a file descriptor set for gRPC server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [root.join("shoal/v1/shoal.proto")];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("shoal_descriptor.bin"))
        .compile_protos(&protos, std::slice::from_ref(&root))?;
    // The internal Raft transport: its own package, not in the reflection descriptor.
    let internal = [root.join("shoal/internal/raft.proto")];
    tonic_prost_build::configure().compile_protos(&internal, std::slice::from_ref(&root))?;
    for p in protos.iter().chain(&internal) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    Ok(())
}
