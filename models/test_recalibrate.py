#!/usr/bin/env python3
"""models/recalibrate.py on synthetic shadow-mode records (~10 s, after a summary model exists).

    .venv/bin/python -m models.test_recalibrate [model version folder, default models/sepsis/3.0.0]

Copies the model into a temporary models root, writes prediction records as the gateway stores them
(src/store/predictions.rs field names) whose true outcome rate is sigmoid(0.7 + 0.6 logit(risk)),
plus records of another version and abstentions that must be left out, and outcomes per pseudonym;
the refit must recover (0.7, 0.6), write a new shadow version with a new sha256, `recalibrated_from`,
and a model.pt that answers sigmoid(a' + b' logit(old risk)); --prevalence must move the intercept
by logit(P) - logit(records' prevalence).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from datetime import datetime, timedelta, timezone

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    src = os.path.abspath(argv[0] if argv else os.path.join(HERE, "sepsis", "3.0.0"))
    with open(os.path.join(src, "manifest.toml"), "rb") as f:
        man = tomllib.load(f)
    name, version, horizon = man["name"], man["version"], man["output"]["horizon_hours"]
    rng = np.random.default_rng(5)
    with tempfile.TemporaryDirectory() as root:
        dst = os.path.join(root, name, version)
        shutil.copytree(src, dst)
        if man["features"].startswith(".."):
            shutil.copyfile(os.path.normpath(os.path.join(src, man["features"])),
                            os.path.normpath(os.path.join(dst, man["features"])))
        records, outcomes = [], []
        t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
        n = 6000
        z = rng.normal(-2.5, 1.3, n)
        y = rng.random(n) < 1 / (1 + np.exp(-(0.7 + 0.6 * z)))
        for i in range(n):
            at = t0 + timedelta(minutes=7 * i)
            pid = f"p{i:05d}"
            records.append({"id": f"r{i}", "at": iso(at), "service_id": "svc", "model": name,
                            "model_version": version, "mode": "shadow", "patient_hash": pid,
                            "risk": float(1 / (1 + math.exp(-z[i]))), "outcome": "shadow"})
            onset = at + timedelta(hours=horizon / 2) if y[i] else (
                at + timedelta(hours=horizon * 3) if i % 3 == 0 else None)
            outcomes.append({"patient_hash": pid, "onset": None if onset is None else iso(onset)})
        # left out: another version, an abstention, a prediction after the onset, no outcome line
        records.append(dict(records[0], id="x1", model_version="0.0.1"))
        records.append(dict(records[1], id="x2", risk=None))
        records.append(dict(records[2], id="x3", at=iso(t0 + timedelta(days=400))))
        records.append(dict(records[3], id="x4", patient_hash="nobody"))
        rec_path, out_path = os.path.join(root, "records.jsonl"), os.path.join(root, "outcomes.jsonl")
        with open(rec_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        with open(out_path, "w") as f:
            f.writelines(json.dumps(o) + "\n" for o in outcomes)

        def run(*extra):
            cmd = [sys.executable, "-m", "models.recalibrate", name, "--from-version", version,
                   "--records", rec_path, "--outcomes", out_path, "--root", root, *extra]
            res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            assert res.returncode == 0, res.stdout + res.stderr
            print(res.stdout.strip())

        run()
        new = os.path.join(root, name, _bump(version))
        with open(os.path.join(new, "manifest.toml"), "rb") as f:
            m2 = tomllib.load(f)
        rc = m2["recalibration"]
        assert abs(rc["refit_intercept"] - 0.7) < 0.2 and abs(rc["refit_slope"] - 0.6) < 0.08, rc
        assert m2["status"] == "shadow" and m2["recalibrated_from"] == version
        assert m2["version"] == _bump(version) and m2["sha256"] != man["sha256"]
        with open(os.path.join(new, "model.pt"), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == m2["sha256"]
        assert os.path.exists(os.path.normpath(os.path.join(new, m2["features"])))
        assert rc["records"] == n, rc  # the 4 extra records are left out
        if "suggested_thresholds" in man:
            w0, w1 = man["suggested_thresholds"]["warning"], m2["suggested_thresholds"]["warning"]
            lo = lambda p: math.log(p / (1 - p))  # noqa: E731
            assert abs(lo(w1) - (rc["refit_intercept"] + rc["refit_slope"] * lo(w0))) < 1e-3

        run("--prevalence", "0.05", "--to-version", version + "-site")
        with open(os.path.join(root, name, version + "-site", "manifest.toml"), "rb") as f:
            m3 = tomllib.load(f)["recalibration"]
        lo = lambda p: math.log(p / (1 - p))  # noqa: E731
        shift = m3["refit_intercept"] - rc["refit_intercept"]
        assert abs(shift - (lo(0.05) - lo(m3["records_prevalence"]))) < 1e-4, (shift, m3)
    print("ok: recalibrate (refit recovered, new shadow version, prior shift)")
    return 0


def _bump(v: str) -> str:
    parts = v.split(".")
    parts[-1] = str(int(parts[-1]) + 1)
    return ".".join(parts)


if __name__ == "__main__":
    sys.exit(main())
