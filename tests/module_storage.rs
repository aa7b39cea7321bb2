//! Module storage under stress and tampering: many modules against a small
//! instance pool, compiled code swapped on disk, refused modules, and new
//! versions that would break applied views.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/wasm.rs"]
mod wasm;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array};
use arrow::datatypes::Float64Type;
use cli::{fails, ok, wafer};
use wafer::transform::{ModuleLoads, TransformError, TransformLimits, Transforms};
use wasm::{wat_module, IDENTITY_BODY};

/// A float64 module named `name` that adds `add` to its input.
fn adder(name: &str, add: f64) -> Vec<u8> {
    let (locals, rest) = IDENTITY_BODY.split_once('\n').unwrap();
    // Copy the input, then add `add` to each of the n output values.
    let body = format!(
        "{locals}
    (local $i i32) (local $out i32)
{rest}
    drop
    (local.set $out (i32.load offset=36 (local.get $desc)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (f64.store (i32.add (local.get $out) (i32.mul (local.get $i) (i32.const 8)))
        (f64.add (f64.load (i32.add (local.get $out) (i32.mul (local.get $i) (i32.const 8))))
                 (f64.const {add})))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (i32.const 0)"
    );
    let schema = format!(
        r#"{{"abi":1,"name":"{name}","inputs":[{{"name":"x","type":"float64"}}],"outputs":[{{"name":"y","type":"float64"}}]}}"#
    );
    wat_module("", &body, "", &schema)
}

fn run(transforms: &Transforms, reference: &str, x: f64) -> f64 {
    let input: ArrayRef = Arc::new(Float64Array::from(vec![x]));
    let out = transforms
        .resolve(reference)
        .unwrap()
        .run(&[input])
        .unwrap();
    out[0].as_primitive::<Float64Type>().value(0)
}

fn accept_all(_: &wafer::transform::ModuleSchema) -> Result<(), String> {
    Ok(())
}

fn compiled_files(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir.join("compiled")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// More modules than the pool has instance slots: every one uploads and
/// runs (upload 129 used to fail, and every later fresh instance with it).
#[test]
fn the_instance_pool_never_limits_how_many_modules_exist() {
    let dir = tempfile::tempdir().unwrap();
    let limits = TransformLimits {
        max_concurrent_instances: 16,
        ..TransformLimits::default()
    };
    let transforms = Transforms::open(dir.path(), limits).unwrap();
    for i in 0..48 {
        let name = format!("m{i}");
        transforms
            .upload(&name, &adder(&name, i as f64), "test", &accept_all)
            .unwrap_or_else(|e| panic!("upload {i}: {e}"));
    }
    for i in 0..48 {
        assert_eq!(run(&transforms, &format!("m{i}"), 1.0), 1.0 + i as f64);
    }
    // New versions of one name: the replaced ones leave memory.
    for i in 0..48 {
        transforms
            .upload("m0", &adder("m0", 100.0 + i as f64), "test", &accept_all)
            .unwrap_or_else(|e| panic!("version {i}: {e}"));
        assert_eq!(run(&transforms, "m0", 1.0), 101.0 + i as f64);
    }
    assert_eq!(
        transforms.loaded_count(),
        48,
        "replaced versions stayed loaded"
    );

    // Uploads by another process: the server's copy notices on resolving.
    let other = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    for i in 0..5 {
        other
            .upload("m1", &adder("m1", 200.0 + i as f64), "test", &accept_all)
            .unwrap();
        // Seen once the name's resolution (kept 1 s) is read again: well
        // within 10 s.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while run(&transforms, "m1", 1.0) != 201.0 + i as f64 {
            assert!(
                std::time::Instant::now() < deadline,
                "version {i} from another process never seen"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    assert_eq!(
        transforms.loaded_count(),
        48,
        "versions replaced elsewhere stayed loaded"
    );
}

/// Compiled code is native code: a cache file copied over another
/// module's must not run as that module.
#[test]
fn compiled_code_swapped_on_disk_is_refused_and_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
        let a = transforms
            .upload("a", &adder("a", 1.0), "test", &accept_all)
            .unwrap();
        let b = transforms
            .upload("b", &adder("b", 2.0), "test", &accept_all)
            .unwrap();
        (a.sha256, b.sha256)
    };
    let files = compiled_files(dir.path());
    let find = |sha: &str| {
        files
            .iter()
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(sha))
            .unwrap_or_else(|| panic!("no compiled file for {sha} in {files:?}"))
            .clone()
    };
    let (file_a, file_b) = (find(&a), find(&b));
    std::fs::copy(&file_a, &file_b).unwrap();

    let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    assert_eq!(run(&transforms, "b", 1.0), 3.0, "b ran a's code");
    assert_eq!(run(&transforms, "a", 1.0), 2.0);
    // a's file is trusted, b's (a's code under b's name) compiled again.
    assert_eq!(
        transforms.runtime().loads(),
        ModuleLoads {
            compiled: 1,
            from_cache: 1
        }
    );
    // The bad file was replaced by b's own code.
    assert_ne!(
        std::fs::read(&file_a).unwrap(),
        std::fs::read(&file_b).unwrap()
    );

    // A cache from another installation (another key) is not trusted: its
    // files are replaced by ones tagged with this installation's key.
    let before = std::fs::read(&file_b).unwrap();
    std::fs::remove_file(dir.path().join("compiled.key")).unwrap();
    let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    assert_eq!(run(&transforms, "b", 1.0), 3.0);
    let after = std::fs::read(&file_b).unwrap();
    assert_ne!(
        before[before.len() - 32..],
        after[after.len() - 32..],
        "a file tagged with another key was used as it was"
    );

    // Not a regular file under the expected name: not read, not waited on.
    std::fs::remove_file(&file_a).unwrap();
    let fifo = std::ffi::CString::new(file_a.to_str().unwrap()).unwrap();
    // SAFETY: a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    assert_eq!(run(&transforms, "a", 1.0), 2.0);
}

/// The cache's key must be private: a key file others can read is not
/// trusted (the cache is off), never widened or silently replaced.
#[test]
fn a_key_file_others_can_read_disables_the_cache() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    {
        let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
        transforms
            .upload("a", &adder("a", 1.0), "test", &accept_all)
            .unwrap();
    }
    let key = dir.path().join("compiled.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    for file in compiled_files(dir.path()) {
        std::fs::remove_file(file).unwrap();
    }
    let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    assert_eq!(run(&transforms, "a", 1.0), 2.0);
    assert!(
        compiled_files(dir.path()).is_empty(),
        "compiled code was cached under a key others can read"
    );
}

#[test]
fn refused_modules_leave_no_compiled_code_and_stale_entries_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    // Valid, compiles, but the caller's check refuses it.
    let refused = transforms.upload("r", &adder("r", 1.0), "test", &|_| {
        Err("view 'v': no".to_string())
    });
    assert!(
        matches!(refused, Err(TransformError::BreaksViews(_))),
        "{refused:?}"
    );
    assert!(compiled_files(dir.path()).is_empty());
    assert!(
        transforms.history("r").is_err(),
        "a refused upload is recorded"
    );

    transforms
        .upload("kept", &adder("kept", 1.0), "test", &accept_all)
        .unwrap();
    let stray = dir
        .path()
        .join("compiled")
        .join(format!("{}-0000000000000000.cwasm", "ab".repeat(32)));
    std::fs::write(&stray, b"not code").unwrap();
    drop(transforms);
    let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    assert!(!stray.exists(), "a stale cache entry survived a restart");
    assert_eq!(compiled_files(dir.path()).len(), 1);
    assert_eq!(run(&transforms, "kept", 1.0), 2.0);
}

