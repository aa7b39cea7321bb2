//! The WASM runtime against real modules: the example transforms built with
//! the SDK, compared bit for bit with the same functions compiled natively on
//! randomized input; hostile WAT modules, each with its precise error; the
//! module registry (upload, pins, history, rollback) where a bad module
//! changes nothing.

mod common;
#[path = "common/wasm.rs"]
mod wasm;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Builder, Float64Array, Int64Array, ListBuilder,
    StringArray,
};
use arrow::datatypes::{Float64Type, Int64Type};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wafer::transform::{
    ModuleLoads, TransformError, TransformLimits, TransformRuntime, Transforms,
};
use wasm::{transform_module, wat_module, F64_SCHEMA, IDENTITY_BODY};

fn runtime(limits: TransformLimits) -> TransformRuntime {
    TransformRuntime::new(limits, None).expect("runtime")
}

/// What the SDK promises for float outputs: every NaN is `f64::NAN`.
fn canonical(value: f64) -> f64 {
    if value.is_nan() {
        f64::NAN
    } else {
        value
    }
}

fn random_f64(rng: &mut ChaCha8Rng) -> Option<f64> {
    match rng.random_range(0..20) {
        0 => None,
        1 => Some(f64::NAN),
        2 => Some(f64::from_bits(0x7ff0_0000_dead_beef)), // a NaN with a payload
        3 => Some(
            [
                f64::INFINITY,
                f64::NEG_INFINITY,
                -0.0,
                0.0,
                f64::MIN_POSITIVE,
            ][rng.random_range(0..5)],
        ),
        _ => Some(rng.random_range(-1e6..1e6)),
    }
}

fn assert_f64_column(actual: &ArrayRef, expected: &[Option<f64>], what: &str) {
    let actual = actual.as_primitive::<Float64Type>();
    assert_eq!(actual.len(), expected.len(), "{what}: row count");
    for (row, want) in expected.iter().enumerate() {
        let got = (!actual.is_null(row)).then(|| actual.value(row));
        assert_eq!(
            got.map(f64::to_bits),
            want.map(f64::to_bits),
            "{what}: row {row}: got {got:?}, native {want:?}"
        );
    }
}

#[test]
fn conv_rate_plus_val_matches_native_bit_for_bit() {
    let limits = TransformLimits {
        batch_rows: 777, // several calls per run: chunking must not show
        ..TransformLimits::default()
    };
    let transform = runtime(limits)
        .compile_checked(&transform_module("conv_rate_plus_val"))
        .expect("module loads");
    assert_eq!(transform.schema().inputs[0].name, "conv_rate");
    assert_eq!(transform.schema().outputs[0].name, "conv_rate_plus_val");
    for seed in common::seeds(0, 20) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rows = rng.random_range(1..5000);
        let rates: Vec<Option<f64>> = (0..rows).map(|_| random_f64(&mut rng)).collect();
        let vals: Vec<Option<i64>> = (0..rows)
            .map(|_| match rng.random_range(0..15) {
                0 => None,
                1 => Some([i64::MAX, i64::MIN, 0][rng.random_range(0..3)]),
                _ => Some(rng.random_range(-1000..1000)),
            })
            .collect();
        let expected: Vec<Option<f64>> = rates
            .iter()
            .zip(&vals)
            .map(|(r, v)| {
                Some(canonical(conv_rate_plus_val::conv_rate_plus_val(
                    (*r)?,
                    (*v)?,
                )))
            })
            .collect();
        let inputs: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(rates.clone())),
            Arc::new(Int64Array::from(vals.clone())),
        ];
        let out = transform.run(&inputs).expect("runs");
        assert_f64_column(&out[0], &expected, &format!("seed {seed}"));

        // A slice with an offset (as offline batches are) gives the same rows.
        let start = rows / 3;
        let sliced: Vec<ArrayRef> = inputs
            .iter()
            .map(|a| a.slice(start, rows - start))
            .collect();
        let out = transform.run(&sliced).expect("runs");
        assert_f64_column(&out[0], &expected[start..], &format!("seed {seed}, sliced"));
    }
}

