//! The sandbox's per-call limits, pinned from both sides: each test shows
//! the limit lets through what fits and stops what does not, with the
//! configured value (not a constant) deciding.

mod common;
#[path = "common/wasm.rs"]
mod wasm;

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array};
use arrow::datatypes::Float64Type;
use wafer::transform::{CompiledTransform, TransformError, TransformLimits, TransformRuntime};
use wasm::{wat_module, F64_SCHEMA};

fn compile(limits: TransformLimits, body: &str, extra: &str) -> CompiledTransform {
    TransformRuntime::new(limits, None)
        .expect("runtime")
        .compile_checked(&wat_module("", body, extra, F64_SCHEMA))
        .expect("module loads")
}

fn column(values: Vec<f64>) -> Vec<ArrayRef> {
    vec![Arc::new(Float64Array::from(values))]
}

/// Marks every output row valid and returns 0.
const FINISH: &str = "(memory.fill (i32.load offset=32 (local.get $desc)) (i32.const 255)
      (i32.shr_u (i32.add (i32.load offset=4 (local.get $desc)) (i32.const 7)) (i32.const 3)))
    (i32.const 0)";

/// Spins 1,000 loop iterations per row (about 5-9 fuel units each).
fn spinning_body() -> String {
    format!(
        "(local $i i32) (local $stop i32)
    (local.set $stop (i32.mul (i32.load offset=4 (local.get $desc)) (i32.const 1000)))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $stop)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    {FINISH}"
    )
}

#[test]
fn fuel_is_the_base_plus_the_per_row_budget_times_rows() {
    let limits = |fuel_per_row| TransformLimits {
        fuel_base: 200_000,
        fuel_per_row,
        ..TransformLimits::default()
    };
    let rows = |n: usize| column(vec![1.0; n]);
    // 100 rows need 500k-900k units: within 200k + 20k x 100, far over 200k
    // alone or 200k + 20k.
    let generous = compile(limits(20_000), &spinning_body(), "");
    generous.run(&rows(100)).expect("fits the per-row budget");
    generous.run(&rows(1)).expect("one row fits");
    // 1k per row is below what a row costs: the budget runs out, and the
    // error names the budget it had.
    let tight = compile(limits(1_000), &spinning_body(), "");
    tight.run(&rows(1)).expect("one row fits in the base");
    let error = tight.run(&rows(100)).expect_err("over budget");
    assert!(
        matches!(
            error,
            TransformError::FuelExhausted {
                fuel: 300_000,
                rows: 100
            }
        ),
        "{error}"
    );
}

/// Recurses `x` levels deep (x is the first row's input).
const RECURSE: &str =
    "(drop (call $down (i32.trunc_f64_u (f64.load (i32.load offset=20 (local.get $desc))))))";
const DOWN: &str = "(func $down (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0))
      (then (i32.const 0))
      (else (i32.add (i32.const 1) (call $down (i32.sub (local.get 0) (i32.const 1)))))))";

/// The deepest recursion that runs under `max_stack_bytes` (binary search).
fn deepest(max_stack_bytes: usize) -> u32 {
    let limits = TransformLimits {
        max_stack_bytes,
        fuel_base: u64::MAX / 4,
        ..TransformLimits::default()
    };
    let transform = compile(limits, &format!("{RECURSE} {FINISH}"), DOWN);
    let runs = |depth: u32| match transform.run(&column(vec![depth as f64])) {
        Ok(_) => true,
        Err(TransformError::StackOverflow { limit }) => {
            assert_eq!(limit, max_stack_bytes);
            false
        }
        Err(other) => panic!("{other}"),
    };
    let (mut low, mut high) = (0u32, 1 << 22);
    assert!(!runs(high), "{high} levels fit in {max_stack_bytes} bytes");
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if runs(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    low
}

#[test]
fn the_configured_stack_size_bounds_recursion_depth() {
    // Wasm runs on the calling thread's stack: give it room for the largest.
    let depths = std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(|| [deepest(128 << 10), deepest(256 << 10), deepest(1 << 20)])
        .unwrap()
        .join()
        .unwrap();
    let [small, medium, large] = depths;
    // Depth grows in proportion to the configured size (frames are of equal
    // size): doubling the stack roughly doubles it, 8x gives roughly 8x.
    let ratio = |a: u32, b: u32| b as f64 / a as f64;
    assert!(small > 100, "{depths:?}");
    assert!((1.7..2.3).contains(&ratio(small, medium)), "{depths:?}");
    assert!((6.5..9.5).contains(&ratio(small, large)), "{depths:?}");
}

#[test]
fn a_warm_instance_is_recycled_after_10000_calls() {
    // y = how many calls this instance has served (a global counter).
    let body = format!(
        "(global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (f64.store (i32.load offset=36 (local.get $desc)) (f64.convert_i32_u (global.get $calls)))
    {FINISH}"
    );
    let transform = compile(
        TransformLimits::default(),
        &body,
        "(global $calls (mut i32) (i32.const 0))",
    );
    for call in 0..25_000u32 {
        let out = transform.run(&column(vec![0.0])).unwrap();
        let served = out[0].as_primitive::<Float64Type>().value(0);
        assert_eq!(
            served,
            (call % 10_000 + 1) as f64,
            "call {call}: a fresh instance every 10,000 calls"
        );
    }
}
