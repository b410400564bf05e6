#!/usr/bin/env bash
# Runs the fuzz targets: fuzz/run.sh [seconds per target, default 60] [target...]
# Needs cargo-fuzz (cargo install cargo-fuzz). Stable toolchain: RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz use its -Z flags; no sanitizer (ASan needs a nightly std), coverage-guided only.
# FUZZ_BUILD=dev builds without optimisation (5 min instead of 20 on 2 cores; slower runs, and
# integer overflow checks on); FUZZ_TARGET_DIR puts the build elsewhere (CI keeps it in
# ~/.cache so a later run rebuilds only what changed). Exits non-zero on a crash or hang.
#
# Every target is built first, then FUZZ_JOBS targets (default: the number of cores) run at
# once: a libFuzzer process uses one core, so on 2 cores two targets side by side each get the
# same `seconds` of one core as they would one after the other, in about half the wall time
# (sharing the caches, each makes 71-78 % of the runs it makes alone: fuzz/README.md). Each
# target's output goes to fuzz/target/log-<target>.txt; a failing target's last lines are printed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. .ci/env
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(hook_request bundle_to_features prefetch_template client_jwt smart_callback)
export RUSTC_BOOTSTRAP=1
build_flags=()
[ "${FUZZ_BUILD:-release}" = dev ] && build_flags=(--dev)
target_dir="${FUZZ_TARGET_DIR:-$root/fuzz/target}"
jobs="${FUZZ_JOBS:-$(nproc)}"
command -v cargo-fuzz >/dev/null || { echo "error: cargo-fuzz is missing: cargo install cargo-fuzz --locked (.ci/setup does)" >&2; exit 1; }
torch_lib="$(.venv/bin/python -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
mkdir -p fuzz/target

echo "==> building ${#targets[@]} fuzz targets"
for t in "${targets[@]}"; do
  cargo fuzz build --fuzz-dir fuzz --sanitizer none "${build_flags[@]}" --target-dir "$target_dir" "$t"
done

run_one() {
  local t="$1"
  # A scratch copy of the seeds: new inputs found by this run stay out of the committed corpus.
  local work="fuzz/target/corpus-$t"
  mkdir -p "$work"
  cp -n fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  cargo fuzz run --fuzz-dir fuzz --sanitizer none "${build_flags[@]}" --target-dir "$target_dir" \
    "$t" "$work" -- -max_total_time="$secs" -max_len=262144 -rss_limit_mb=4096 -timeout=10 \
    >"fuzz/target/log-$t.txt" 2>&1
}

failed=()
pids=()
names=()
finish() {  # waits for the oldest running target and reports it
  local pid="${pids[0]}" t="${names[0]}"
  pids=("${pids[@]:1}")
  names=("${names[@]:1}")
  if wait "$pid"; then
    echo "==> $t: ok ($(grep -E '^Done|^#[0-9]+.*DONE' "fuzz/target/log-$t.txt" | tail -1))"
  else
    echo "==> $t: FAILED — last lines of fuzz/target/log-$t.txt:"
    tail -n 40 "fuzz/target/log-$t.txt"
    failed+=("$t")
  fi
}
for t in "${targets[@]}"; do
  echo "==> $t for ${secs}s"
  run_one "$t" &
  pids+=("$!")
  names+=("$t")
  [ ${#pids[@]} -ge "$jobs" ] && finish
done
while [ ${#pids[@]} -gt 0 ]; do finish; done
if [ ${#failed[@]} -gt 0 ]; then
  echo "error: fuzz targets failed: ${failed[*]}" >&2
  exit 1
fi
