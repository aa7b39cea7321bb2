//! `wafer serve`: resolves the address to listen on, starts a tokio runtime
//! and runs [`crate::server::serve`] on it.

use anyhow::{Context, Result};

use crate::FeatureStore;

/// Serves until SIGINT or SIGTERM. `example` prints a curl against the
/// bound address. `materialize_every` (the flag) wins over
/// `server.materialize_every`.
pub(super) fn serve(
    store: FeatureStore,
    host: Option<String>,
    port: Option<u16>,
    materialize_every: Option<&str>,
    example: Option<&str>,
) -> Result<()> {
    let every = match materialize_every {
        Some(text) => Some(
            crate::config::parse_interval(text)
                .map_err(|e| anyhow::anyhow!("--materialize-every: {e}"))?,
        ),
        None => store
            .config()
            .server
            .materialize_every()
            .map_err(|e| anyhow::anyhow!(e))?,
    };
    run(std::sync::Arc::new(store), host, port, every, example)
}

/// Serves a store shared with other threads (an edge's sync).
pub(super) fn serve_shared(
    store: std::sync::Arc<FeatureStore>,
    host: Option<String>,
    port: Option<u16>,
) -> Result<()> {
    run(store, host, port, None, None)
}

fn run(
    store: std::sync::Arc<FeatureStore>,
    host: Option<String>,
    port: Option<u16>,
    materialize_every: Option<std::time::Duration>,
    example: Option<&str>,
) -> Result<()> {
    let address = address(&store, host, port)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(crate::server::serve(
        store,
        address,
        materialize_every,
        |bound| {
            println!("Serving on http://{bound} (Ctrl-C to stop)");
            if let Some(body) = example {
                println!("Try:\n  curl -s http://{bound}/get-online-features -d '{body}'");
            }
        },
    ))
}

/// The flags' host and port, else `server.host` and `server.port` from
/// `wafer.yaml`; a host name is resolved to its first address.
fn address(
    store: &FeatureStore,
    host: Option<String>,
    port: Option<u16>,
) -> Result<std::net::SocketAddr> {
    let host = host.unwrap_or_else(|| store.config().server.host.clone());
    let port = port.unwrap_or(store.config().server.port);
    format!("{host}:{port}")
        .parse::<std::net::SocketAddr>()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .ok()
                .and_then(|mut addresses| addresses.next())
                .ok_or(())
        })
        .map_err(|_| anyhow::anyhow!("cannot resolve host '{host}'"))
}
