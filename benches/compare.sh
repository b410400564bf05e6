#!/usr/bin/env bash
# bedside against a reference Python service (benches/peer/service.py: FastAPI + uvicorn with 2 workers +
# the TorchScript GRU deterioration 2.0.0) on the same requests with the same load generator (oha).
#
#   benches/compare.sh                         # from a clone after .ci/setup; the set-up below is its own
#
# For each request kind (stable patient: no card; deteriorating patient: card + explanation) and each
# concurrency it runs oha for BENCH_SECS against bedside, then against the peer, back to back, and
# prints req/s, p50 and p99 of both and the ratio bedside/peer, as a Markdown table (also written to
# .bench/results.md). Also: cold start to ready of both, RSS after warm-up and after the load (and after
# BENCH_MEMORY_CALLS more calls). Both run with client auth OFF (bedside --insecure-no-auth; the peer's
# JWT check is off by default), bedside with a SQLite store in a fresh directory.
#
# Set-up (idempotent, everything under .bench/):
#   - oha (`cargo install oha --locked`, into .bench/tools; takes minutes the first time);
#   - .bench/peer-venv: a venv from the project's .venv Python that sees .venv's torch/numpy (a .pth
#     file) and gets benches/peer/requirements.txt (FastAPI, uvicorn, uvloop, httptools, orjson);
#   - `cargo build --release` of bedside (BENCH_SKIP_BUILD=1 skips it when the binary exists).
#
# Environment:
#   BENCH_SECS          seconds per oha run (default 10)
#   BENCH_CONCURRENCY   concurrencies (default "1 16 64")
#   BENCH_KINDS         request kinds (default "stable deteriorating")
#   BENCH_MEMORY_CALLS  calls (deteriorating, c16) before the last RSS sample (default 100000; 0: skip)
#   BENCH_SKIP_BUILD=1  use the existing release binary
#   BENCH_BEDSIDE_BIN   the binary (default target/release/bedside)
#   BENCH_VENV          the project's venv with torch (default .venv)
#   PEER_WORKERS        uvicorn workers (default 2)
#   BENCH_STORE         bedside's store: sqlite (default) or postgres (a fresh local cluster under
#                       the run folder, PostgreSQL's default durability: fsync, synchronous_commit on;
#                       needs Debian's postgresql, which .ci/setup installs)
# Client auth stays off here: oha repeats one request, and bedside refuses a replayed token (`jti`).
# The JWT costs (RS384, ES384) are measured with one fresh token per call by
# `cargo bench --bench runtime`.
# Results are as good as the machine is quiet: the load generator runs on the same cores.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bench="$root/.bench"
secs="${BENCH_SECS:-10}"
concurrency="${BENCH_CONCURRENCY:-1 16 64}"
kinds="${BENCH_KINDS:-stable deteriorating}"
memory_calls="${BENCH_MEMORY_CALLS:-100000}"
workers="${PEER_WORKERS:-2}"
store="${BENCH_STORE:-sqlite}"
bin="${BENCH_BEDSIDE_BIN:-$root/target/release/bedside}"
venv="${BENCH_VENV:-$root/.venv}"
oha="$bench/tools/bin/oha"
peer_venv="$bench/peer-venv"
mkdir -p "$bench"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------ set-up
command -v cargo >/dev/null || { [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"; }
if [ ! -x "$oha" ]; then
  say "installing oha into .bench/tools (cargo install oha --locked; a few minutes)"
  nice -n 19 cargo install oha --locked --root "$bench/tools" >&2
fi
[ -x "$venv/bin/python" ] || die "no $venv/bin/python: run .ci/setup first (or set BENCH_VENV)"
"$venv/bin/python" -c 'import torch, numpy' 2>/dev/null || die "$venv has no torch/numpy: run .ci/setup"
if ! "$peer_venv/bin/python" -c 'import fastapi, uvicorn, uvloop, httptools, orjson, torch' 2>/dev/null; then
  say "creating .bench/peer-venv (FastAPI, uvicorn, orjson; torch from $venv)"
  "$venv/bin/python" -m venv "$peer_venv"
  "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
    > "$("$peer_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/bedside-venv.pth"
  nice -n 19 "$peer_venv/bin/pip" install --quiet -r benches/peer/requirements.txt >&2
fi
if [ "${BENCH_SKIP_BUILD:-0}" = 1 ] && [ -x "$bin" ]; then
  say "using $bin (BENCH_SKIP_BUILD=1)"
else
  say "cargo build --release"
  (. .ci/env && nice -n 19 cargo build --release >&2)
fi

# ------------------------------------------------------------------------------------------ helpers
py() { "$venv/bin/python" "$@"; }
free_port() { py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# A process and its children (uvicorn's workers): the sum of their RSS (shared pages counted twice).
tree_rss_kib() {
  local total pid
  total=$(rss_kib "$1")
  for pid in $(cat "/proc/$1/task/"*/children 2>/dev/null); do total=$((total + $(rss_kib "$pid"))); done
  echo "$total"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.0f MiB", k / 1024 }'; }
wait_ready() {  # URL PID NAME: until GET URL answers 200 (60 s)
  local i
  for i in $(seq 1 600); do
    kill -0 "$2" 2>/dev/null || die "$3 exited while starting (see $run)"
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  die "$3 did not answer $1 within 60 s"
}

run="$bench/run-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$run"
bedside_pid="" peer_pid="" pg_pid=""
cleanup() {
  [ -n "$bedside_pid" ] && kill "$bedside_pid" 2>/dev/null && { wait "$bedside_pid" 2>/dev/null || true; }
  [ -n "$peer_pid" ] && kill "$peer_pid" 2>/dev/null && { wait "$peer_pid" 2>/dev/null || true; }
  # PostgreSQL last: bedside may still be writing to it.
  [ -n "$pg_pid" ] && kill "$pg_pid" 2>/dev/null && { wait "$pg_pid" 2>/dev/null || true; }
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------------------ start
bport=$(free_port)
pport=$(free_port)
storage="path = '$run/bedside.db'"
if [ "$store" = postgres ]; then
  pgbin=$(pg_config --bindir 2>/dev/null || true)
  [ -x "$pgbin/initdb" ] || pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -x "$pgbin/initdb" ] || { echo "BENCH_STORE=postgres: initdb not found (run .ci/setup)" >&2; exit 1; }
  pgport=$(free_port)
  mkdir -p "$run/pg"
  as_pg=()
  # initdb and postgres refuse to run as root.
  if [ "$(id -u)" = 0 ]; then chown nobody "$run/pg"; as_pg=(runuser -u nobody --); fi
  "${as_pg[@]}" "$pgbin/initdb" -D "$run/pg/data" -U bedside --auth=trust --locale=C --encoding=UTF8 \
    > "$run/pg-initdb.log" 2>&1
  say "starting PostgreSQL on 127.0.0.1:$pgport (fsync and synchronous_commit on)"
  "${as_pg[@]}" "$pgbin/postgres" -D "$run/pg/data" -k "$run/pg" -p "$pgport" \
    -c listen_addresses=127.0.0.1 > "$run/pg.log" 2>&1 &
  pg_pid=$!
  for i in $(seq 1 100); do
    "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pgport" && break
    sleep 0.1
  done
  "${as_pg[@]}" "$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U bedside bedside
  storage="url = 'postgres://bedside@127.0.0.1:$pgport/bedside'"
fi
cat > "$run/bedside.toml" <<EOF
listen = '127.0.0.1:$bport'
public_url = 'http://127.0.0.1:$bport'
services_dir = '$root/cds-services'
models_dir = '$root/models'
[storage]
$storage
[inference]
device = 'cpu'
EOF
py benches/peer/requests.py "$run/requests" $kinds

say "starting bedside ($bin) on 127.0.0.1:$bport, auth off, store $store, run folder $run"
t0=$(now_ms)
# BEDSIDE_* variables would override the configuration: bedside runs without them.
unset_bedside=()
for name in $(env | sed -n 's/^\(BEDSIDE_[A-Za-z0-9_]*\)=.*/\1/p'); do unset_bedside+=(-u "$name"); done
env "${unset_bedside[@]}" RUST_LOG=warn NO_COLOR=1 "$bin" serve --insecure-no-auth --config "$run/bedside.toml" \
  > "$run/bedside.out" 2> "$run/bedside.log" &
bedside_pid=$!
wait_ready "http://127.0.0.1:$bport/cds-services" "$bedside_pid" bedside
bedside_cold=$(( $(now_ms) - t0 ))

say "starting the peer (uvicorn, $workers workers) on 127.0.0.1:$pport"
t0=$(now_ms)
PEER_ROOT="$root" PEER_PUBLIC_URL="http://127.0.0.1:$pport" \
  "$peer_venv/bin/python" -m uvicorn --app-dir "$root/benches/peer" service:app --host 127.0.0.1 --port "$pport" \
  --workers "$workers" --loop uvloop --http httptools --no-access-log --log-level info \
  > "$run/peer.log" 2>&1 &
peer_pid=$!
wait_ready "http://127.0.0.1:$pport/cds-services" "$peer_pid" peer
# Ready = every worker has loaded the model and started (one line each; no access log).
for i in $(seq 1 600); do
  [ "$(grep -c 'Application startup complete' "$run/peer.log" || true)" -ge "$workers" ] && break
  sleep 0.1
done
peer_cold=$(( $(now_ms) - t0 ))

# ------------------------------------------------------------------------------------------ check
declare -A url=([bedside]="http://127.0.0.1:$bport/cds-services/deterioration"
                [peer]="http://127.0.0.1:$pport/cds-services/deterioration")
for who in bedside peer; do
  for kind in $kinds; do
    code=$(curl -s -o "$run/check-$who-$kind.json" -w '%{http_code}' -X POST \
      -H 'content-type: application/json' --data-binary "@$run/requests/$kind.json" "${url[$who]}")
    verdict=$(py - "$run/check-$who-$kind.json" "$kind" "$code" <<'EOF'
import json, sys
path, kind, code = sys.argv[1:]
try:
    cards = json.load(open(path))["cards"]
except Exception as e:  # noqa: BLE001
    print(f"FAIL: HTTP {code}, not a CDS Hooks response ({e})"); sys.exit()
risk = [c for c in cards if c.get("indicator") in ("warning", "critical")]
if kind == "deteriorating":
    ok = code == "200" and len(risk) == 1 and bool(risk[0].get("detail"))
    print(("ok: " if ok else "FAIL: expected one warning/critical card with a detail, got: ")
          + "; ".join(c.get("summary", "?") for c in cards))
elif kind == "stable":
    print("ok: no card" if code == "200" and not cards else f"FAIL: HTTP {code}, expected no card, got {cards}")
else:
    print(f"ok: HTTP {code}, {len(cards)} card(s)")
EOF
)
    printf '    %-8s %-14s %s\n' "$who" "$kind" "$verdict" >&2
    case "$verdict" in ok*) ;; *) die "$who answers the $kind request wrongly (see $run/check-$who-$kind.json)" ;; esac
  done
done

# ------------------------------------------------------------------------------------------ load
load() {  # WHO KIND CONCURRENCY OUT.json [oha options...]
  local who=$1 kind=$2 c=$3 out=$4
  shift 4
  nice -n 0 "$oha" --no-tui --output-format json -c "$c" -m POST -H 'content-type: application/json' \
    -D "$run/requests/$kind.json" "$@" "${url[$who]}" > "$out"
}

say "warm-up: 3 s per service and kind at concurrency 16"
for kind in $kinds; do
  for who in bedside peer; do load "$who" "$kind" 16 "$run/warmup-$who-$kind.json" -z 3s; done
done
bedside_rss_warm=$(rss_kib "$bedside_pid")
peer_rss_warm=$(tree_rss_kib "$peer_pid")

for kind in $kinds; do
  for c in $concurrency; do
    for who in bedside peer; do
      say "$kind, concurrency $c, $who: ${secs} s"
      load "$who" "$kind" "$c" "$run/oha-$kind-c$c-$who.json" -z "${secs}s"
    done
  done
done
bedside_rss_load=$(rss_kib "$bedside_pid")
peer_rss_load=$(tree_rss_kib "$peer_pid")

if [ "$memory_calls" -gt 0 ] && [[ " $kinds " == *" deteriorating "* ]]; then
  say "memory: $memory_calls more deteriorating calls to each at concurrency 16"
  for who in bedside peer; do load "$who" deteriorating 16 "$run/memory-$who.json" -n "$memory_calls"; done
fi
bedside_rss_end=$(rss_kib "$bedside_pid")
peer_rss_end=$(tree_rss_kib "$peer_pid")

# ------------------------------------------------------------------------------------------ report
export RUN="$run" KINDS="$kinds" CONCURRENCY="$concurrency" SECS="$secs" MEMORY_CALLS="$memory_calls" STORE="$store"
export BEDSIDE_COLD="$bedside_cold" PEER_COLD="$peer_cold" WORKERS="$workers"
export BEDSIDE_RSS="$bedside_rss_warm $bedside_rss_load $bedside_rss_end" PEER_RSS="$peer_rss_warm $peer_rss_load $peer_rss_end"
export COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')"
export BIN="$bin" BIN_BUILT="$(date -u -r "$bin" '+%Y-%m-%d %H:%M UTC')"
export CPUS="$(nproc)" OHA_VERSION="$("$oha" --version 2>/dev/null | head -1)"
py - <<'EOF' | tee "$bench/results.md"
import glob, json, os, datetime as dt

run = os.environ["RUN"]


def read(path):
    """oha JSON -> (calls/s over the successful calls, p50 ms, p99 ms, failures other than the deadline)."""
    with open(path) as f:
        d = json.load(f)
    s = d["summary"]
    codes = {int(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
    errors = {k: v for k, v in (d.get("errorDistribution") or {}).items() if "deadline" not in k}
    ok = codes.get(200, 0)
    failed = sum(v for k, v in codes.items() if k != 200) + sum(errors.values())
    rps = ok / s["total"] if s.get("total") else 0.0
    p = d["latencyPercentiles"]
    return rps, p["p50"] * 1e3, p["p99"] * 1e3, failed, errors


def fmt(x, digits=1):
    return f"{x:.{digits}f}"


now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(f"bedside ({os.path.relpath(os.environ['BIN'])}, built {os.environ['BIN_BUILT']}; tree {os.environ['COMMIT']}) vs Python peer (FastAPI + uvicorn {os.environ['WORKERS']} workers + TorchScript GRU "
      f"deterioration 2.0.0), {now}, {os.environ['CPUS']} CPUs, {os.environ['OHA_VERSION']}, "
      f"{os.environ['SECS']} s per run, client auth off on both, bedside store {os.environ['STORE']}.")
sizes = {k: os.path.getsize(f"{run}/requests/{k}.json") // 1024 for k in os.environ["KINDS"].split()}
print("Requests: " + ", ".join(f"{k} {v} KB" for k, v in sizes.items()) + " (patient-view with prefetch, newest vital 10 min old).")
print()
print("| request | conc. | bedside req/s | p50 ms | p99 ms | peer req/s | p50 ms | p99 ms | req/s ratio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
notes, res = [], {}
for kind in os.environ["KINDS"].split():
    for c in os.environ["CONCURRENCY"].split():
        b = read(f"{run}/oha-{kind}-c{c}-bedside.json")
        p = read(f"{run}/oha-{kind}-c{c}-peer.json")
        res[(kind, int(c))] = (b, p)
        for who, r in (("bedside", b), ("peer", p)):
            if r[3]:
                notes.append(f"{kind} c{c} {who}: {r[3]} failed calls {r[4]}")
        label = {"stable": "stable (no card)", "deteriorating": "deteriorating (card)"}.get(kind, kind)
        ratio = b[0] / p[0] if p[0] else float("inf")
        print(f"| {label} | {c} | {b[0]:.0f} | {fmt(b[1], 2)} | {fmt(b[2], 2)} | {p[0]:.0f} | {fmt(p[1], 2)} | "
              f"{fmt(p[2], 2)} | {ratio:.2f}x |")
print()
br, pr = (list(map(int, os.environ[k].split())) for k in ("BEDSIDE_RSS", "PEER_RSS"))
mib = lambda k: f"{k / 1024:.0f} MiB"  # noqa: E731
calls = int(os.environ["MEMORY_CALLS"])
after = f" / after {calls} more calls" if calls else ""
print(f"Cold start to ready (process start -> discovery answers): bedside {int(os.environ['BEDSIDE_COLD'])} ms, "
      f"peer {int(os.environ['PEER_COLD'])} ms.")
print(f"RSS after warm-up / after the runs{after}: bedside {' / '.join(map(mib, br[:3 if calls else 2]))}; "
      f"peer (master + workers, shared pages counted per process) {' / '.join(map(mib, pr[:3 if calls else 2]))}.")
if calls:
    for who in ("bedside", "peer"):
        r = read(f"{run}/memory-{who}.json")
        print(f"  memory run {who}: {r[0]:.0f} req/s, p99 {r[2]:.2f} ms, {r[3]} failed")
# Issue 16 targets: c16 >= 4x the peer's req/s on both kinds with p99 <= 15 ms; c1 card path p99 <= 3 ms.
checks = []
for kind in os.environ["KINDS"].split():
    if (kind, 16) in res:
        b, p = res[(kind, 16)]
        ratio = b[0] / p[0] if p[0] else float("inf")
        checks.append(f"{kind} c16 ratio {ratio:.2f}x (>= 4: {'yes' if ratio >= 4 else 'NO'}), "
                      f"p99 {b[2]:.1f} ms (<= 15: {'yes' if b[2] <= 15 else 'NO'})")
if ("deteriorating", 1) in res:
    b = res[("deteriorating", 1)][0]
    checks.append(f"deteriorating c1 p99 {b[2]:.2f} ms (<= 3: {'yes' if b[2] <= 3 else 'NO'})")
print("Targets: " + "; ".join(checks) + ".")
for n in notes:
    print(f"Note: {n}")
print(f"Raw oha JSON and logs: {os.path.relpath(run)}")
EOF
