#!/usr/bin/env bash
# Cross-builds the edge build of wafer (no DuckDB, no Redis) for aarch64 Linux
# and smoke-tests it under qemu-user against the host's full build:
#
#   scripts/edge-aarch64.sh
#
# 1. Installs what is missing (Debian): gcc-aarch64-linux-gnu,
#    libc6-dev-arm64-cross, qemu-user-static (and curl, jq if absent), and the
#    aarch64-unknown-linux-gnu Rust target.
# 2. cargo build --profile edge --no-default-features --features edge
#    --target aarch64-unknown-linux-gnu; prints the binary's size, stripped
#    and not.
# 3. Runs it under qemu-aarch64-static: --version, --help, then serves a
#    bundle of the example project's `driver_activity` service (made with the
#    host build) and checks that its POST /get-online-features answer equals
#    the host server's.
#
# Environment:
#   CARGO_TARGET_DIR      build output (default: target)
#   WAFER_HOST_BIN        the host's full build of wafer (default:
#                         $CARGO_TARGET_DIR/release/wafer, built with
#                         `cargo build --release` when missing or older than
#                         the sources)
#   EDGE_HEALTH_TIMEOUT   seconds to wait for GET /health (default: 60)
#   KEEP_WORK=1           keep the temporary project after a pass (it is
#                         always kept after a failure)
#
# Run by hand, not by CI. Exits non-zero on any failure.
set -Eeuo pipefail