#[test]
fn haversine_matches_native_bit_for_bit() {
    let transform = runtime(TransformLimits::default())
        .compile_checked(&transform_module("haversine_distance"))
        .expect("module loads");
    assert_eq!(transform.schema().outputs[0].name, "distance_km");
    for seed in common::seeds(0, 20) {
        let mut rng = ChaCha8Rng::seed_from_u64(100 + seed);
        let rows = rng.random_range(1..3000);
        let mut coordinate = |limit: f64| -> Vec<Option<f64>> {
            (0..rows)
                .map(|_| match rng.random_range(0..25) {
                    0 => None,
                    1 => random_f64(&mut rng),
                    _ => Some(rng.random_range(-limit..limit)),
                })
                .collect()
        };
        let columns = [
            coordinate(90.0),
            coordinate(180.0),
            coordinate(90.0),
            coordinate(180.0),
        ];
        let expected: Vec<Option<f64>> = (0..rows)
            .map(|i| {
                haversine_distance::haversine_distance(
                    columns[0][i]?,
                    columns[1][i]?,
                    columns[2][i]?,
                    columns[3][i]?,
                )
                .map(canonical)
            })
            .collect();
        let inputs: Vec<ArrayRef> = columns
            .iter()
            .map(|c| Arc::new(Float64Array::from(c.clone())) as ArrayRef)
            .collect();
        let out = transform.run(&inputs).expect("runs");
        assert_f64_column(&out[0], &expected, &format!("seed {seed}"));
    }
}

#[test]
fn email_features_match_native() {
    // Small calls: one instance serves several, its arena reused while the
    // string outputs of earlier calls stay allocated.
    let limits = TransformLimits {
        batch_rows: 300,
        ..TransformLimits::default()
    };
    let transform = runtime(limits)
        .compile_checked(&transform_module("email_domain"))
        .expect("module loads");
    let names: Vec<_> = transform
        .schema()
        .outputs
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["email_domain", "domain_bucket", "is_free_mail"]);
    const PARTS: &[&str] = &[
        "ada",
        "@",
        "Example.COM",
        "gmail.com",
        " ",
        "ü",
        "日本",
        "",
        "@@",
        "x",
    ];
    for seed in common::seeds(0, 20) {
        let mut rng = ChaCha8Rng::seed_from_u64(200 + seed);
        let rows = rng.random_range(1..2000);
        let emails: Vec<Option<String>> = (0..rows)
            .map(|_| {
                if rng.random_bool(0.1) {
                    return None;
                }
                let long = rng.random_bool(0.02);
                let parts = if long { 2000 } else { rng.random_range(0..6) };
                Some(
                    (0..parts)
                        .map(|_| PARTS[rng.random_range(0..PARTS.len())])
                        .collect(),
                )
            })
            .collect();
        let out = transform
            .run(&[Arc::new(StringArray::from(emails.clone())) as ArrayRef])
            .expect("runs");
        let (domains, buckets, free) = (
            out[0].as_string::<i32>(),
            out[1].as_primitive::<Int64Type>(),
            out[2]
                .as_any()
                .downcast_ref::<BooleanArray>()
                .expect("bool"),
        );
        for (row, email) in emails.iter().enumerate() {
            match email {
                None => {
                    assert!(
                        domains.is_null(row) && buckets.is_null(row) && free.is_null(row),
                        "row {row}"
                    );
                }
                Some(email) => {
                    let native = email_domain::email_features(email);
                    let got_domain = (!domains.is_null(row)).then(|| domains.value(row));
                    assert_eq!(
                        got_domain,
                        native.email_domain.as_deref(),
                        "row {row}: {email:?}"
                    );
                    assert_eq!(buckets.value(row), native.domain_bucket, "row {row}");
                    assert_eq!(free.value(row), native.is_free_mail, "row {row}");
                    assert!(!buckets.is_null(row) && !free.is_null(row));
                }
            }
        }
    }
}

