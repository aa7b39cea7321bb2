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
    if !malloc_set_by_user(&["glibc.malloc.arena_max"], &["MALLOC_ARENA_MAX"]) {
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
/// `wafer serve` keeps the defaults. When the user set either of these
/// (`glibc.malloc.top_pad` or `glibc.malloc.mmap_threshold` in
/// `GLIBC_TUNABLES`, `MALLOC_TOP_PAD_`, `MALLOC_MMAP_THRESHOLD_`), neither
/// is changed.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !malloc_set_by_user(
        &["glibc.malloc.top_pad", "glibc.malloc.mmap_threshold"],
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

/// Whether the user set one of these malloc settings: `tunables` (glibc
/// tunable names, as `GLIBC_TUNABLES` lists them: `name=value` pairs
/// separated by colons) or the environment variables `vars`. A later
/// `mallopt` would override the user's value, so it is left alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_set_by_user(tunables: &[&str], vars: &[&str]) -> bool {
    std::env::var("GLIBC_TUNABLES").is_ok_and(|list| lists_tunable(&list, tunables))
        || vars.iter().any(|v| std::env::var_os(v).is_some())
}

/// Whether `list` (`GLIBC_TUNABLES`: `name=value` pairs separated by
/// colons) sets one of `tunables`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn lists_tunable(list: &str, tunables: &[&str]) -> bool {
    list.split(':')
        .any(|pair| tunables.contains(&pair.split('=').next().unwrap_or_default()))
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::lists_tunable;

    #[test]
    fn a_tunable_is_found_by_its_whole_name() {
        let pad = ["glibc.malloc.top_pad", "glibc.malloc.mmap_threshold"];
        assert!(lists_tunable("glibc.malloc.top_pad=1", &pad));
        assert!(lists_tunable(
            "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=4096",
            &pad
        ));
        assert!(!lists_tunable("glibc.malloc.arena_max=2", &pad));
        assert!(!lists_tunable("glibc.malloc.top_pad_x=1", &pad));
        assert!(!lists_tunable("x=glibc.malloc.top_pad", &pad));
        assert!(!lists_tunable("", &pad));
        assert!(lists_tunable(
            "glibc.malloc.arena_max=2",
            &["glibc.malloc.arena_max"]
        ));
    }
}
