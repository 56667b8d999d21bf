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
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    Ok(())
}