/// A new version whose outputs no longer fit an applied view is refused
/// with the view and field named; so is a rollback to one.
#[test]
fn a_version_that_would_break_an_applied_view_is_refused() {
    let project = cli::example_project();
    let dir = project.path();
    let conv = wasm::transforms_dir().join("conv_rate_plus_val.wasm");
    let email = wasm::transforms_dir().join("email_domain.wasm");
    ok(wafer(
        dir,
        &["transform", "upload", "conv", conv.to_str().unwrap()],
    ));
    std::fs::write(dir.join("scored.yaml"), cli::SCORED_VIEW).unwrap();
    std::fs::write(
        dir.join("wafer.yaml"),
        "project: driver_ranking\ndefinitions: [definitions.yaml, composite.yaml, scored.yaml]\n",
    )
    .unwrap();
    ok(wafer(dir, &["apply"]));

    let err = fails(wafer(
        dir,
        &["transform", "upload", "conv", email.to_str().unwrap()],
    ));
    assert!(
        err.contains("scored") && err.contains("conv_rate_plus_val"),
        "{err}"
    );
    // Not recorded: the first version is still the only one.
    let history = ok(wafer(dir, &["transform", "history", "conv"]));
    assert_eq!(
        history.lines().filter(|l| l.contains("upload")).count(),
        1,
        "{history}"
    );

    // The same module under another name is fine, and so is a version
    // that keeps the view's outputs.
    ok(wafer(
        dir,
        &["transform", "upload", "other", email.to_str().unwrap()],
    ));
    ok(wafer(
        dir,
        &["transform", "upload", "conv", conv.to_str().unwrap()],
    ));
}

/// A crash mid-append leaves a history line without its newline: the next
/// upload must still become the active version.
#[test]
fn an_upload_after_a_torn_history_line_is_active() {
    let dir = tempfile::tempdir().unwrap();
    let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    transforms
        .upload("t", &adder("t", 1.0), "test", &accept_all)
        .unwrap();
    let history = dir.path().join("names").join("t.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&history)
        .unwrap();
    std::io::Write::write_all(&mut file, br#"{"sha256":"ab","at":"2026-"#).unwrap();
    drop(file);
    let transforms = Transforms::open(dir.path(), TransformLimits::default()).unwrap();
    transforms
        .upload("t", &adder("t", 5.0), "test", &accept_all)
        .unwrap();
    assert_eq!(run(&transforms, "t", 1.0), 6.0);
    assert_eq!(transforms.history("t").unwrap().len(), 2);
}
