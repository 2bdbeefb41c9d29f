//! `bare-ring --cert FILE --key FILE --listen ADDR`: the bare benchmark server
//! (`tlsfleet-bench`'s `bare.rs`, the same file) with the ring provider.

#[path = "../../src/bare.rs"]
mod bare;

/// The agent's allocator, so that the bare servers are compared on the same footing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut cert, mut key, mut listen) = (None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next();
        match flag.as_str() {
            "--cert" => cert = value,
            "--key" => key = value,
            "--listen" => listen = value,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let (Some(cert), Some(key), Some(listen)) = (cert, key, listen) else {
        anyhow::bail!("usage: bare-ring --cert FILE --key FILE --listen ADDR");
    };
    let cfg = bare::config(
        cert.as_ref(),
        key.as_ref(),
        rustls::crypto::ring::default_provider(),
        rustls::crypto::ring::Ticketer::new()?,
    )?;
    tokio::runtime::Runtime::new()?.block_on(bare::serve(listen.parse()?, cfg))
}