#[test]
fn cosine_similarity_matches_native_bit_for_bit() {
    let transform = runtime(TransformLimits::default())
        .compile_checked(&transform_module("cosine_similarity"))
        .expect("module loads");
    for seed in common::seeds(0, 20) {
        let mut rng = ChaCha8Rng::seed_from_u64(300 + seed);
        let rows = rng.random_range(1..1500);
        let dim = rng.random_range(1..64);
        let embeddings = |rng: &mut ChaCha8Rng| -> Vec<Option<Vec<f32>>> {
            (0..rows)
                .map(|_| match rng.random_range(0..20) {
                    0 => None,
                    1 => Some(Vec::new()),
                    2 => Some(vec![0.0; dim]),
                    3 => Some(
                        (0..rng.random_range(0..dim + 2))
                            .map(|_| rng.random())
                            .collect(),
                    ),
                    4 => Some(
                        (0..dim)
                            .map(|_| [f32::NAN, f32::INFINITY, 1.0][rng.random_range(0..3)])
                            .collect(),
                    ),
                    _ => Some((0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect()),
                })
                .collect()
        };
        let queries = embeddings(&mut rng);
        let items = embeddings(&mut rng);
        let to_array = |rows: &[Option<Vec<f32>>]| -> ArrayRef {
            let mut builder = ListBuilder::new(Float32Builder::new());
            for row in rows {
                match row {
                    Some(values) => {
                        builder.values().append_slice(values);
                        builder.append(true);
                    }
                    None => builder.append_null(),
                }
            }
            Arc::new(builder.finish())
        };
        let expected: Vec<Option<f64>> = queries
            .iter()
            .zip(&items)
            .map(|(q, i)| {
                cosine_similarity::cosine_similarity(q.as_ref()?, i.as_ref()?).map(canonical)
            })
            .collect();
        let out = transform
            .run(&[to_array(&queries), to_array(&items)])
            .expect("runs");
        assert_f64_column(&out[0], &expected, &format!("seed {seed}"));
    }
}

fn load_error(bytes: &[u8]) -> TransformError {
    runtime(TransformLimits::default())
        .compile_checked(bytes)
        .expect_err("module must be rejected")
}

fn run_error(bytes: &[u8], limits: TransformLimits) -> TransformError {
    let transform = runtime(limits)
        .compile_checked(bytes)
        .expect("module loads");
    let input: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]));
    transform.run(&[input]).expect_err("call must fail")
}

#[test]
fn well_behaved_wat_module_runs() {
    let bytes = wat_module("", IDENTITY_BODY, "", F64_SCHEMA);
    let transform = runtime(TransformLimits::default())
        .compile_checked(&bytes)
        .expect("loads");
    let out = transform
        .run(&[Arc::new(Float64Array::from(vec![1.5, -2.0])) as ArrayRef])
        .expect("runs");
    assert_eq!(out[0].as_primitive::<Float64Type>().values(), &[1.5, -2.0]);
}

#[test]
fn structurally_broken_modules_are_rejected_by_name() {
    let error = load_error(b"definitely not wasm");
    assert!(matches!(error, TransformError::NotWasm(_)), "{error}");

    let wasi = wat_module(
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
        IDENTITY_BODY,
        "",
        F64_SCHEMA,
    );
    let error = load_error(&wasi);
    assert!(
        error
            .to_string()
            .contains("wasi_snapshot_preview1.fd_write"),
        "{error}"
    );

    // Missing exports: rename the entry point.
    let text = wat_module("", IDENTITY_BODY, "", F64_SCHEMA);
    let renamed = replace_bytes(&text, b"wafer_transform", b"wafer_transfXrm");
    let error = load_error(&renamed);
    assert!(
        matches!(&error, TransformError::MissingExport(name) if name == "wafer_transform"),
        "{error}"
    );

    let abi2 = replace_bytes(&text, b"wafer_abi_v1", b"wafer_abi_v2");
    let error = load_error(&abi2);
    assert!(matches!(error, TransformError::WrongAbi { .. }), "{error}");
    assert!(error.to_string().contains("wafer_abi_v2"), "{error}");

    let no_schema = wat_module("", IDENTITY_BODY, "", F64_SCHEMA);
    let no_schema = replace_bytes(&no_schema, b"wafer.schema", b"other.schema");
    let error = load_error(&no_schema);
    assert!(matches!(error, TransformError::Schema(_)), "{error}");

    let bad_type = wat_module(
        "",
        IDENTITY_BODY,
        "",
        r#"{"abi":1,"name":"t","inputs":[{"name":"x","type":"decimal"}],"outputs":[{"name":"y","type":"float64"}]}"#,
    );
    let error = load_error(&bad_type);
    assert!(error.to_string().contains("decimal"), "{error}");

    let big = vec![0u8; TransformLimits::default().max_module_bytes + 1];
    assert!(matches!(
        load_error(&big),
        TransformError::ModuleTooLarge { .. }
    ));
}

