#!/usr/bin/env python3
"""Train one bedside model on the SYNTHETIC cohort and export it for the gateway.

    .venv/bin/python models/train.py sepsis            # or: aki
    .venv/bin/python models/train.py sepsis --n 300 --epochs 3 --out /tmp/sepsis-small
    .venv/bin/python models/train.py sepsis --shuffle-labels --out /tmp/shuffled   # must score ~0.5
    .venv/bin/python models/train.py sepsis --train-gen ward     # patients from models/generators.py

Steps: patients (--train-gen: models/cohort, or models/generators.py's "ward" / "both"; seeded) ->
features through models/featurize.py and the model's features.toml (the same spec the gateway
reads) -> labelled samples (models/dataset.py) -> train.toml's arch: "summary" (models/summary_model.py:
summaries -> hinge basis -> logistic head, Platt scaling) or "gru" (GRU, temperature scaling), both
calibrated on the validation split -> TorchScript (deterministic bytes) -> thresholds from
train.toml's [alert_budget] (models/alert_budget.py) -> manifest.toml with normalisation, the
validity ranges seen in training and [suggested_thresholds] -> validation AUROC of the model's other
versions on the same samples -> models/evaluate.py writes the model card from the held-out test split. Single-threaded and seeded: the same torch/numpy versions give
the same model.pt bytes. Training settings per model: models/<name>/train.toml. Shared pieces:
models/calibration.py (temperature), models/torchscript.py (deterministic bytes).

The model classes stay in this file: TorchScript names them after the module that defines them
(``__torch__.Exported`` for the entry point), and the name is part of the exported bytes.
Also runs as ``python -m models.train``.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time

if not __package__:  # run as a file (`python models/train.py`, as CI does): find `models`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models.torchscript import pin_hash_seed, save_deterministic  # noqa: E402

pin_hash_seed()  # before anything else: the exported bytes depend on it

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from models import alert_budget, dataset, evaluate, featurize  # noqa: E402
from models.calibration import fit_platt, fit_temperature, nll  # noqa: E402
from models.evaluation import auroc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

HIDDEN = 32
DEFAULT_N = 3000
DEFAULT_SEED = 20260201


class Net(nn.Module):
    def __init__(self, n_in: int, hidden: int = HIDDEN):
        super().__init__()
        self.gru = nn.GRU(n_in, hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        _, h = self.gru(x)
        return self.head(h[-1])


class Exported(nn.Module):
    """The gateway's contract: float32 [B, steps, channels] -> calibrated probability [B, 1]."""

    def __init__(self, net: Net, temperature: float, steps: int, channels: int):
        super().__init__()
        self.gru = net.gru
        self.head = net.head
        self.steps = steps
        self.channels = channels
        self.register_buffer("temperature", torch.tensor([temperature], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.size(1) != self.steps or x.size(2) != self.channels:
            raise ValueError("input must be float32 [B, steps, channels] as the manifest declares")
        _, h = self.gru(x)
        return torch.sigmoid(self.head(h[-1]) / self.temperature)


def logits(net, x: np.ndarray, bs: int = 2048) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), bs):
            out.append(net(torch.from_numpy(x[i:i + bs])).squeeze(1))
    return torch.cat(out).numpy().astype(np.float64)


def fmt(v) -> str:
    return "[" + ", ".join(f"{x:.6f}" for x in v) + "]"


def features_entry(cfg, out: str) -> str:
    """manifest `features`: the spec relative to the version folder. A spec outside models/<name>/
    (an --out elsewhere) is copied beside the model."""
    rel = os.path.relpath(cfg["spec_path"], out)
    model_dir = os.path.join(HERE, cfg["name"])
    if os.path.commonpath([os.path.abspath(out), model_dir]) == model_dir:
        return rel
    import shutil
    shutil.copyfile(cfg["spec_path"], os.path.join(out, "features.toml"))
    return "features.toml"


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return repr(v)


