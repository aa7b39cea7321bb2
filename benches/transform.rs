//! Transform runtime costs: the per-call overhead of a 1-row call (fresh
//! instance, copy in, call, copy out), batch throughput of
//! `conv_rate_plus_val` against the same function native, and cold start of
//! a `wafer` process to its first call with and without the compiled cache.
//! Prints markdown tables; results go in benches/README.md.

#[path = "../tests/common/wasm.rs"]
mod wasm;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, Int64Array};
use wafer::transform::{TransformLimits, TransformRuntime};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

fn main() {
    let module = wasm::transform_module("conv_rate_plus_val");
    let runtime = TransformRuntime::new(TransformLimits::default(), None).expect("runtime");
    let transform = runtime.compile_checked(&module).expect("module loads");

    // 1-row calls.
    let one: Vec<ArrayRef> = vec![
        Arc::new(Float64Array::from(vec![0.5])),
        Arc::new(Int64Array::from(vec![2])),
    ];
    for _ in 0..2_000 {
        transform.run(&one).unwrap();
    }
    let mut times: Vec<Duration> = (0..20_000)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(transform.run(&one).unwrap());
            started.elapsed()
        })
        .collect();
    times.sort();
    println!("| 1-row call (warm instance, copy in, call, copy out) | p50 | p99 |");
    println!("|---|---:|---:|");
    println!(
        "| conv_rate_plus_val | {} | {} |\n",
        micros(percentile(&times, 0.5)),
        micros(percentile(&times, 0.99))
    );

    // Throughput over 1M rows in 64k-row calls.
    let rows = 1_000_000;
    let rates: Vec<f64> = (0..rows).map(|i| (i % 1000) as f64 / 1000.0).collect();
    let vals: Vec<i64> = (0..rows).map(|i| (i % 7) as i64).collect();
    let inputs: Vec<ArrayRef> = vec![
        Arc::new(Float64Array::from(rates.clone())),
        Arc::new(Int64Array::from(vals.clone())),
    ];
    let best = |f: &mut dyn FnMut()| {
        (0..7)
            .map(|_| {
                let started = Instant::now();
                f();
                started.elapsed()
            })
            .min()
            .unwrap()
    };
    let wasm_time = best(&mut || {
        std::hint::black_box(transform.run(&inputs).unwrap());
    });
    let rate_array = Float64Array::from(rates);
    let val_array = Int64Array::from(vals);
    let native_time = best(&mut || {
        // The same row loop natively: nulls checked, result built as Arrow.
        let out: Float64Array = rate_array
            .iter()
            .zip(val_array.iter())
            .map(|(r, v)| Some(conv_rate_plus_val::conv_rate_plus_val(r?, v?)))
            .collect();
        std::hint::black_box(out);
    });
    let per_second = |d: Duration| rows as f64 / d.as_secs_f64() / 1e6;
    println!("| 1M rows, conv_rate_plus_val | time | rows/s |");
    println!("|---|---:|---:|");
    println!(
        "| wasm, 64k-row calls | {:.2} ms | {:.0}M |",
        wasm_time.as_secs_f64() * 1e3,
        per_second(wasm_time)
    );
    println!(
        "| native, same row loop into Arrow | {:.2} ms | {:.0}M |",
        native_time.as_secs_f64() * 1e3,
        per_second(native_time)
    );
    println!(
        "| ratio wasm / native | {:.2}x | |\n",
        wasm_time.as_secs_f64() / native_time.as_secs_f64()
    );

    // Cold start: a fresh `wafer` process to its first call.
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("wafer.yaml"), "project: bench\n").unwrap();
    let wafer = env!("CARGO_BIN_EXE_wafer");
    let module_path = project.path().join("conv.wasm");
    std::fs::write(&module_path, &module).unwrap();
    let run = |args: &[&str]| {
        let started = Instant::now();
        let output = Command::new(wafer)
            .arg("-C")
            .arg(project.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        started.elapsed()
    };
    run(&["transform", "upload", "conv", module_path.to_str().unwrap()]);
    let test = [
        "transform",
        "test",
        "conv",
        "--input",
        r#"{"conv_rate": 0.5, "val_to_add": 2}"#,
    ];
    let compiled = project.path().join(".wafer/transforms/compiled");
    let mut cached = Vec::new();
    let mut uncached = Vec::new();
    for _ in 0..7 {
        cached.push(run(&test));
        std::fs::remove_dir_all(&compiled).unwrap();
        uncached.push(run(&test));
    }
    cached.sort();
    uncached.sort();
    println!("| cold start: process start to first call, exit | median |");
    println!("|---|---:|");
    println!(
        "| compiled cache on disk | {:.1} ms |",
        cached[3].as_secs_f64() * 1e3
    );
    println!(
        "| no cache (compiles the module) | {:.1} ms |",
        uncached[3].as_secs_f64() * 1e3
    );
}
