"""Bring your own model: a worked example of a model that is *yours*, not one of bedside's, run in shadow.

    nice -n 19 .venv/bin/python -m models.byo_example --out /tmp/byo-models
    bedside check --config <a config with models_dir = "/tmp/byo-models">
    bedside demo --models-dir /tmp/byo-models

What it is: a plain logistic regression over 36 summaries of the ``deterioration`` input grid -- per
vital sign (the six of ``models/deterioration/features.toml``) the last value, its square, the 48 h
mean, the 12 h minimum and maximum and the change over 12 h, all on the normalised values, never on
the observed masks (how often a sign is measured says more about the synthetic ward's schedule than
about the patient). It is deliberately simple and different from the shipped models (GRU 2.0.0,
hinge-basis summary model 3.0.0): the point is the path a data scientist takes, not the model.

Why it exists: to show, end to end and tested (``tests/models/byo.rs``), what the gateway needs from
a model it did not train -- ``forward(x: float32 [B, 48, 12]) -> [B, 1]`` probabilities, the
``manifest.toml`` that declares that input (shape, dtype, per-feature mean / std in
``features.toml`` order), its output, its validity ranges, ``status = "shadow"`` and the file's
sha256 -- and that a shadow model is scored on every call without showing anything, so its
agreement with the active model can be read in the feedback report before anyone promotes it.

Steps: a small synthetic cohort (``models/dataset.py``, default 600 patients of the seeded
``cohort`` generator, split by patient into train / valid / test) -> the project's own featurizer
(``models/featurize.py`` through ``features.toml``, the same spec the gateway reads, so the grids
match what the gateway will feed the model) -> fit on train (L-BFGS, L2 chosen on the validation
split's log loss) -> AUROC on the held-out test split (beside NEWS2 on the same samples) ->
TorchScript (``torch.jit.script``, deterministic bytes) -> ``<out>/deterioration/9.0.0-byo/``:
``model.pt``, ``manifest.toml``, ``MODEL_CARD.md``. ``<out>`` is made a complete models folder:
each shipped model's ``features.toml`` and its *active* versions are copied beside it (retired ones
are not loaded anyway; the shipped shadow deterioration 2.0.0 is left out so the only shadow is
yours). Single-threaded and seeded: the same torch / numpy versions give the same ``model.pt``.

Synthetic data only; the model is NOT for clinical use.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models.torchscript import pin_hash_seed, save_deterministic  # noqa: E402

pin_hash_seed()

import tomllib  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from models import dataset, featurize  # noqa: E402
from models.evaluation import auroc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = "deterioration"
VERSION = "9.0.0-byo"
SPEC = os.path.join(HERE, MODEL, "features.toml")  # the shared 6-signal spec: input [48, 12]
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
N_SUMMARIES = 6


class ByoModel(nn.Module):
    """Per value channel: last, last², 48 h mean, 12 h min / max, 12 h change -> standardise -> linear -> sigmoid."""

    def __init__(self, n_values: int, s_mean: torch.Tensor, s_std: torch.Tensor):
        super().__init__()
        self.n_values = n_values
        self.register_buffer("s_mean", s_mean)
        self.register_buffer("s_std", s_std)
        self.head = nn.Linear(n_values * N_SUMMARIES, 1)

    def summaries(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, :, : self.n_values]  # normalised values, forward-filled; the masks are not used
        last = v[:, -1, :]
        recent = v[:, -12:, :]
        return torch.cat([last, last * last, v.mean(dim=1), recent.min(dim=1).values,
                          recent.max(dim=1).values, last - v[:, -13, :]], dim=1)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.summaries(x) - self.s_mean) / self.s_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))


def fit(model: ByoModel, x: torch.Tensor, y: torch.Tensor, l2: float) -> ByoModel:
    """Penalised maximum likelihood, full batch, L-BFGS (deterministic on one thread)."""
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    s = (model.summaries(x) - model.s_mean) / model.s_std  # fixed: compute once
    opt = torch.optim.LBFGS(model.head.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")
    loss_fn = nn.BCEWithLogitsLoss()

    def closure():
        opt.zero_grad()
        loss = loss_fn(model.head(s).squeeze(1), y) + l2 * (model.head.weight ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def predict(model: ByoModel, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).squeeze(1).numpy().astype(np.float64)


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def copy_shipped(out: str) -> list[str]:
    """Each shipped model's features.toml and active versions (manifest, model.pt, card, own spec) into out."""
    copied = []
    for name in sorted(os.listdir(HERE)):
        src = os.path.join(HERE, name)
        if not os.path.isfile(os.path.join(src, "features.toml")):
            continue
        dst = os.path.join(out, name)
        os.makedirs(dst, exist_ok=True)
        shutil.copyfile(os.path.join(src, "features.toml"), os.path.join(dst, "features.toml"))
        for version in sorted(os.listdir(src)):
            manifest = os.path.join(src, version, "manifest.toml")
            if not os.path.isfile(manifest):
                continue
            with open(manifest, "rb") as f:
                if tomllib.load(f).get("status") != "active":
                    continue
            os.makedirs(os.path.join(dst, version), exist_ok=True)
            for fname in ("manifest.toml", "model.pt", "MODEL_CARD.md", "features.toml"):
                if os.path.isfile(os.path.join(src, version, fname)):
                    shutil.copyfile(os.path.join(src, version, fname), os.path.join(dst, version, fname))
            copied.append(f"{name}/{version}")
    return copied


