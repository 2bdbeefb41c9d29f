use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("tlsfleet_descriptor.bin"))
        .compile_protos(&["proto/tlsfleet/v1/tlsfleet.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
