use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let cli = wafer::cli::Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        wafer::cli::LogFormat::Text => logs.init(),
        wafer::cli::LogFormat::Json => logs.json().init(),
    }
    match wafer::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// glibc gives threads that allocate at once arenas of their own (up to
/// eight per core) and keeps freed memory in each: the embedded store's
/// page cache, filled from some threads (lookups on the event loop) and
/// refilled from others (large lookups on the blocking pool), then sits in
/// several arenas at once. Measured with a 64 MiB redb cache over 1M
/// entities: 218 MiB RSS with the default, 115 MiB with two arenas, the
/// same throughput (benches/README.md). It applies to DuckDB's threads
/// too; measured on 2 cores only. `MALLOC_ARENA_MAX` set by the user wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator settings; called first
        // thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
