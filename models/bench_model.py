#!/usr/bin/env python3
"""Micro-benchmark of an exported model as the gateway runs it: TorchScript, one CPU thread, no_grad.

    .venv/bin/python -m models.bench_model models/sepsis/2.0.0/model.pt [more.pt ...] [--calls 2000]

Prints, per model, the median over `--calls` calls (after a warm-up) of: forward at batch 1,
forward at batch 32 per sample, and `attribute` at batch 1 (when the model has it; the old GRUs do
not). The input is a realistic grid (forward-filled values, about one observation in three cells),
shaped from the manifest beside the file.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tomllib

import torch


def grid(steps: int, channels: int, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = channels // 2
    m = (torch.rand(batch, steps, c, generator=g) < 0.35).float()
    raw = torch.randn(batch, steps, c, generator=g)
    # forward-fill the observed values, 0 before the first observation
    v = torch.zeros(batch, steps, c)
    cur = torch.zeros(batch, c)
    for t in range(steps):
        cur = torch.where(m[:, t] > 0, raw[:, t], cur)
        v[:, t] = cur
    return torch.cat([v, m], 2)


def median_us(fn, calls: int) -> float:
    for _ in range(min(200, calls)):
        fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def bench(path: str, calls: int) -> dict:
    with open(os.path.join(os.path.dirname(path), "manifest.toml"), "rb") as f:
        steps, channels = tomllib.load(f)["input"]["shape"]
    m = torch.jit.load(path)
    m.eval()
    x1, x32 = grid(steps, channels, 1), grid(steps, channels, 32, seed=1)
    out = {"model": path, "shape": [steps, channels]}
    with torch.no_grad():
        out["forward_b1_us"] = median_us(lambda: m(x1), calls)
        out["forward_b32_per_sample_us"] = median_us(lambda: m(x32), calls) / 32
        if hasattr(m, "attribute"):
            out["attribute_b1_us"] = median_us(lambda: m.attribute(x1), calls)
            assert not torch.is_grad_enabled(), "attribute must restore the caller's no_grad"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model.pt files (manifest.toml beside each)")
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    for path in args.models:
        r = bench(path, args.calls)
        attr = f"{r['attribute_b1_us']:8.1f} us" if "attribute_b1_us" in r else "     n/a"
        print(f"{path}  [{r['shape'][0]}, {r['shape'][1]}]  forward b1 {r['forward_b1_us']:8.1f} us  "
              f"forward b32 {r['forward_b32_per_sample_us']:7.1f} us/sample  attribute b1 {attr}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
