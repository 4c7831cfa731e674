//! Compiles the vendored Kubernetes `generated.proto` files (`proto/`) into one descriptor
//! set that `src/protobuf.rs` embeds: the server reads protobuf request bodies through it.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "k8s.io/api/apps/v1/generated.proto",
    "k8s.io/api/authorization/v1/generated.proto",
    "k8s.io/api/autoscaling/v2/generated.proto",
    "k8s.io/api/batch/v1/generated.proto",
    "k8s.io/api/coordination/v1/generated.proto",
    "k8s.io/api/core/v1/generated.proto",
    "k8s.io/api/events/v1/generated.proto",
    "k8s.io/api/networking/v1/generated.proto",
    "k8s.io/api/policy/v1/generated.proto",
    "k8s.io/api/rbac/v1/generated.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).open_files(FILES)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("kubernetes.bin");
    std::fs::write(out, compiler.encode_file_descriptor_set())?;
    Ok(())
}