def fmt(v) -> str:
    return "[" + ", ".join(f"{float(x):.6f}" for x in v) + "]"


def write_manifest(path: str, *, sha: str, n: int, seed: int, mean, std, ranges: dict, metrics: dict):
    lines = [
        "# Written by models/byo_example.py (a bring-your-own-model example).",
        f'name = "{MODEL}"',
        f'version = "{VERSION}"',
        'status = "shadow"                 # scored and recorded on every call, never shown',
        'file = "model.pt"',
        f'sha256 = "{sha}"',
        'features = "../features.toml"    # the shared 6-signal spec: [48, 12]',
        'description = "Bring-your-own-model example: logistic regression over per-signal summaries (last, last squared, '
        '48 h mean, 12 h min / max / change) of 6 vital signs; probability of deterioration within 12 h. '
        'Demonstration model trained on synthetic data only; NOT for clinical use."',
        f'training_data = "synthetic cohort generated by models/cohort/generate.py via models/byo_example.py '
        f'(n {n}, seed {seed}); synthetic demo data only, no real patient data"',
        'arch = "byo-logistic"',
        "",
        "[input]",
        "shape = [48, 12]   # per sample: time steps, channels (6 values + 6 observed masks)",
        'dtype = "float32"',
        "# per-feature normalisation (features.toml order), raw units /min, /min, %, Cel, mm[Hg], 1",
        f"mean = {fmt(mean)}",
        f"std = {fmt(std)}",
        "",
        "[output]",
        "shape = [1]",
        'meaning = "probability of unplanned ICU transfer or in-hospital death within 12 hours (synthetic-data example)"',
        "horizon_hours = 12",
        'calibration = "none beyond the logistic model\'s own maximum-likelihood fit"',
        "",
        "[validity]",
        "required = []",
        "max_staleness_hours = 12",
        "",
        "[validity.range]   # values seen in training, canonical units",
    ]
    lines += [f"{k} = [{lo}, {hi}]" for k, (lo, hi) in ranges.items()]
    lines += ["", "[metrics]   # held-out synthetic test split"]
    lines += [f"{k} = {v}" for k, v in metrics.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


CARD = """# deterioration {version} (bring-your-own-model example)

> **Synthetic data only. Not for clinical use.** This model exists to show how a model of your own
> is exported, checked (`bedside check`) and run in shadow beside the active one; it was never
> validated on real patients.

**What it is.** A logistic regression over 36 summaries of the gateway's `deterioration` input grid
(`models/deterioration/features.toml`, `[48, 12]`): per vital sign (heart rate, respiratory rate,
SpO2, temperature, systolic BP, not-alert) the last value, its square, the 48 h mean, the 12 h
minimum and maximum and the change over 12 h, on the normalised values (the observed masks are not
used). Output: `forward(x) -> [B, 1]`, the probability of unplanned ICU transfer or in-hospital death
within 12 h. No separate calibration step. Written by `models/byo_example.py`.

**Status.** `shadow`: the gateway scores it on every deterioration call and records the score; it
never shows a card. Compare it with the active version in the feedback report's `shadow_agreement`.

**Training data.** {n} synthetic patients of `models/cohort` (seed {seed}), split by patient:
{n_train} train / {n_valid} validation / {n_test} test. One sample every 2 h from admission + 1 h
until discharge or onset; label = onset within (t, t + 12 h]. L2 = {l2} chosen on the validation
split's log loss from {l2_grid}.

**Held-out test split** ({n_test} patients, {n_samples} samples, {n_pos} positive):

| | AUROC |
|---|---|
| this model | {auroc:.4f} |
| NEWS2 (same samples) | {news2:.4f} |

Brier {brier:.4f}; mean predicted risk {mean_p:.4f} vs observed rate {rate:.4f}. Small cohort, few
positives: these figures are noisy (no confidence interval computed) and say nothing about real patients.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="models folder to write (made complete: shipped active versions + yours)")
    ap.add_argument("--n", type=int, default=600, help="synthetic patients (default 600)")
    ap.add_argument("--seed", type=int, default=20260301)
    args = ap.parse_args(argv)

    t0 = time.time()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    cfg = dataset.load_config(MODEL)  # outcome, horizon, sampling from models/deterioration/train.toml
    cfg["spec_path"], cfg["spec"] = SPEC, featurize.load_spec(SPEC)
    patients = dataset.load_patients(cfg, args.n, args.seed, "cohort")
    mean, std = dataset.normalisation(cfg, patients)
    ranges = dataset.training_ranges(cfg, patients)
    split = {s: dataset.samples(cfg, patients, s, mean, std) for s in ("train", "valid", "test")}
    tr, va, te = split["train"], split["valid"], split["test"]
    assert tr.x.shape[1:] == (48, 12), tr.x.shape
    n_values = len(cfg["spec"]["feature"])
    print(f"train {len(tr.y)} samples ({int(tr.y.sum())} positive), valid {len(va.y)} ({int(va.y.sum())}), "
          f"test {len(te.y)} ({int(te.y.sum())})", flush=True)

    xtr, ytr = torch.from_numpy(tr.x), torch.from_numpy(tr.y.astype(np.float32))
    with torch.no_grad():
        s = ByoModel(n_values, torch.zeros(1), torch.ones(1)).summaries(xtr)
    s_mean, s_std = s.mean(dim=0), s.std(dim=0).clamp_min(1e-3)
    best = None
    for l2 in L2_GRID:
        m = fit(ByoModel(n_values, s_mean.clone(), s_std.clone()), xtr, ytr, l2)
        loss = log_loss(va.y.astype(np.float64), predict(m, va.x))
        print(f"L2 {l2:g}: validation log loss {loss:.5f}", flush=True)
        if best is None or loss < best[0]:
            best = (loss, l2, m)
    _, l2, model = best
    model.eval()

    yte = te.y.astype(np.float64)
    p_te = predict(model, te.x)
    news2 = dataset.baseline_scores(cfg, patients, te)["news2"]
    metrics = {"auroc": round(auroc(yte, p_te), 4), "news2_auroc": round(auroc(yte, news2), 4),
               "brier": round(float(np.mean((p_te - yte) ** 2)), 4), "n_test": int(len(yte)),
               "n_test_positive": int(yte.sum())}
    print(f"TEST AUROC {metrics['auroc']:.4f} (NEWS2 {metrics['news2_auroc']:.4f}) on {len(yte)} samples, "
          f"{int(yte.sum())} positive", flush=True)

    out = os.path.abspath(args.out)
    copied = copy_shipped(out)
    vdir = os.path.join(out, MODEL, VERSION)
    os.makedirs(vdir, exist_ok=True)
    scripted = torch.jit.script(model)
    blob = save_deterministic(scripted, os.path.join(vdir, "model.pt"))
    sha = hashlib.sha256(blob).hexdigest()
    # What the gateway will run: the file, loaded back, agrees with the eager model.
    again = torch.jit.load(os.path.join(vdir, "model.pt"))
    with torch.no_grad():
        y = again(torch.from_numpy(te.x[:64]))
    assert y.shape == (min(64, len(te.x)), 1) and y.dtype == torch.float32
    assert np.allclose(y.squeeze(1).numpy(), p_te[:64], atol=1e-6)
    write_manifest(os.path.join(vdir, "manifest.toml"), sha=sha, n=args.n, seed=args.seed, mean=mean, std=std,
                   ranges=ranges, metrics=metrics)
    n_split = {s: sum(r["split"] == s for r in patients.records) for s in ("train", "valid", "test")}
    with open(os.path.join(vdir, "MODEL_CARD.md"), "w") as f:
        f.write(CARD.format(version=VERSION, n=args.n, seed=args.seed, n_train=n_split["train"],
                            n_valid=n_split["valid"], n_test=n_split["test"], l2=l2,
                            l2_grid=", ".join(f"{v:g}" for v in L2_GRID), n_samples=len(yte),
                            n_pos=int(yte.sum()), auroc=metrics["auroc"], news2=metrics["news2_auroc"],
                            brier=metrics["brier"], mean_p=float(p_te.mean()), rate=float(yte.mean())))
    print(f"copied {', '.join(copied)}", flush=True)
    print(f"wrote {vdir} (model.pt {len(blob)} bytes, sha256 {sha}) in {time.time() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
