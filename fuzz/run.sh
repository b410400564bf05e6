#!/usr/bin/env bash
# Runs the fuzz targets: fuzz/run.sh [seconds per target, default 60] [target...]
# Needs cargo-fuzz (cargo install cargo-fuzz). Stable toolchain: RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz use its -Z flags; no sanitizer (ASan needs a nightly std), coverage-guided only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. .ci/env
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(hook_request bundle_to_features prefetch_template client_jwt smart_callback)
export RUSTC_BOOTSTRAP=1
torch_lib="$(.venv/bin/python -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
for t in "${targets[@]}"; do
  echo "==> $t for ${secs}s"
  # A scratch copy of the seeds: new inputs found by this run stay out of the committed corpus.
  work="fuzz/target/corpus-$t"
  mkdir -p "$work"
  cp -n fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  cargo fuzz run --fuzz-dir fuzz --sanitizer none "$t" "$work" -- -max_total_time="$secs" -max_len=262144 -rss_limit_mb=4096
done
