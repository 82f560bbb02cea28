//! Compiles the CRI `api.proto` with protox (pure Rust) so no `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let fds = protox::compile(["proto/api.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // RPCs not implemented yet answer UNIMPLEMENTED, as the CRI expects.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