if [[ $# -gt 0 ]]; then
  sed -n '2,/^set -Eeuo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  [[ $1 == -h || $1 == --help ]] && exit 0
  exit 2
fi

cd "$(dirname "$0")/.."
ROOT=$PWD

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
QEMU=qemu-aarch64-static
HEALTH_TIMEOUT=${EDGE_HEALTH_TIMEOUT:-60}
# The example's driver_activity service reads driver_hourly_stats only (no
# on-demand view), so the lookup needs join keys and no request data
# (src/example.rs). Drivers are numbered from 1001.
BODY='{"feature_service":"driver_activity","entities":{"driver_id":[1001,1002]}}'

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
case $CARGO_TARGET_DIR in
  /*) ;;
  *) CARGO_TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;;
esac

# Settings in the environment (WAFER_SERVER_PORT, WAFER_DATA_DIR, ...) would
# change what the two servers read: drop them all, after reading ours.
HOST_BIN_FROM_ENV=${WAFER_HOST_BIN:-}
while read -r name; do
  unset "$name"
done < <(compgen -e | grep '^WAFER_' || true)

step() { printf '\n==> %s\n' "$*"; }
die() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}
trap 'rc=$?; printf "FAIL: line %s: %s (exit %s)\n" "$LINENO" "$BASH_COMMAND" "$rc" >&2; exit "$rc"' ERR

human() { numfmt --to=iec-i --suffix=B "$1" 2>/dev/null || echo "$1 bytes"; }

# --- temporary work area and cleanup ----------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wafer-edge.XXXXXX")
PIDS=()

cleanup() {
  local rc=$?
  trap - ERR
  set +e
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [[ $rc -ne 0 ]] && rmdir "$WORK" 2>/dev/null; then
    printf '\nFAIL (exit %s)\n' "$rc" >&2
  elif [[ $rc -ne 0 ]]; then
    local log
    for log in "$WORK"/*.log; do
      [[ -s $log ]] || continue
      printf '\n--- last lines of %s ---\n' "$log" >&2
      tail -n 30 "$log" >&2
    done
    printf '\nFAIL (exit %s); work directory kept: %s\n' "$rc" "$WORK" >&2
  elif [[ ${KEEP_WORK:-} == 1 ]]; then
    printf 'work directory kept: %s\n' "$WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. install what is missing ---------------------------------------------

step "checking the cross toolchain, qemu and the Rust target"
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu)
[[ -e $SYSROOT/lib/crt1.o && -e $SYSROOT/include/stdio.h ]] || missing+=(libc6-dev-arm64-cross)
command -v "$QEMU" >/dev/null 2>&1 || missing+=(qemu-user-static)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ! command -v jq >/dev/null 2>&1 && ! command -v python3 >/dev/null 2>&1; then
  missing+=(jq)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "installing ${missing[*]}"
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install ${missing[*]} first"
    SUDO=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 || die "no apt-get (not Debian/Ubuntu?): install ${missing[*]} first"
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
for tool in aarch64-linux-gnu-gcc aarch64-linux-gnu-strip "$QEMU" curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is still missing after installing"
done

command -v rustup >/dev/null 2>&1 || die "rustup not found: the $TARGET target is installed with rustup"
if ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "installing the $TARGET Rust target"
  rustup target add "$TARGET"
fi
echo "ok: $(aarch64-linux-gnu-gcc --version | head -n 1); $("$QEMU" --version | head -n 1)"

# --- 2. build ---------------------------------------------------------------

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}
export CC_aarch64_unknown_linux_gnu=${CC_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-gcc}
export AR_aarch64_unknown_linux_gnu=${AR_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-ar}
if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
  export CXX_aarch64_unknown_linux_gnu=${CXX_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-g++}
fi

step "building the edge build for $TARGET (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --profile edge --no-default-features --features edge --target "$TARGET" ||
  die "cargo build of the edge build failed (Cargo.toml must define [profile.edge] and the 'edge' feature)"

BIN=$CARGO_TARGET_DIR/$TARGET/edge/wafer
[[ -x $BIN ]] || die "no binary at $BIN after the build"
# ELF e_machine (bytes 18-19, little-endian) is 0xb7 for aarch64.
machine=$(od -An -tx1 -j18 -N2 "$BIN" | tr -d ' \n')
[[ $machine == b700 ]] || die "$BIN is not an aarch64 ELF binary (e_machine $machine)"

STRIPPED=$BIN.stripped
aarch64-linux-gnu-strip -o "$STRIPPED" "$BIN"
size=$(stat -c %s "$BIN")
stripped_size=$(stat -c %s "$STRIPPED")
echo "binary:   $BIN  $(human "$size")"
echo "stripped: $STRIPPED  $(human "$stripped_size")"

# --- 3. smoke test under qemu -----------------------------------------------

edge() { "$QEMU" -L "$SYSROOT" "$BIN" "$@"; }

step "running the edge build under $QEMU: --version, --help"
version=$(edge --version) || die "'wafer --version' failed under qemu"
echo "$version"
[[ $version == wafer\ * ]] || die "unexpected --version output: $version"
help=$(edge --help) || die "'wafer --help' failed under qemu"
[[ $help == *serve* ]] || die "'wafer --help' does not list the serve command"
serve_help=$(edge serve --help) || die "'wafer serve --help' failed under qemu"
for flag in --bundle --data-dir --port; do
  [[ $serve_help == *"$flag"* ]] || die "the edge build's 'serve' has no $flag option"
done
echo "ok"

# The host's full build makes the example project and the bundle.
if [[ -n $HOST_BIN_FROM_ENV ]]; then
  HOST=$HOST_BIN_FROM_ENV
  [[ -x $HOST ]] || die "WAFER_HOST_BIN=$HOST is not an executable file"
else
  HOST=$CARGO_TARGET_DIR/release/wafer
  if [[ ! -x $HOST ]]; then
    step "building the host's full build ($HOST is missing)"
    cargo build --release || die "cargo build --release (the host build) failed"
  elif [[ -n $(find src Cargo.toml Cargo.lock -newer "$HOST" -print -quit) ]]; then
    step "rebuilding the host's full build ($HOST is older than the sources)"
    cargo build --release || die "cargo build --release (the host build) failed"
  fi
  [[ -x $HOST ]] || die "no host binary at $HOST"
fi
case $HOST in
  /*) ;;
  *) HOST=$ROOT/$HOST ;;
esac
"$HOST" bundle --help >/dev/null 2>&1 ||
  die "the host build $HOST has no 'bundle' command (stale? rebuild it or set WAFER_HOST_BIN)"

DIR=$WORK/project
step "creating the example project in $DIR with the host build"
"$HOST" init "$DIR" --drivers 1000 --hours 2 >"$WORK/init.log" 2>&1 ||
  die "wafer init failed"
(cd "$DIR" && "$HOST" apply) >"$WORK/apply.log" 2>&1 || die "wafer apply failed"
(cd "$DIR" && "$HOST" materialize 2020-01-01T00:00:00Z now) >"$WORK/materialize.log" 2>&1 ||
  die "wafer materialize failed"
(cd "$DIR" && "$HOST" bundle create "$DIR/edge.bundle" --feature-service driver_activity) \
  >"$WORK/bundle.log" 2>&1 || die "wafer bundle create failed"
[[ -e $DIR/edge.bundle ]] || die "wafer bundle create wrote no $DIR/edge.bundle"
echo "bundle: $DIR/edge.bundle ($(human "$(du -sb "$DIR/edge.bundle" | cut -f1)"))"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  local port
  for _ in $(seq 100); do
    port=$((18000 + RANDOM % 1000))
    if [[ $port != "${1:-}" ]] && port_free "$port"; then
      echo "$port"
      return 0
    fi
  done
  return 1
}
EDGE_PORT=$(pick_port) || die "found no free port in 18000-18999"
HOST_PORT=$(pick_port "$EDGE_PORT") || die "found no free port in 18000-18999"

# The edge server starts in an empty directory: the bundle must be enough.
mkdir "$WORK/edge-cwd"
step "starting the edge server under qemu on 127.0.0.1:$EDGE_PORT and the host server on 127.0.0.1:$HOST_PORT"
(cd "$WORK/edge-cwd" && exec "$QEMU" -L "$SYSROOT" "$BIN" serve --bundle "$DIR/edge.bundle" \
  --data-dir "$DIR/edge-state" --host 127.0.0.1 --port "$EDGE_PORT") >"$WORK/edge-server.log" 2>&1 &
EDGE_PID=$!
PIDS+=("$EDGE_PID")
(cd "$DIR" && exec "$HOST" serve --host 127.0.0.1 --port "$HOST_PORT") >"$WORK/host-server.log" 2>&1 &
HOST_PID=$!
PIDS+=("$HOST_PID")

wait_health() { # NAME PID PORT
  local deadline=$((SECONDS + HEALTH_TIMEOUT))
  until curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$3/health"; do
    kill -0 "$2" 2>/dev/null || die "the $1 server exited before answering GET /health"
    ((SECONDS < deadline)) || die "the $1 server did not answer GET /health within $HEALTH_TIMEOUT s"
    sleep 1
  done
  echo "$1 server healthy"
}
wait_health edge "$EDGE_PID" "$EDGE_PORT"
wait_health host "$HOST_PID" "$HOST_PORT"

lookup() { # NAME PORT OUTPUT
  local code
  code=$(curl -sS --max-time 60 -o "$3" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data "$BODY" "http://127.0.0.1:$2/get-online-features") ||
    die "$1 server: POST /get-online-features failed"
  [[ $code == 200 ]] || die "$1 server: POST /get-online-features answered HTTP $code: $(head -c 2000 "$3")"
}
normalize() { # INPUT OUTPUT
  if command -v jq >/dev/null 2>&1; then
    jq -S . "$1" >"$2"
  else
    python3 -m json.tool --sort-keys "$1" >"$2"
  fi
}
all_present() { # INPUT: every status of every column is PRESENT
  if command -v jq >/dev/null 2>&1; then
    jq -e '[.results[].statuses[]] | length > 0 and all(. == "PRESENT")' "$1" >/dev/null
  else
    python3 -c 'import json, sys
s = [x for c in json.load(open(sys.argv[1]))["results"] for x in c["statuses"]]
sys.exit(0 if s and all(x == "PRESENT" for x in s) else 1)' "$1"
  fi
}

step "POST /get-online-features $BODY"
lookup edge "$EDGE_PORT" "$WORK/edge.json"
lookup host "$HOST_PORT" "$WORK/host.json"
normalize "$WORK/edge.json" "$WORK/edge.sorted.json" || die "the edge server's answer is not JSON: $(head -c 2000 "$WORK/edge.json")"
normalize "$WORK/host.json" "$WORK/host.sorted.json" || die "the host server's answer is not JSON: $(head -c 2000 "$WORK/host.json")"
if ! cmp -s "$WORK/edge.sorted.json" "$WORK/host.sorted.json"; then
  diff -u "$WORK/host.sorted.json" "$WORK/edge.sorted.json" >&2 || true
  die "the edge server's answer (+) differs from the host server's (-)"
fi
all_present "$WORK/host.json" ||
  die "the answers agree but not every value is PRESENT (materialization missing?): $(head -c 2000 "$WORK/host.json")"
cat "$WORK/edge.json"
echo

printf '\nPASS: the aarch64 edge build (%s, %s stripped) serves the same answer as the host build\n' \
  "$(human "$size")" "$(human "$stripped_size")"
