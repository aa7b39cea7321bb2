//! What the host does with what a module hands back: malformed
//! variable-width outputs are refused by name (never misread), and float
//! arithmetic inside a module gives canonical NaNs whatever the module's
//! compiler did (the engine's guarantee, separate from the SDK's).

#[path = "common/wasm.rs"]
mod wasm;

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array};
use arrow::datatypes::Float64Type;
use wafer::transform::{TransformError, TransformLimits, TransformRuntime};
use wasm::{wat_module, F64_SCHEMA};

const STRING_SCHEMA: &str = r#"{"abi":1,"name":"t","inputs":[{"name":"x","type":"float64"}],"outputs":[{"name":"s","type":"string"}]}"#;

/// Runs a module that answers three rows with the given string offsets
/// over `data` (placed at address 1024), every row valid.
fn string_output(offsets: [i32; 4], data: &[u8]) -> Result<Vec<String>, TransformError> {
    let escaped: String = data.iter().map(|b| format!("\\{b:02x}")).collect();
    let body = format!(
        "(local $o i32)
    (local.set $o (i32.load offset=40 (local.get $desc)))
    (i32.store offset=0 (local.get $o) (i32.const {}))
    (i32.store offset=4 (local.get $o) (i32.const {}))
    (i32.store offset=8 (local.get $o) (i32.const {}))
    (i32.store offset=12 (local.get $o) (i32.const {}))
    (i32.store8 (i32.load offset=32 (local.get $desc)) (i32.const 7))
    (i32.store offset=36 (local.get $desc) (i32.const 1024))
    (i32.store offset=44 (local.get $desc) (i32.const {}))
    (i32.const 0)",
        offsets[0],
        offsets[1],
        offsets[2],
        offsets[3],
        data.len()
    );
    let extra = format!("(data (i32.const 1024) \"{escaped}\")");
    let transform = TransformRuntime::new(TransformLimits::default(), None)
        .unwrap()
        .compile_checked(&wat_module("", &body, &extra, STRING_SCHEMA))
        .unwrap();
    let input: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]));
    let out = transform.run(&[input])?;
    let strings = out[0].as_string::<i32>();
    Ok((0..3).map(|i| strings.value(i).to_string()).collect())
}

fn refused(result: Result<Vec<String>, TransformError>, needle: &str) {
    match result {
        Err(TransformError::BadOutput(message)) => {
            assert!(message.contains(needle), "{message}")
        }
        other => panic!("expected a bad output ({needle}), got {other:?}"),
    }
}

#[test]
fn well_formed_offsets_read_back_exactly() {
    assert_eq!(
        string_output([0, 1, 1, 4], b"ab\xc3\xa9").unwrap(),
        ["a", "", "bé"]
    );
}

#[test]
fn offsets_not_starting_at_zero_are_refused() {
    refused(string_output([1, 2, 3, 4], b"abcd"), "start at 0");
}

#[test]
fn decreasing_offsets_are_refused() {
    refused(string_output([0, 3, 1, 4], b"abcd"), "decrease at row 1");
}

#[test]
fn offsets_past_the_data_are_refused() {
    refused(
        string_output([0, 1, 2, 5], b"abcd"),
        "the data holds 4 items",
    );
}

#[test]
fn strings_that_are_not_utf8_are_refused() {
    refused(string_output([0, 1, 2, 3], b"a\xffb"), "utf");
}

#[test]
fn nan_arithmetic_inside_a_module_gives_the_canonical_nan() {
    // y = x + 0.0 on every row, computed by the module (no SDK involved).
    let body = "(local $i i32) (local $n i32) (local $in i32) (local $out i32)
        (local.set $n (i32.load offset=4 (local.get $desc)))
        (local.set $in (i32.load offset=20 (local.get $desc)))
        (local.set $out (i32.load offset=36 (local.get $desc)))
        (block $done (loop $l
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (f64.store (i32.add (local.get $out) (i32.mul (local.get $i) (i32.const 8)))
            (f64.add (f64.load (i32.add (local.get $in) (i32.mul (local.get $i) (i32.const 8))))
                     (f64.const 0)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $l)))
        (memory.fill (i32.load offset=32 (local.get $desc)) (i32.const 255)
          (i32.shr_u (i32.add (local.get $n) (i32.const 7)) (i32.const 3)))
        (i32.const 0)";
    let transform = TransformRuntime::new(TransformLimits::default(), None)
        .unwrap()
        .compile_checked(&wat_module("", body, "", F64_SCHEMA))
        .unwrap();
    let inputs = [
        f64::from_bits(0x7ff0_0000_dead_beef), // signalling, with a payload
        f64::from_bits(0xfff8_0000_0000_0001), // negative quiet, with a payload
        f64::NAN,
        1.5,
        -0.0,
    ];
    let input: ArrayRef = Arc::new(Float64Array::from(inputs.to_vec()));
    let out = transform.run(&[input]).unwrap();
    let out = out[0].as_primitive::<Float64Type>();
    for (row, x) in inputs.iter().enumerate() {
        let want = if x.is_nan() { f64::NAN } else { x + 0.0 };
        assert_eq!(
            out.value(row).to_bits(),
            want.to_bits(),
            "row {row}: {x} + 0.0"
        );
    }
}