def write_manifest(path, cfg, *, sha, seed, n, mean, std, temperature=None, ranges, shape,
                   calibration=None, features="../features.toml", extra_top=None, tables=None, gen="cohort"):
    spec = cfg["spec"]
    if calibration is None:
        calibration = f"temperature scaling, T = {temperature:.4f}"
    source = {"cohort": "synthetic cohort generated by models/cohort/generate.py",
              "ward": "synthetic ward cohort generated by models/generators.py (ward)",
              "both": "synthetic cohort + ward cohort (models/generators.py, half each)"}[gen]
    units = ", ".join(f["unit"] for f in spec["feature"])
    required = [f["name"] for f in spec["feature"] if f["name"] == "creatinine" and cfg["outcome"] == "aki"]
    lines = [
        f"# Model manifest read by the bedside gateway. Generated by models/train.py -- do not edit by hand.",
        f'name = "{cfg["name"]}"',
        f'version = "{cfg["version"]}"',
        f'status = "{cfg.get("status", "active")}"',
        'file = "model.pt"',
        f'sha256 = "{sha}"',
        f'features = "{features}"',
        f'description = "{cfg["description"]}"',
        f'training_data = "{source} (n {n}, seed {seed}); no real patient data"',
    ]
    for k, v in (extra_top or {}).items():
        lines.append(f"{k} = {toml_value(v)}")
    lines += [
        "",
        "[input]",
        f"shape = [{shape[0]}, {shape[1]}]   # per sample: time steps, channels",
        'dtype = "float32"',
        f"# per-feature normalisation (features.toml order), raw units {units}",
        f"mean = {fmt(mean)}",
        f"std = {fmt(std)}",
        "",
        "[output]",
        "shape = [1]",
        f'meaning = "{cfg["meaning"]}"',
        f"horizon_hours = {cfg['horizon_hours']}",
        f'calibration = "{calibration}"',
        "",
        "# Where the model may score: outside this the gateway abstains and says why (the complete set of",
        "# core observations a score needs is features.toml [require_recent]; values beyond a range are",
        "# read clamped to it, not refused).",
        "[validity]",
        f"required = [{', '.join(repr(r).replace(chr(39), chr(34)) for r in required)}]",
        "max_staleness_hours = 12",
        "",
        "[validity.range]   # values seen in training, canonical units",
    ]
    for name, (lo, hi) in ranges.items():
        lines.append(f"{name} = [{lo}, {hi}]")
    for table, (comment, values) in (tables or {}).items():
        lines += ["", f"# {comment}", f"[{table}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def train_gru(args, cfg, tr, va, ytr):
    """The v1 architecture: GRU over the grid, temperature scaling. Returns (scripted, eager logits
    of the first validation samples as probabilities, calibration words)."""
    shape = tr.x.shape[1:]
    net = Net(shape[1], cfg.get("hidden", HIDDEN))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.get("learning_rate", 3e-3), weight_decay=1e-4)
    pos = max(float(ytr.mean()), 1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(args.seed + 1)
    X, Y = torch.from_numpy(tr.x), torch.from_numpy(ytr)
    best = (math.inf, None, 0)
    for epoch in range(1, args.epochs + 1):
        net.train()
        order = torch.randperm(len(X), generator=gen)
        bar = dataset.Progress(len(order), f"epoch {epoch}/{args.epochs}")
        total = 0.0
        for i in range(0, len(order), 256):
            b = order[i:i + 256]
            opt.zero_grad()
            loss = loss_fn(net(X[b]).squeeze(1), Y[b])
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(b)
            bar.update(min(i + 256, len(order)), f"loss {total / min(i + 256, len(order)):.4f}")
        zv = logits(net, va.x)
        yv = va.y.astype(np.float64)
        val_loss = nll(zv, yv)
        mark = ""
        if val_loss < best[0]:
            best, mark = (val_loss, {k: v.clone() for k, v in net.state_dict().items()}, epoch), " *"
        print(f"epoch {epoch:2d}  train_loss {total / len(order):.4f}  val_loss {val_loss:.4f}  "
              f"val_auroc {auroc(yv, zv):.4f}{mark}", flush=True)
    net.load_state_dict(best[1])
    temperature = fit_temperature(logits(net, va.x), va.y.astype(np.float64))
    print(f"best epoch {best[2]}; temperature scaling T = {temperature:.4f} (positive rate {pos:.3f})")
    scripted = torch.jit.script(Exported(net, temperature, shape[0], shape[1]).eval())
    with torch.no_grad():
        eager = 1 / (1 + np.exp(-logits(net, va.x[:256]) / temperature))
    return scripted, eager, f"temperature scaling, T = {temperature:.4f}", {}


def train_summary(args, cfg, tr, va, ytr):
    """arch = "summary" (models/summary_model.py): summaries -> hinge basis -> logistic head (L-BFGS,
    L2, early stopping on validation loss) -> Platt scaling on the validation split."""
    from models import summary_model as sm

    spec = cfg["spec"]
    shape = tr.x.shape[1:]
    sc = cfg.get("summary", {})
    summary_kw = {"stale_cap_hours": sc.get("stale_cap_hours", 24.0), "extreme_hours": sc.get("extreme_hours"),
                  "change_hours": tuple(sc.get("change_hours", (6.0, 24.0)))}
    head = sc.get("head", "hinge")
    if head not in ("hinge", "stumps", "blend"):
        raise SystemExit(f"train.toml [summary] head: \"hinge\", \"stumps\" or \"blend\", not {head!r}")
    step_hours = spec["step_minutes"] / 60.0
    epoch = "-"
    if head in ("hinge", "blend"):
        hinge = sm.SummaryModel(shape[0], shape[1], step_hours, knots=tuple(sc.get("knots", sm.DEFAULT_KNOTS)),
                                **summary_kw)
        epoch, _ = sm.fit(hinge, tr.x, ytr, va.x, va.y, epochs=args.epochs,
                          l2=args.l2 if args.l2 is not None else sc.get("l2", 1e-3),
                          steps_per_epoch=sc.get("lbfgs_steps_per_epoch", 25),
                          log=lambda line: print(line, flush=True))
        hinge.fold_standardisation()
        model = hinge
    if head in ("stumps", "blend"):
        st = cfg.get("stumps", {})
        model = sm.fit_stumps(shape[0], shape[1], step_hours, tr.x, ytr, va.x, va.y,
                              rounds=st.get("rounds", 300), learning_rate=st.get("learning_rate", 0.1),
                              bins=st.get("bins", 16), l2=st.get("l2", 1.0),
                              log=lambda line: print(line, flush=True), **summary_kw)
    if head == "blend":
        model = sm.blend(hinge, model, step_hours, stump_weight=sc.get("stump_weight", 0.5), **summary_kw)
    model.eval()
    with torch.no_grad():
        z = torch.cat([model.raw_logit(torch.from_numpy(va.x[i:i + 4096])) for i in range(0, len(va.x), 4096)])
    a, b = fit_platt(z.squeeze(1).double().numpy(), va.y.astype(np.float64))
    model.calib_intercept.fill_(a)
    model.calib_slope.fill_(b)
    print(f"{head} head, best epoch {epoch}; Platt scaling on the validation split: a = {a:.6f}, b = {b:.6f}", flush=True)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        eager = model(torch.from_numpy(va.x[:256])).squeeze(1).double().numpy()
    calibration = f"Platt scaling on the validation split: p = sigmoid(a + b * z), a = {a:.6f}, b = {b:.6f}"
    extra = {"arch": "summary", "explanation": "attribute"}
    return scripted, eager, calibration, extra


def remap_patients(patients, spec_from, spec_to):
    """The measurements of `patients` (extracted with spec_from) for spec_to's features, matched by
    name; None when spec_to has a feature spec_from lacks or defines differently."""
    idx = {f["name"]: i for i, f in enumerate(spec_from["feature"])}
    keys = ("loinc", "unit", "aggregate", "max_age_hours", "transform", "coded_values", "molar_mass")
    to_from = []
    for f in spec_to["feature"]:
        i = idx.get(f["name"])
        if i is None or any(spec_from["feature"][i][k] != f[k] for k in keys):
            return None
        to_from.append(i)
    back = {i: j for j, i in enumerate(to_from)}
    meas = [[(back[f], t, v, rid) for f, t, v, rid in ms if f in back] for ms in patients.measurements]
    return dataset.Patients(patients.records, meas)


def compare_auroc(cfg, patients, va, model_dir: str):
    """Validation AUROC of an existing model (its own spec and normalisation) on the same samples."""
    import tomllib
    with open(os.path.join(model_dir, "manifest.toml"), "rb") as f:
        man = tomllib.load(f)
    spec = featurize.load_spec(os.path.normpath(os.path.join(model_dir, man["features"])))
    remapped = remap_patients(patients, cfg["spec"], spec)
    if remapped is None:
        return None
    old = dict(cfg, spec=spec)
    s = dataset.samples(old, remapped, "valid", np.array(man["input"]["mean"]), np.array(man["input"]["std"]))
    assert np.array_equal(s.t, va.t) and np.array_equal(s.y, va.y), "the comparison must use the same samples"
    p = evaluate.score_model(os.path.join(model_dir, "model.pt"), s.x)
    return auroc(s.y.astype(np.float64), p)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="folder under models/ with features.toml and train.toml")
    ap.add_argument("--n", type=int, default=DEFAULT_N, help="cohort size (patients)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--epochs", type=int, help="default: train.toml's epochs")
    ap.add_argument("--out", help="output folder (default models/<model>/<version>)")
    ap.add_argument("--arch", choices=("gru", "summary"), help="default: train.toml's arch (else gru)")
    ap.add_argument("--l2", type=float, help="summary: L2 on the head's weights (default: train.toml [summary] l2)")
    ap.add_argument("--train-gen", choices=dataset.GENERATORS, default="cohort",
                    help="which synthetic generator the patients come from (ward/both: models/generators.py)")
    ap.add_argument("--compare", nargs="*", default=None,
                    help="model version folders to score on the same validation samples "
                         "(default: the other versions of this model that have a model.pt)")
    ap.add_argument("--shuffle-labels", action="store_true",
                    help="train on permuted labels: the evaluation must then show AUROC ~0.5")
    ap.add_argument("--no-evaluate", action="store_true")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    t0 = time.time()
    cfg = dataset.load_config(args.model)
    arch = args.arch or cfg.get("arch", "gru")
    args.epochs = args.epochs or cfg.get("epochs", 10)
    out = args.out or os.path.join(HERE, args.model, cfg["version"])
    os.makedirs(out, exist_ok=True)
    print(f"{args.model}: {arch}, {args.train_gen} n={args.n} seed={args.seed}", flush=True)
    patients = dataset.load_patients(cfg, args.n, args.seed, args.train_gen)
    mean, std = dataset.normalisation(cfg, patients)
    ranges = dataset.training_ranges(cfg, patients)
    tr = dataset.samples(cfg, patients, "train", mean, std)
    va = dataset.samples(cfg, patients, "valid", mean, std)
    ytr = tr.y.astype(np.float32)
    if args.shuffle_labels:
        # Negative control: training and model selection (epoch, temperature) see only
        # permuted labels; the test split keeps the true ones.
        rng = np.random.default_rng(args.seed)
        ytr = rng.permutation(ytr)
        va.y = rng.permutation(va.y)
    print(f"train {len(tr.y)} samples ({tr.y.mean():.3f} positive), valid {len(va.y)} ({va.y.mean():.3f})", flush=True)

    shape = tr.x.shape[1:]
    t_fit = time.time()
    trainer = train_summary if arch == "summary" else train_gru
    scripted, eager, calibration, extra = trainer(args, cfg, tr, va, ytr)
    print(f"fit in {time.time() - t_fit:.1f} s", flush=True)
    model_path = os.path.join(out, "model.pt")
    blob = save_deterministic(scripted, model_path)
    sha = hashlib.sha256(blob).hexdigest()
    loaded = torch.jit.load(model_path)
    with torch.no_grad():
        again = loaded(torch.from_numpy(va.x[:256])).squeeze(1).numpy()
        p_va = evaluate.score_model(model_path, va.x)
        if arch == "summary":
            att = loaded.attribute(torch.from_numpy(va.x[:8]))
            assert att.shape == (8,) + tuple(shape) and not torch.is_grad_enabled()
    assert np.allclose(eager, again, atol=1e-5), "scripted model disagrees with the eager one"
    yv = va.y.astype(np.float64)
    val_auc = auroc(yv, p_va)
    print(f"VALID {args.model} {arch}: AUROC {val_auc:.4f} on {len(yv)} samples", flush=True)
    tables = {}
    chosen = alert_budget.choose(cfg, p_va, yv, va.patient, va.t)
    if chosen is not None:
        print(f"thresholds from the alert budget ({chosen['cards_per_patient_day']} cards/patient-day, "
              f"{chosen['service']}, suppress {chosen['suppress_for_hours']} h): warning {chosen['warning']} "
              f"({chosen['validation_cards_per_patient_day']} cards/patient-day, PPV {chosen['validation_ppv']}), "
              f"critical {chosen['critical']}", flush=True)
        tables["suggested_thresholds"] = (
            "Thresholds chosen on the validation split for the alert budget (models/alert_budget.py); "
            "the service toml's [thresholds] decide what is shown.", chosen)
        cfg["thresholds"] = [chosen["warning"], chosen["critical"]]
    write_manifest(os.path.join(out, "manifest.toml"), cfg, sha=sha, seed=args.seed, n=args.n, mean=mean,
                   std=std, ranges=ranges, shape=shape, calibration=calibration,
                   features=features_entry(cfg, out), extra_top=extra, tables=tables, gen=args.train_gen)
    print(f"wrote {model_path} ({len(blob)} bytes, sha256 {sha}) in {time.time() - t0:.0f} s", flush=True)
    compare = args.compare
    if compare is None and not args.out:
        root = os.path.join(HERE, args.model)
        compare = [os.path.join(root, d) for d in sorted(os.listdir(root))
                   if os.path.isfile(os.path.join(root, d, "model.pt"))
                   and os.path.abspath(os.path.join(root, d)) != os.path.abspath(out)]
    for d in compare or []:
        other = compare_auroc(cfg, patients, va, d)
        if other is not None:
            print(f"VALID {os.path.relpath(d, HERE)}: AUROC {other:.4f} on the same samples", flush=True)
    if not args.no_evaluate:
        evaluate.run(cfg, out, patients=patients, n=args.n, seed=args.seed, train_gen=args.train_gen,
                     test_gen=args.train_gen, shuffled=args.shuffle_labels, train_seconds=time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
