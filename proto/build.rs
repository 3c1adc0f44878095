//! Compiles `proto/strand.proto` with protox (pure Rust), so building Strand
//! needs no system `protoc`, and writes the encoded descriptor set that
//! the broker serves through gRPC server reflection.
use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/strand.proto"];
    let fds = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("strand_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Record bytes stay `bytes::Bytes` end to end: no copy into a Vec.
        .bytes(".strand.v1")
        .compile_fds(fds)?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
