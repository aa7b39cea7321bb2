use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    // Usage errors exit 1 like every other error: 2 means pending changes
    // to `wafer plan --exit-code`, a crossed threshold to `wafer monitor`.
    let cli = match wafer::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            };
        }
    };
    if matches!(
        cli.command,
        wafer::cli::Command::Materialize { .. }
            | wafer::cli::Command::MaterializeIncremental { .. }
    ) {
        keep_freed_memory();
    }
    // `warn`, `info`, `wafer=debug,warn`: a level per target (no regex
    // engine in the binary for it).
    let filter: Targets = cli
        .log_level
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::WARN));
    let logs = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match cli.log_format {
        wafer::cli::LogFormat::Text => logs.with(layer).init(),
        wafer::cli::LogFormat::Json => logs.with(layer.json()).init(),
    }
    match wafer::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if error.is::<wafer::cli::PendingChanges>() => {
            eprintln!("{error}");
            std::process::ExitCode::from(wafer::cli::PendingChanges::EXIT_CODE)
        }
        Err(error) if error.is::<wafer::cli::ThresholdCrossed>() => {
            eprintln!("{error}");
            std::process::ExitCode::from(wafer::cli::ThresholdCrossed::EXIT_CODE)
        }
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
/// too; measured on 2 cores only. An arena limit the user set
/// (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`)
/// wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !malloc_set_by_user("glibc.malloc.arena_max", &["MALLOC_ARENA_MAX"]) {
        // SAFETY: mallopt only changes allocator settings; called first
        // thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// A materialization allocates and frees hundreds of MiB in a few seconds
/// (its rows, its batches of records, the embedded store's pages). By
/// default glibc gives back the free memory at the top of a heap at once
/// and maps each allocation of 128 KiB or more on its own (a threshold that
/// grows as they are freed), so each next batch faults the same pages in
/// again. A materializing process keeps up to 64 MiB free at the top of
/// each heap and maps only allocations of 32 MiB or more on their own: a
/// wide 1M-entity run faulted 65,000 pages in instead of 79,000 and took
/// 0.02-0.04 s less of its 1.1-1.2 s, at the same peak RSS
/// (benches/README.md). The command exits when done (a pad as large as a
/// thread's heap also keeps glibc from shrinking those heaps meanwhile);
/// `wafer serve` keeps the defaults. Malloc settings the user made
/// (`glibc.malloc.*` in `GLIBC_TUNABLES`, `MALLOC_TOP_PAD_`,
/// `MALLOC_MMAP_THRESHOLD_`) win.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !malloc_set_by_user(
        "glibc.malloc.",
        &["MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_"],
    ) {
        // SAFETY: mallopt only changes allocator settings; called before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
    }
}

/// Whether the user set a malloc setting themselves: a glibc tunable
/// starting with `tunable` in `GLIBC_TUNABLES`, or one of the environment
/// variables `vars`. `mallopt` would override it, so a setting the user
/// made is left alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_set_by_user(tunable: &str, vars: &[&str]) -> bool {
    std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains(tunable))
        || vars.iter().any(|v| std::env::var_os(v).is_some())
}