fn replace_bytes(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = haystack.to_vec();
    let mut found = false;
    for i in 0..=out.len() - from.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            found = true;
        }
    }
    assert!(found, "pattern not found");
    out
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let bytes = wat_module("", "(loop $l (br $l)) (i32.const 0)", "", F64_SCHEMA);
    let error = run_error(&bytes, TransformLimits::default());
    assert!(
        matches!(error, TransformError::FuelExhausted { rows: 3, .. }),
        "{error}"
    );
}

#[test]
fn infinite_loop_hits_the_wall_clock_limit_when_fuel_is_unlimited() {
    let bytes = wat_module("", "(loop $l (br $l)) (i32.const 0)", "", F64_SCHEMA);
    let limits = TransformLimits {
        fuel_base: u64::MAX / 2,
        max_call_ms: 50,
        ..TransformLimits::default()
    };
    // The error is the wall-clock limit's (fuel is unlimited here); the
    // 60 s wait only turns a limit that never fires into a failure, not a
    // hang.
    let (done, error) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(run_error(&bytes, limits)));
    let error = error
        .recv_timeout(Duration::from_secs(60))
        .expect("the wall-clock limit never fired");
    assert!(
        matches!(error, TransformError::Timeout(d) if d == Duration::from_millis(50)),
        "{error}"
    );
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let body = "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i32.const 0)";
    let error = run_error(
        &wat_module("", body, "", F64_SCHEMA),
        TransformLimits::default(),
    );
    assert!(
        matches!(error, TransformError::MemoryLimit { .. }),
        "{error}"
    );
}

#[test]
fn deep_recursion_overflows_the_stack() {
    let body = "(drop (call $down (i32.const 0))) (i32.const 0)";
    let extra =
        "(func $down (param i32) (result i32) (call $down (i32.add (local.get 0) (i32.const 1))))";
    let error = run_error(
        &wat_module("", body, extra, F64_SCHEMA),
        TransformLimits::default(),
    );
    assert!(
        matches!(error, TransformError::StackOverflow { .. }),
        "{error}"
    );
}

#[test]
fn unreachable_is_a_trap_and_a_reported_error_keeps_its_message() {
    let error = run_error(
        &wat_module("", "unreachable", "", F64_SCHEMA),
        TransformLimits::default(),
    );
    assert!(
        matches!(&error, TransformError::Trap(message) if message.contains("unreachable")),
        "{error}"
    );

    let imports = r#"(import "wafer" "error" (func $error (param i32 i32 i32)))"#;
    let body = "(call $error (i32.const 1024) (i32.const 17) (i32.const 2)) (i32.const 1)";
    let extra = r#"(data (i32.const 1024) "conv_rate is < 0")"#;
    let error = run_error(
        &wat_module(imports, body, extra, F64_SCHEMA),
        TransformLimits::default(),
    );
    assert!(
        matches!(&error, TransformError::Failed { message, row: Some(2) } if message.starts_with("conv_rate is < 0")),
        "{error}"
    );
}

#[test]
fn output_pointing_outside_memory_is_rejected() {
    let schema = r#"{"abi":1,"name":"t","inputs":[{"name":"x","type":"float64"}],"outputs":[{"name":"s","type":"string"}]}"#;
    // Output 0's values pointer (desc+36) and length (desc+44) point past
    // the end of memory.
    let body = "(i32.store offset=36 (local.get $desc) (i32.const 0x10FF00)) \
                (i32.store offset=44 (local.get $desc) (i32.const 100000)) (i32.const 0)";
    let error = run_error(
        &wat_module("", body, "", schema),
        TransformLimits::default(),
    );
    assert!(
        matches!(&error, TransformError::BadOutput(m) if m.contains("past the end of memory")),
        "{error}"
    );
}

