//! Compiles `proto/agentd/v1/*.proto` into Rust (server and client) and a
//! descriptor set for server reflection, and `google/rpc/error_details.proto`
//! (from `proto-thirdparty/`) into a second descriptor set, so reflection
//! also describes the error details agentd sends (tonic-types has their
//! Rust types).
//!
//! The protoc binary comes from the `protoc-bin-vendored` crate so that a fresh
//! machine needs no system protoc; `$PROTOC` overrides it.
//!
//! It also compiles two small C++ shims for what faiss's C API cannot do
//! (`server/memory/hnsw_params.cpp`: HNSW search parameters;
//! `server/memory/hnsw_insert.cpp`: inserts into a large graph without
//! faiss's per-call setup), against the headers faiss-sys installed (its
//! build reports their root as `DEP_FAISS_C_ROOT`).

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/agentd/v1/common.proto",
    "proto/agentd/v1/embedding.proto",
    "proto/agentd/v1/memory.proto",
    "proto/agentd/v1/query.proto",
    "proto/agentd/v1/agent.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: set_var is `unsafe` in edition 2024 because another thread
        // could read the environment meanwhile; this build script has one.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("PROTOC", protoc);
        }
    }
    let include = protoc_bin_vendored::include_path()?;
    let include_dir = include.clone();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    tonic_prost_build::configure()
        // Decode failures are the client's: INVALID_ARGUMENT (server/api/codec.rs).
        .codec_path("crate::api::codec::Codec")
        .file_descriptor_set_path(out_dir.join("agentd_descriptor.bin"))
        .compile_protos(
            &PROTOS.iter().map(PathBuf::from).collect::<Vec<_>>(),
            &[PathBuf::from("proto"), include],
        )?;

    let protoc = std::env::var_os("PROTOC").ok_or("PROTOC is set above")?;
    let status = std::process::Command::new(protoc)
        .arg("--proto_path=proto-thirdparty")
        .arg(format!("--proto_path={}", include_dir.display()))
        .arg(format!(
            "--descriptor_set_out={}",
            out_dir.join("error_details_descriptor.bin").display()
        ))
        .arg("google/rpc/error_details.proto")
        .status()?;
    if !status.success() {
        return Err(format!("protoc failed on google/rpc/error_details.proto: {status}").into());
    }

    compile_faiss_shim()?;

    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=proto-thirdparty/google/rpc/error_details.proto");
    Ok(())
}

/// Compiles the C++ shim against faiss-sys's headers. Without the `static`
/// feature faiss-sys reports no root; the system's faiss headers are used.
fn compile_faiss_shim() -> Result<(), Box<dyn std::error::Error>> {
    const SHIMS: [&str; 2] = [
        "server/memory/hnsw_params.cpp",
        "server/memory/hnsw_insert.cpp",
    ];
    let mut build = cc::Build::new();
    build.cpp(true).std("c++17").files(SHIMS).warnings(false);
    if let Some(root) = std::env::var_os("DEP_FAISS_C_ROOT") {
        build.include(PathBuf::from(root).join("include"));
    }
    build.try_compile("agentd_faiss_shim")?;
    for shim in SHIMS {
        println!("cargo:rerun-if-changed={shim}");
    }
    Ok(())
}
