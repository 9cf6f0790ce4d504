//! Compiles the `.proto` files with `protox` (pure Rust), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let messages = ["proto/onnx.proto", "proto/amos_model.proto"];
    let services = ["proto/amos_pipeline.proto"];
    for p in messages.iter().chain(&services) {
        println!("cargo:rerun-if-changed={p}");
    }
    prost_build::Config::new().compile_fds(protox::compile(messages, ["proto"])?)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(protox::compile(services, ["proto"])?)?;
    Ok(())
}
