#!/usr/bin/env python3
"""Recalibrate a summary model for a site from its shadow-mode predictions: a NEW version folder.

    .venv/bin/python -m models.recalibrate sepsis --from-version 2.0.0 \\
        --records predictions.jsonl --outcomes outcomes.jsonl [--prevalence 0.02] [--to-version 2.0.1]

`--records`: JSON lines as the gateway stores predictions (src/store/predictions.rs; the admin API's
JSON): `id`, `at` (RFC 3339), `model`, `model_version`, `patient_hash` (the salted pseudonym),
`risk` (null when it abstained); other fields are ignored. Only this model and `--from-version`
with a risk count.
`--meds DIR` instead of both: a de-identified `bedside export` (MEDS NDJSON): PREDICTION events are
the records (subject_id as the patient), the first OUTCOME event of the model's name is a subject's
onset, and a subject with an OUTCOMES_KNOWN_THROUGH event but no OUTCOME has none.
`--outcomes`: JSON lines `{"patient_hash": "...", "onset": "2026-03-01T12:00:00Z" | null}` (`onset`
may also be called `outcome_onset`): every patient of the period, null when the outcome did not
happen. A prediction's label is onset in (at, at + horizon_hours]; predictions at or after the
patient's onset are left out (the outcome had happened), and so are patients with no outcome line.

Fit: Platt scaling on the logit of the recorded (already calibrated) risk, logit' = a' + b' * logit(risk)
(models/calibration.py fit_platt). `--prevalence P`: the intercept is moved from the records' label
prevalence to P (prior shift: the records come from a period or population whose base rate is not
the one the model will serve). Composed with the model's own calibration (a, b): the new model has
intercept a' + b' a and slope b' b, the same TorchScript code and head weights (only the buffers
`calib_intercept` / `calib_slope` change; `attribute` follows, as it is of the calibrated logit).

Writes models/<model>/<to-version>/ (default: the next free patch version): model.pt (deterministic
bytes), manifest.toml (the old one with version, status = "shadow", sha256, output.calibration and
suggested thresholds mapped through the new calibration, plus `recalibrated_from` and a
[recalibration] table), MODEL_CARD.md (a short note pointing to the original card), and the version
folder's own features.toml when the old version had one.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tomllib

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models.torchscript import pin_hash_seed, save_deterministic  # noqa: E402

pin_hash_seed()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.calibration import fit_platt, nll, prior_shift  # noqa: E402
from models.evaluation import auroc  # noqa: E402
from models.fhir_time import instant_seconds  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MIN_POSITIVES = 10


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_meds(folder, model):
    """(records, outcomes) of `model` from a `bedside export` folder (MEDS NDJSON)."""
    records, onsets, known = [], {}, set()
    with open(os.path.join(folder, "data", "data.ndjson")) as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line)
            parts = e["code"].split("//")
            subject = str(e["subject_id"])
            if parts[:2] == ["BEDSIDE", "PREDICTION"] and len(parts) == 4:
                records.append({"id": e.get("prediction"), "at": e["time"], "model": parts[2],
                                "model_version": parts[3], "patient_hash": subject,
                                "risk": e.get("numeric_value")})
            elif parts == ["BEDSIDE", "OUTCOME", model]:
                if subject not in onsets or instant_seconds(e["time"]) < instant_seconds(onsets[subject]):
                    onsets[subject] = e["time"]
            elif parts == ["BEDSIDE", "OUTCOMES_KNOWN_THROUGH", model]:
                known.add(subject)
    outcomes = [{"patient_hash": s, "onset": onsets.get(s)} for s in sorted(known | set(onsets))]
    return records, outcomes


def logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def labelled(records, outcomes, name, version, horizon_h):
    """(logit of risk, label) per usable record, and counts of what was left out."""
    onset = {}
    for o in outcomes:
        pid = o.get("patient_hash")
        when = o.get("onset", o.get("outcome_onset"))
        onset[pid] = None if when is None else instant_seconds(when)
        if when is not None and onset[pid] is None:
            raise SystemExit(f"outcome of {pid}: onset {when!r} is not a date-time with a zone")
    z, y, left = [], [], {"other model or version": 0, "no risk": 0, "no outcome line": 0, "after onset": 0}
    for r in records:
        if r.get("model") != name or r.get("model_version") != version:
            left["other model or version"] += 1
            continue
        if r.get("risk") is None:
            left["no risk"] += 1
            continue
        pid = r.get("patient_hash")
        if pid not in onset:
            left["no outcome line"] += 1
            continue
        at = instant_seconds(r["at"])
        if at is None:
            raise SystemExit(f"prediction {r.get('id')}: at {r['at']!r} is not a date-time with a zone")
        t = onset[pid]
        if t is not None and t <= at:
            left["after onset"] += 1
            continue
        z.append(float(logit(r["risk"])))
        y.append(1.0 if t is not None and t <= at + horizon_h * 3600.0 else 0.0)
    return np.array(z), np.array(y), left


def next_version(model_dir, version):
    parts = [int(p) for p in version.split(".")]
    while True:
        parts[-1] += 1
        v = ".".join(str(p) for p in parts)
        if not os.path.exists(os.path.join(model_dir, v)):
            return v


def set_key(text, key, value, table=None):
    """Replaces `key = ...` in the top level (table None) or in [table] of a manifest's text."""
    lines = text.split("\n")
    current = None
    for i, line in enumerate(lines):
        m = re.match(r"^\[([^\]]+)\]", line)
        if m:
            current = m.group(1).strip()
            continue
        if current == table and re.match(rf"^{re.escape(key)}\s*=", line):
            comment = ""
            if "#" in line and not line.split("=", 1)[1].strip().startswith('"'):
                comment = "   #" + line.split("#", 1)[1]
            lines[i] = f"{key} = {value}{comment}"
            return "\n".join(lines)
    raise KeyError(f"{table or 'top level'}.{key} not in the manifest")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="model name (folder under --root)")
    ap.add_argument("--from-version", required=True)
    ap.add_argument("--records", help="prediction records, JSON lines")
    ap.add_argument("--outcomes", help="outcomes per patient pseudonym, JSON lines")
    ap.add_argument("--meds", help="a `bedside export` folder instead of --records and --outcomes")
    ap.add_argument("--prevalence", type=float, help="target prevalence (prior-shift the intercept to it)")
    ap.add_argument("--to-version", help="default: the next free patch version")
    ap.add_argument("--root", default=HERE, help="models folder (default: models/)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    model_dir = os.path.join(args.root, args.model)
    src = os.path.join(model_dir, args.from_version)
    with open(os.path.join(src, "manifest.toml"), "rb") as f:
        man = tomllib.load(f)
    with open(os.path.join(src, "manifest.toml")) as f:
        text = f.read()
    with open(os.path.join(src, man["file"]), "rb") as f:
        blob = f.read()
    if hashlib.sha256(blob).hexdigest() != man["sha256"]:
        raise SystemExit(f"{src}: model file does not match the manifest's sha256")
    module = torch.jit.load(os.path.join(src, man["file"]))
    if not (hasattr(module, "calib_intercept") and hasattr(module, "calib_slope")):
        raise SystemExit(f"{src}: not a summary model (no calib_intercept / calib_slope to refit)")

    if args.meds:
        records, outcomes = read_meds(args.meds, man["name"])
    elif args.records and args.outcomes:
        records, outcomes = read_jsonl(args.records), read_jsonl(args.outcomes)
    else:
        raise SystemExit("give --meds, or --records and --outcomes")
    z, y, left = labelled(records, outcomes, man["name"], args.from_version, man["output"]["horizon_hours"])
    if len(y) == 0 or y.sum() < MIN_POSITIVES or y.sum() == len(y):
        raise SystemExit(f"{len(y)} usable records with {int(y.sum())} outcomes: need at least "
                         f"{MIN_POSITIVES} outcomes and some without (left out: {left})")
    prevalence = float(y.mean())
    a1, b1 = fit_platt(z, y)
    if args.prevalence is not None:
        if not 0 < args.prevalence < 1:
            raise SystemExit("--prevalence must be in (0, 1)")
        a1 = round(prior_shift(a1, prevalence, args.prevalence), 6)
    before, after = nll(z, y), nll(a1 + b1 * z, y)
    a0, b0 = float(module.calib_intercept[0]), float(module.calib_slope[0])
    a, b = a1 + b1 * a0, b1 * b0
    print(f"{man['name']} {args.from_version}: {len(y)} records, {int(y.sum())} outcomes "
          f"(prevalence {prevalence:.4f}), left out {left}")
    print(f"recorded risk: AUROC {auroc(y, z):.4f}, mean risk {float(np.mean(1 / (1 + np.exp(-z)))):.4f}, "
          f"NLL {before:.4f}; refit logit' = {a1:.4f} + {b1:.4f} logit(risk) -> NLL {after:.4f}"
          + ("" if args.prevalence is None else f" (prior shift to prevalence {args.prevalence})"))

    version = args.to_version or next_version(model_dir, args.from_version)
    out = os.path.join(model_dir, version)
    if os.path.exists(out):
        raise SystemExit(f"{out} exists: a new version needs a new folder")
    os.makedirs(out)
    with torch.no_grad():
        module.calib_intercept.fill_(a)
        module.calib_slope.fill_(b)
    new_blob = save_deterministic(module, os.path.join(out, "model.pt"))
    sha = hashlib.sha256(new_blob).hexdigest()

    # The new file answers sigmoid(a' + b' logit(old risk)) on any input.
    check = torch.jit.load(os.path.join(src, man["file"]))
    again = torch.jit.load(os.path.join(out, "model.pt"))
    x = torch.zeros([4] + list(man["input"]["shape"]))
    x[:, -1, : x.shape[2] // 2] = torch.linspace(-2, 2, 4).unsqueeze(1)
    x[:, -1, x.shape[2] // 2:] = 1.0
    with torch.no_grad():
        want = torch.sigmoid(a1 + b1 * torch.logit(check(x).double()))
        assert torch.allclose(again(x).double(), want, atol=1e-5), "recalibrated model disagrees"
        assert hasattr(again, "attribute") and again.attribute(x).shape == x.shape

    features = man["features"]
    if not features.startswith(".."):  # the old version folder's own spec: bring it along
        shutil.copyfile(os.path.join(src, features), os.path.join(out, features))
    text = set_key(text, "version", f'"{version}"')
    text = set_key(text, "status", '"shadow"')
    text = set_key(text, "sha256", f'"{sha}"')
    calibration = (f"Platt scaling refit on {len(y)} site shadow-mode predictions (v{args.from_version} "
                   f"recalibrated): p = sigmoid(a + b * z), a = {a:.6f}, b = {b:.6f}")
    text = set_key(text, "calibration", f'"{calibration}"', table="output")
    if "suggested_thresholds" in man:
        for k in ("warning", "critical"):
            old = man["suggested_thresholds"][k]
            new = 1 / (1 + math.exp(-(a1 + b1 * float(logit(old)))))
            text = set_key(text, k, f"{round(new, 4)!r}", table="suggested_thresholds")
    lines = text.rstrip("\n").split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("status ="))
    lines.insert(at + 1, f'recalibrated_from = "{args.from_version}"')
    lines += ["", "# Site recalibration (models/recalibrate.py) of the version named by recalibrated_from.",
              "[recalibration]",
              f"records = {len(y)}",
              f"outcomes = {int(y.sum())}",
              f"records_prevalence = {round(prevalence, 6)!r}",
              *([f"target_prevalence = {args.prevalence!r}"] if args.prevalence is not None else []),
              f"refit_intercept = {a1!r}   # on the logit of the recorded risk",
              f"refit_slope = {b1!r}",
              f"nll_before = {round(before, 6)!r}",
              f"nll_after = {round(after, 6)!r}"]
    with open(os.path.join(out, "manifest.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "MODEL_CARD.md"), "w") as f:
        f.write(f"# Model card: `{man['name']}` v{version}\n\n"
                f"Version {args.from_version} (see its MODEL_CARD.md) with its calibration refit on a site's "
                f"shadow-mode predictions by `models/recalibrate.py`: {len(y)} predictions, {int(y.sum())} "
                f"followed by the outcome within {man['output']['horizon_hours']} h (prevalence {prevalence:.4f})"
                + (f", intercept moved to a prevalence of {args.prevalence}" if args.prevalence is not None else "")
                + f".\n\nRefit on the logit of the recorded risk: a' = {a1}, b' = {b1}; validation NLL on those "
                f"records {before:.4f} -> {after:.4f} (in-sample). The weights, inputs and ranking (AUROC) are "
                f"those of v{args.from_version}; only probabilities (and the suggested thresholds, mapped "
                f"through the refit) change. Status `shadow` until a local evaluation promotes it.\n\n"
                f"Trained on synthetic data only; not validated on real patients.\n")
    print(f"wrote {out} (sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
