use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Ordered maps: a message encodes to the same bytes every time, so its digest (which
        // the request signature covers, see `auth`) is the same at both ends.
        .btree_map(".")
        .file_descriptor_set_path(out.join("tlsfleet_descriptor.bin"))
        .compile_protos(&["proto/tlsfleet/v1/tlsfleet.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
