//! Real WebAssembly for the tests: the example transforms built with the SDK
//! for `wasm32-unknown-unknown` (once per test binary), and hand-written WAT
//! modules for hostile cases.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds `transforms/` for the wasm target and returns the directory of the
/// `.wasm` files. Installs the target with rustup when it is missing.
pub fn transforms_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("transforms-target");
        let installed = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-unknown-unknown"))
            .unwrap_or(false);
        if !installed {
            let status = Command::new("rustup")
                .args(["target", "add", "wasm32-unknown-unknown"])
                .status()
                .expect("rustup runs");
            assert!(
                status.success(),
                "rustup target add wasm32-unknown-unknown failed"
            );
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let output = Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
            .current_dir(repo.join("transforms"))
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("cargo runs");
        assert!(
            output.status.success(),
            "building transforms/ for wasm32 failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        target.join("wasm32-unknown-unknown").join("release")
    })
}

/// The bytes of one example transform module.
pub fn transform_module(crate_name: &str) -> Vec<u8> {
    let path = transforms_dir().join(format!("{crate_name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The schema of a one-input, one-output float64 transform.
pub const F64_SCHEMA: &str = r#"{"abi":1,"name":"t","inputs":[{"name":"x","type":"float64"}],"outputs":[{"name":"y","type":"float64"}]}"#;

/// A complete ABI v1 module in WAT: a bump allocator, the marker, the given
/// `wafer_transform` body (parameter `$desc`, returns i32), `imports` first
/// and `schema` as the custom section. `extra` adds module fields.
pub fn wat_module(imports: &str, body: &str, extra: &str, schema: &str) -> Vec<u8> {
    let escaped = schema.replace('\\', "\\\\").replace('"', "\\\"");
    let text = format!(
        r#"(module
  {imports}
  (memory (export "memory") 17)
  (global $heap (mut i32) (i32.const 65536))
  (func (export "wafer_abi_v1"))
  (func (export "wafer_alloc") (param $size i32) (param $align i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "wafer_transform") (param $desc i32) (result i32)
    {body})
  {extra}
  (@custom "wafer.schema" "{escaped}")
)"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad WAT: {e}\n{text}"))
}

/// Copies input 0 (float64) to output 0 and marks every row valid: the
/// well-behaved baseline the hostile modules differ from. Input 0's
/// descriptor is at `$desc+16`, output 0's at `$desc+32`.
pub const IDENTITY_BODY: &str = r#"(local $n i32)
    (local.set $n (i32.load offset=4 (local.get $desc)))
    (memory.copy (i32.load offset=36 (local.get $desc)) (i32.load offset=20 (local.get $desc))
      (i32.mul (local.get $n) (i32.const 8)))
    (memory.fill (i32.load offset=32 (local.get $desc)) (i32.const 255)
      (i32.shr_u (i32.add (local.get $n) (i32.const 7)) (i32.const 3)))
    (i32.const 0)"#;