#[test]
fn a_batch_dependent_module_fails_the_row_wise_check() {
    // y = number of rows in the batch: fine per call, different per batch.
    let body = r#"(local $i i32) (local $n i32) (local $out i32)
        (local.set $n (i32.load offset=4 (local.get $desc)))
        (local.set $out (i32.load offset=36 (local.get $desc)))
        (block $done (loop $l
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (f64.store (i32.add (local.get $out) (i32.mul (local.get $i) (i32.const 8)))
            (f64.convert_i32_u (local.get $n)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $l)))
        (memory.fill (i32.load offset=32 (local.get $desc)) (i32.const 255)
          (i32.shr_u (i32.add (local.get $n) (i32.const 7)) (i32.const 3)))
        (i32.const 0)"#;
    let dir = tempfile::tempdir().unwrap();
    let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    let error = transforms
        .upload(
            "counter",
            &wat_module("", body, "", F64_SCHEMA),
            "test",
            &|_| Ok(()),
        )
        .expect_err("rejected");
    assert!(matches!(error, TransformError::NotRowWise(_)), "{error}");
    assert!(transforms.list().unwrap().is_empty());
}

#[test]
fn a_module_keeping_state_between_calls_fails_the_self_check() {
    // y = how many calls this instance has served: row-wise within a call,
    // but a lookup would see a different value than a training set.
    let body = r#"(local $i i32) (local $n i32) (local $out i32)
        (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
        (local.set $n (i32.load offset=4 (local.get $desc)))
        (local.set $out (i32.load offset=36 (local.get $desc)))
        (block $done (loop $l
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (f64.store (i32.add (local.get $out) (i32.mul (local.get $i) (i32.const 8)))
            (f64.convert_i32_u (global.get $calls)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $l)))
        (memory.fill (i32.load offset=32 (local.get $desc)) (i32.const 255)
          (i32.shr_u (i32.add (local.get $n) (i32.const 7)) (i32.const 3)))
        (i32.const 0)"#;
    let dir = tempfile::tempdir().unwrap();
    let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    let module = wat_module(
        "",
        body,
        "(global $calls (mut i32) (i32.const 0))",
        F64_SCHEMA,
    );
    let error = transforms
        .upload("stateful", &module, "test", &|_| Ok(()))
        .expect_err("rejected");
    assert!(matches!(error, TransformError::NotRowWise(_)), "{error}");
}

/// The self-check of 16 rows and 18 calls missed both of these: y = x + 1
/// from call 19 on, and y = x + 1 in batches over 16 rows.
#[test]
fn late_state_changes_and_large_batch_behaviour_fail_the_self_check() {
    let copy_plus = |condition: &str| {
        format!(
            r#"(local $i i32) (local $n i32) (local $in i32) (local $out i32) (local $add f64)
        (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
        (local.set $n (i32.load offset=4 (local.get $desc)))
        (local.set $in (i32.load offset=20 (local.get $desc)))
        (local.set $out (i32.load offset=36 (local.get $desc)))
        (if {condition} (then (local.set $add (f64.const 1))))
        (block $done (loop $l
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (f64.store (i32.add (local.get $out) (i32.mul (local.get $i) (i32.const 8)))
            (f64.add (local.get $add)
              (f64.load (i32.add (local.get $in) (i32.mul (local.get $i) (i32.const 8))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $l)))
        (memory.fill (i32.load offset=32 (local.get $desc)) (i32.const 255)
          (i32.shr_u (i32.add (local.get $n) (i32.const 7)) (i32.const 3)))
        (i32.const 0)"#
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    for (name, condition) in [
        ("late", "(i32.gt_u (global.get $calls) (i32.const 18))"),
        ("wide", "(i32.gt_u (local.get $n) (i32.const 16))"),
    ] {
        let module = wat_module(
            "",
            &copy_plus(condition),
            "(global $calls (mut i32) (i32.const 0))",
            F64_SCHEMA,
        );
        let error = transforms
            .upload(name, &module, "test", &|_| Ok(()))
            .expect_err(name);
        assert!(
            matches!(error, TransformError::NotRowWise(_)),
            "{name}: {error}"
        );
    }
    // The same module without the condition passes: the check is not
    // refusing everything.
    let module = wat_module(
        "",
        &copy_plus("(i32.const 0)"),
        "(global $calls (mut i32) (i32.const 0))",
        F64_SCHEMA,
    );
    transforms
        .upload("plain", &module, "test", &|_| Ok(()))
        .unwrap();
}

#[test]
fn warm_instances_recover_from_failures_and_are_recycled_before_a_leak_bites() {
    // y = x, except x = 42 traps; every call leaks one page.
    let body = r#"(local $i i32) (local $n i32) (local $in i32) (local $out i32)
        (drop (memory.grow (i32.const 1)))
        (local.set $n (i32.load offset=4 (local.get $desc)))
        (local.set $in (i32.load offset=20 (local.get $desc)))
        (local.set $out (i32.load offset=36 (local.get $desc)))
        (block $done (loop $l
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (if (f64.eq (f64.load (i32.add (local.get $in) (i32.mul (local.get $i) (i32.const 8))))
                      (f64.const 42))
            (then unreachable))
          (f64.store (i32.add (local.get $out) (i32.mul (local.get $i) (i32.const 8)))
            (f64.load (i32.add (local.get $in) (i32.mul (local.get $i) (i32.const 8)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $l)))
        (memory.fill (i32.load offset=32 (local.get $desc)) (i32.const 255)
          (i32.shr_u (i32.add (local.get $n) (i32.const 7)) (i32.const 3)))
        (i32.const 0)"#;
    let limits = TransformLimits {
        max_memory_bytes: 4 << 20, // 64 pages; the module starts with 17
        ..TransformLimits::default()
    };
    let transform = runtime(limits)
        .compile_checked(&wat_module("", body, "", F64_SCHEMA))
        .unwrap();
    let input = |x: f64| -> Vec<ArrayRef> { vec![Arc::new(Float64Array::from(vec![x]))] };
    // 500 calls leak 500 pages, far past the limit, had one instance served
    // them all.
    for call in 0..500 {
        let x = call as f64 + 0.5;
        let out = transform
            .run(&input(x))
            .unwrap_or_else(|e| panic!("call {call}: {e}"));
        assert_eq!(out[0].as_primitive::<Float64Type>().value(0), x);
        if call % 50 == 0 {
            let error = transform.run(&input(42.0)).expect_err("traps");
            assert!(matches!(error, TransformError::Trap(_)), "{error}");
        }
    }
}

#[test]
fn a_runaway_call_does_not_hold_up_other_calls() {
    let limits = TransformLimits {
        fuel_base: u64::MAX / 2,
        max_call_ms: 3000,
        ..TransformLimits::default()
    };
    let runtime = runtime(limits);
    let looping = runtime
        .compile_checked(&wat_module(
            "",
            "(loop $l (br $l)) (i32.const 0)",
            "",
            F64_SCHEMA,
        ))
        .unwrap();
    let good = runtime
        .compile_checked(&transform_module("conv_rate_plus_val"))
        .unwrap();
    let (entered, started) = std::sync::mpsc::channel();
    let runaway = std::thread::spawn(move || {
        let input: ArrayRef = Arc::new(Float64Array::from(vec![1.0]));
        entered.send(()).unwrap();
        looping.run(&[input])
    });
    started.recv().unwrap();
    for i in 0..200 {
        let out = good
            .run(&[
                Arc::new(Float64Array::from(vec![0.5])) as ArrayRef,
                Arc::new(Int64Array::from(vec![i])) as ArrayRef,
            ])
            .unwrap();
        assert_eq!(
            out[0].as_primitive::<Float64Type>().value(0),
            0.5 + i as f64
        );
    }
    // Ordering, not timing: the good calls all ended while the runaway
    // call was still running (it ends only at its 3 s limit).
    assert!(
        !runaway.is_finished(),
        "good calls waited for the runaway one"
    );
    let error = runaway.join().unwrap().unwrap_err();
    assert!(matches!(error, TransformError::Timeout(_)), "{error}");
}

#[test]
fn module_registry_versions_pins_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    let v1 = transform_module("conv_rate_plus_val");
    let first = transforms.upload("conv", &v1, "ada", &|_| Ok(())).unwrap();
    assert!(!first.unchanged);
    assert!(
        transforms
            .upload("conv", &v1, "ada", &|_| Ok(()))
            .unwrap()
            .unchanged
    );

    let v2 = wat_module(
        "",
        IDENTITY_BODY,
        "",
        r#"{"abi":1,"name":"t","inputs":[{"name":"conv_rate","type":"float64"}],"outputs":[{"name":"y","type":"float64"}]}"#,
    );
    let second = transforms.upload("conv", &v2, "bob", &|_| Ok(())).unwrap();
    assert_ne!(first.sha256, second.sha256);
    assert_eq!(transforms.resolve("conv").unwrap().sha256(), second.sha256);
    let pinned = transforms
        .resolve(&format!("conv@sha256:{}", first.sha256))
        .unwrap();
    assert_eq!(pinned.schema().outputs[0].name, "conv_rate_plus_val");

    // A bad module changes nothing: no history entry, no stored file.
    let stored = std::fs::read_dir(dir.path().join("modules"))
        .unwrap()
        .count();
    assert!(transforms
        .upload("conv", b"garbage", "eve", &|_| Ok(()))
        .is_err());
    assert!(transforms
        .upload(
            "conv",
            &wat_module("", "unreachable", "", F64_SCHEMA),
            "eve",
            &|_| Ok(())
        )
        .is_err());
    assert_eq!(transforms.history("conv").unwrap().len(), 2);
    assert_eq!(
        std::fs::read_dir(dir.path().join("modules"))
            .unwrap()
            .count(),
        stored
    );

    let rolled = transforms
        .rollback("conv", "1", "ada", &|_| Ok(()))
        .unwrap();
    assert_eq!(rolled.sha256, first.sha256);
    assert_eq!(transforms.resolve("conv").unwrap().sha256(), first.sha256);
    assert_eq!(transforms.history("conv").unwrap().len(), 3);
    transforms
        .rollback(
            "conv",
            &format!("sha256:{}", &second.sha256[..12]),
            "ada",
            &|_| Ok(()),
        )
        .unwrap();
    assert_eq!(transforms.resolve("conv").unwrap().sha256(), second.sha256);

    assert!(matches!(
        transforms.resolve("nope"),
        Err(TransformError::UnknownTransform(_))
    ));
    assert!(matches!(
        transforms.resolve(&format!("conv@sha256:{}", "0".repeat(64))),
        Err(TransformError::UnknownVersion { .. })
    ));
    assert!(matches!(
        transforms.rollback("conv", "9", "x", &|_| Ok(())),
        Err(TransformError::UnknownVersion { .. })
    ));
    assert!(matches!(
        transforms.upload("bad name", &v1, "x", &|_| Ok(())),
        Err(TransformError::InvalidName(_))
    ));

    // A restart loads from the compiled cache and finds the same state.
    drop(transforms);
    let reopened = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    assert_eq!(reopened.runtime().loads(), ModuleLoads::default());
    assert_eq!(reopened.resolve("conv").unwrap().sha256(), second.sha256);
    assert_eq!(
        reopened.runtime().loads(),
        ModuleLoads {
            compiled: 0,
            from_cache: 1
        },
        "the reopened store compiled instead of loading its cache"
    );
    let listed = reopened.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].versions, 4);
    assert!(
        std::fs::read_dir(dir.path().join("compiled"))
            .unwrap()
            .count()
            >= 2
    );
}

#[test]
fn variable_width_output_over_the_limit_fails_the_call() {
    let limits = TransformLimits {
        max_output_bytes: 64,
        ..TransformLimits::default()
    };
    let transform = runtime(limits)
        .compile_checked(&transform_module("email_domain"))
        .expect("loads");
    let short: ArrayRef = Arc::new(StringArray::from(vec!["a@b.io"]));
    assert!(transform.run(&[short]).is_ok());
    let long: ArrayRef = Arc::new(StringArray::from(vec![format!("a@{}.io", "x".repeat(100))]));
    let error = transform.run(&[long]).expect_err("over the limit");
    assert!(
        matches!(error, TransformError::OutputTooLarge { limit: 64, .. }),
        "{error}"
    );
}
