//! Compiles `proto/strand.proto` with protox (pure Rust), so building Strand
//! needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/strand.proto"];
    let fds = protox::compile(protos, ["proto"])?;
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
