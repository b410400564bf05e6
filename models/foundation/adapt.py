"""Few-label adaptation of the foundation model, measured on the generator it was not pretrained on.

    python -m models.foundation.adapt all --model models/foundation/1.0.0 --gen ward
    python -m models.foundation.adapt icu_transfer_48h --shots 8 --model ...

For each task and each k (labelled patients per class), k positive and k negative patients are drawn
from the target generator's train/valid patients, and three models are fitted on their samples (every
4 h of each stay, up to the onset):
- **foundation**: a linear probe (L2 logistic, l2 = 10, fixed in advance) on the frozen embedding;
- **foundation_finetune** (``--finetune-steps``): the pretrained encoder and a logistic head trained
  end to end on the same samples (encoder learning rate 3e-4, head 2e-3);
- **summary GBM**: boosted stumps on count and summary features of the last 24 h (per concept last,
  min, max, mean, count and hours since last; hours since admission, age, antibiotics, ICU, oxygen);
- **from scratch**: the foundation model's architecture, randomly initialised, trained end to end on
  the same samples (``--scratch-steps`` steps, batch 32).
Each is scored on the target generator's test patients (every sample, AUROC) with patient-clustered
bootstrap CIs; paired CIs for foundation minus each comparator come from the same resamples. With
``--repeats`` draws per k the point estimate and the bootstrap replicates are averaged over draws.

Tasks: the three served tasks (deterioration 12 h, sepsis 12 h, AKI 48 h: onsets read from the chart as
``models/labels.py`` defines them) and three the task models never saw, read from the record:
``icu_transfer_48h`` (an ICU location starts), ``antibiotic_24h`` (a first antibiotic order or
administration), ``oxygen_24h`` (first O2 flow > 0 L/min or FiO2 > 21 %).

Prints the targets of the issue: at k <= 32, on how many tasks the foundation head beats both comparators
(paired 95 % CI above 0); with all labels, its distance to the best. Writes ``adaptation.json``,
``adaptation.md`` and one SVG per task into ``--out`` (default: ``<model>/adaptation``).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models import comparators, evaluation, featurize, generators  # noqa: E402
from models.dataset import Progress  # noqa: E402
from models.foundation import tokenizer  # noqa: E402
from models.foundation.model import Encoder, embedding  # noqa: E402
from models.labels import ANTIBIOTIC_RXNORM  # noqa: E402

H = 3600.0
SHOTS = [1, 2, 4, 8, 16, 32, 64, 128, 0]  # 0: all
TASKS = {
    "deterioration": {"horizon": 12, "new": False},
    "sepsis": {"horizon": 12, "new": False},
    "aki": {"horizon": 48, "new": False},
    "icu_transfer_48h": {"horizon": 48, "new": True},
    "antibiotic_24h": {"horizon": 24, "new": True},
    "oxygen_24h": {"horizon": 24, "new": True},
}
EVERY_HOURS = 4.0
PROBE_L2 = 10.0


# ------------------------------------------------------------------------------------- data
def first_time(events, pred) -> float | None:
    ts = [e["time"] for e in events if e["time"] is not None and pred(e)]
    return min(ts) if ts else None


def task_onsets(p, events, codes) -> dict:
    """Per task, the first time its event is recorded (None: never in the stay)."""
    o2, fio2 = codes["o2_flow"], codes["fio2"]
    return {
        "deterioration": p["onsets"].get("deterioration") and p["onsets"]["deterioration"].timestamp(),
        "sepsis": p["onsets"].get("sepsis") and p["onsets"]["sepsis"].timestamp(),
        "aki": p["onsets"].get("aki") and p["onsets"]["aki"].timestamp(),
        "icu_transfer_48h": first_time(events, lambda e: e["code"] == "LOCATION/ICU"),
        "antibiotic_24h": first_time(events, lambda e: e["code"].startswith("RXNORM/")
                                     and e["code"][len("RXNORM/"):] in ANTIBIOTIC_RXNORM),
        "oxygen_24h": first_time(events, lambda e: (e["code"] == o2 and (e["numeric_value"] or 0) > 0)
                                 or (e["code"] == fio2 and (e["numeric_value"] or 0) > 21.0)),
    }


def series(events_sorted, codes_list) -> dict:
    """Per code: (times, values) arrays of its numeric events, in time order."""
    out = {}
    for code in codes_list:
        pts = [(e["time"], e["numeric_value"]) for e in events_sorted
               if e["code"] == code and e["numeric_value"] is not None]
        out[code] = (np.array([p[0] for p in pts], dtype=np.float64), np.array([p[1] for p in pts], dtype=np.float64))
    return out


def summary_row(events_sorted, by_code, codes_list, t, admit, age) -> list[float]:
    """Count and summary features of the 24 h before ``t``."""
    row = []
    for code in codes_list:
        times, vals = by_code[code]
        hi = int(np.searchsorted(times, t, side="right"))
        lo = int(np.searchsorted(times, t - 24 * H, side="right"))
        recent = vals[lo:hi]
        if len(recent):
            row += [float(recent[-1]), float(recent.min()), float(recent.max()), float(recent.mean()),
                    float(len(recent))]
        else:
            row += [np.nan, np.nan, np.nan, np.nan, 0.0]
        row.append(min((t - times[hi - 1]) / H, 72.0) if hi > 0 else 72.0)
    acvpu = [e["text_value"] for e in events_sorted if e["code"] == "LOINC/67775-7" and e["time"] <= t]
    abx = any(e["code"].startswith("RXNORM/") and e["code"][7:] in ANTIBIOTIC_RXNORM and e["time"] <= t
              for e in events_sorted)
    icu = any(e["code"] == "LOCATION/ICU" and e["time"] <= t for e in events_sorted)
    meds24 = sum(1 for e in events_sorted if e["code"].startswith("RXNORM/") and t - 24 * H < e["time"] <= t)
    row += [float(bool(acvpu) and acvpu[-1] != "248234008"), float(abx), float(icu), float(meds24),
            (t - admit) / H, float(age)]
    return row


class Samples:
    """Every (patient, time) of the target generator: token windows, summary features, labels."""

    def __init__(self, vocab, module, patients, spec, batch=64, observations_only=False):
        """``observations_only``: the inputs (tokens and summary features) are read from the
        record's Observations alone, as a CDS service's gathered vital signs and labs; the labels
        still come from the whole record."""
        codes = {f["name"]: "LOINC/" + featurize.TERMINOLOGY["concept"][f["concept"]]["loinc"][0]
                 for f in spec["feature"]}
        numeric = [codes[f["name"]] for f in spec["feature"] if not f["coded_values"]]
        self.pid, self.split, self.times, self.ids, self.hours, rows = [], [], [], [], [], []
        self.labels = {k: [] for k in TASKS}
        self.valid = {k: [] for k in TASKS}
        bar = Progress(len(patients), "samples")
        for i, p in enumerate(patients):
            events, _ = tokenizer.events_of_bundle(spec, p["bundle"])
            onsets = task_onsets(p, events, codes)
            if observations_only:
                events = tokenizer.observation_events(events)
            timed = sorted((e for e in events if e["time"] is not None and e["code"] != "MEDS_BIRTH"),
                           key=lambda e: e["time"])
            by_code = series(timed, numeric)
            admit, end = p["admit"].timestamp(), p["discharge"].timestamp()
            t = admit + EVERY_HOURS * H
            while t < end - 0.5 * H:
                enc = tokenizer.encode(vocab, events, t)
                if enc["events"] > 0:
                    self.pid.append(p["id"])
                    self.split.append(p["split"])
                    self.times.append(t)
                    self.ids.append(enc["ids"])
                    self.hours.append(enc["hours"])
                    rows.append(summary_row(timed, by_code, numeric, t, admit, p["age"]))
                    for k, spec_k in TASKS.items():
                        o = onsets[k]
                        self.valid[k].append(o is None or o > t)
                        self.labels[k].append(o is not None and t < o <= t + spec_k["horizon"] * H)
                t += EVERY_HOURS * H
            bar.update(i + 1)
        self.X = np.asarray(rows, dtype=np.float64)
        self.pid = np.asarray(self.pid)
        self.split = np.asarray(self.split)
        self.labels = {k: np.asarray(v, dtype=bool) for k, v in self.labels.items()}
        self.valid = {k: np.asarray(v, dtype=bool) for k, v in self.valid.items()}
        self.emb = self._embed(module, batch)
        self.module = module

    def _embed(self, module, batch) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(self.ids), batch):
                ids, hours = pad(self.ids[i:i + batch], self.hours[i:i + batch])
                out.append(module(ids, hours).numpy())
        return np.concatenate(out).astype(np.float64)


def pad(ids_list, hours_list):
    T = max(len(x) for x in ids_list)
    ids = torch.zeros(len(ids_list), T, dtype=torch.long)
    hours = torch.zeros(len(ids_list), T)
    for b, (i, h) in enumerate(zip(ids_list, hours_list)):
        ids[b, :len(i)] = torch.tensor(i)
        hours[b, :len(h)] = torch.tensor(h)
    return ids, hours


# ------------------------------------------------------------------------------------- models
def impute(X_train, X):
    """Missing values -> the training median (0 where a column has none), plus missingness flags."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: median nan -> 0
        med = np.nanmedian(X_train, axis=0)
    med = np.where(np.isnan(med), 0.0, med)
    miss = np.isnan(X).astype(np.float64)
    return np.column_stack([np.where(np.isnan(X), med, X), miss])


def pretrained_encoder(module) -> Encoder:
    """The scripted model's encoder as an eager, trainable module (same weights)."""
    state = {k[len("encoder."):]: v for k, v in module.state_dict().items() if k.startswith("encoder.")}
    vocab_size, d = state["tok.weight"].shape
    layers = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    heads = int(getattr(module.encoder.blocks, "0").heads)
    tasks = state["hazard.weight"].shape[0] // 6
    enc = Encoder(vocab_size, d=d, layers=layers, heads=heads, ff=state["blocks.0.ff1.weight"].shape[0],
                  dropout=0.1, tasks=tasks)
    enc.load_state_dict(state)
    return enc


def fit_scratch(vocab_size, ids, hours, y, steps, seed, context=128, init=None):
    """The encoder trained end to end with a logistic head: from random weights, or (``init``: the
    pretrained module) a light fine-tune of the pretrained weights at a lower learning rate."""
    torch.manual_seed(seed)
    if init is None:
        model = Encoder(vocab_size, d=64, layers=2, heads=4, ff=128, dropout=0.1)
        groups = [{"params": list(model.parameters()), "lr": 2e-3}]
    else:
        model = pretrained_encoder(init)
        groups = [{"params": list(model.parameters()), "lr": 3e-4}]
    head = torch.nn.Linear(2 * model.d, 1)
    opt = torch.optim.AdamW(groups + [{"params": list(head.parameters()), "lr": 2e-3}], weight_decay=0.01)
    rng = np.random.default_rng(seed)
    yt = torch.tensor(y, dtype=torch.float32)
    pos_w = torch.tensor(max((1 - y.mean()) / max(y.mean(), 1e-6), 1.0) ** 0.5)
    model.train()
    for _ in range(steps):
        idx = rng.integers(0, len(ids), min(32, len(ids)))
        b_ids, b_h = pad([trim(ids[j], context) for j in idx], [trim(hours[j], context) for j in idx])
        states = model.states(b_ids, b_h)
        logit = head(embedding(states, (b_ids != 0).sum(1))).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, yt[idx], pos_weight=pos_w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

    def predict(ids_all, hours_all):
        out = []
        with torch.no_grad():
            for i in range(0, len(ids_all), 128):
                b_ids, b_h = pad([trim(x, context) for x in ids_all[i:i + 128]],
                                 [trim(x, context) for x in hours_all[i:i + 128]])
                out.append(head(embedding(model.states(b_ids, b_h), (b_ids != 0).sum(1))).squeeze(-1).numpy())
        return np.concatenate(out)
    return predict


def trim(x, context):
    """Statics (the first 3 or fewer) and the newest tokens, as the tokeniser's window."""
    n_static = 3 if len(x) >= 3 else len(x)
    return list(x[:n_static]) + list(x[n_static:])[-(context - n_static):]


def draw(pool_pids, pos_pids, k, rng):
    """k positive and k negative patients (None when the pool has fewer)."""
    pos = sorted(pos_pids)
    neg = sorted(set(pool_pids) - pos_pids)
    if k == 0:
        return pos + neg
    if len(pos) < k or len(neg) < k:
        return None
    return list(rng.choice(pos, k, replace=False)) + list(rng.choice(neg, k, replace=False))


def run_task(task, S: Samples, vocab_size, shots, repeats, scratch_steps, seed, bootstrap, finetune_steps=0):
    v = S.valid[task]
    pool = v & np.isin(S.split, ["train", "valid"])
    test = v & (S.split == "test")
    y_test = S.labels[task][test]
    pos_pids = set(S.pid[pool & S.labels[task]].tolist())
    pool_pids = sorted(set(S.pid[pool].tolist()))
    results = []
    test_idx = np.flatnonzero(test)
    evaluable = 0 < int(y_test.sum()) < len(y_test)
    for k in shots:
        if not evaluable:
            results.append({"k": k, "available": False})
            continue
        n_rep = 1 if k == 0 or k >= 64 else repeats
        reps = []
        for r in range(n_rep):
            rng = np.random.default_rng(seed + 1000 * r + k)
            chosen = draw(pool_pids, pos_pids, k, rng)
            if chosen is None:
                break
            tr = pool & np.isin(S.pid, chosen)
            y = S.labels[task][tr].astype(np.float64)
            if y.min() == y.max():
                break
            scores = {}
            probe = comparators.fit_logistic(S.emb[tr], y, l2=PROBE_L2)
            scores["foundation"] = comparators.predict_logistic(probe, S.emb[test])
            Xtr, Xte = impute(S.X[tr], S.X[tr]), impute(S.X[tr], S.X[test])
            gbm = comparators.fit_stumps(Xtr, y, rounds=100, learning_rate=0.1)
            scores["summary_gbm"] = comparators.predict_stumps(gbm, Xte)
            lr = comparators.fit_logistic(Xtr, y, l2=PROBE_L2)
            scores["summary_logistic"] = comparators.predict_logistic(lr, Xte)
            if scratch_steps > 0:
                tr_idx = np.flatnonzero(tr)
                predict = fit_scratch(vocab_size, [S.ids[j] for j in tr_idx], [S.hours[j] for j in tr_idx], y,
                                      scratch_steps, seed + r)
                scores["from_scratch"] = predict([S.ids[j] for j in test_idx], [S.hours[j] for j in test_idx])
            if finetune_steps > 0:
                tr_idx = np.flatnonzero(tr)
                predict = fit_scratch(vocab_size, [S.ids[j] for j in tr_idx], [S.hours[j] for j in tr_idx], y,
                                      finetune_steps, seed + r, init=S.module)
                scores["foundation_finetune"] = predict([S.ids[j] for j in test_idx],
                                                        [S.hours[j] for j in test_idx])
            boot = evaluation.cluster_bootstrap(y_test, scores, S.pid[test], n=bootstrap, seed=seed)
            reps.append(boot)
        if not reps:
            results.append({"k": k, "available": False})
            continue
        names = list(reps[0]["point"])
        merged = {"point": {n: {m: float(np.mean([b["point"][n][m] for b in reps])) for m in ("auroc", "auprc")}
                            for n in names},
                  "reps": {n: {m: np.nanmean([b["reps"][n][m] for b in reps], axis=0) for m in ("auroc", "auprc")}
                           for n in names}}
        summary = evaluation.summarize_bootstrap(merged, "foundation")
        if "foundation_finetune" in names:
            summary["finetune_differences"] = evaluation.summarize_bootstrap(merged, "foundation_finetune")["differences"]
        spread = {n: [float(min(b["point"][n]["auroc"] for b in reps)), float(max(b["point"][n]["auroc"] for b in reps))]
                  for n in names}
        results.append({"k": k, "available": True, "draws": len(reps), "summary": summary, "draw_range": spread,
                        "train_patients": 2 * k if k else len(pool_pids)})
    return {"task": task, "horizon_hours": TASKS[task]["horizon"], "new": TASKS[task]["new"],
            "test_samples": int(test.sum()), "test_positives": int(y_test.sum()),
            "test_patients": int(len(set(S.pid[test].tolist()))), "pool_positive_patients": len(pos_pids),
            "pool_patients": len(pool_pids), "shots": results}


# ------------------------------------------------------------------------------------- report
COLORS = {"foundation": "#1B5E9A", "foundation_finetune": "#6A3D9A", "summary_gbm": "#B5542B", "summary_logistic": "#8A6D00", "from_scratch": "#4F7A3A"}


def svg_curve(res) -> str:
    """AUROC against k (log scale) with 95 % CI bars, one line per model."""
    W, Hh, x0, y0, pw, ph = 560, 360, 60, 40, 440, 260
    pts = [s for s in res["shots"] if s["available"]]
    ks = [s["k"] for s in pts]
    xs_lab = [str(k) if k else "all" for k in ks]
    xi = {k: x0 + (i + 0.5) * pw / max(len(ks), 1) for i, k in enumerate(ks)}
    lo, hi = 0.4, 1.0

    def yv(v):
        return y0 + ph * (1 - (min(max(v, lo), hi) - lo) / (hi - lo))
    title = f"{res['task']}: AUROC vs labelled patients per class (unseen generator)"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{Hh}" viewBox="0 0 {W} {Hh}" role="img" '
           f'aria-label="{title}">', f"<title>{title}</title>",
           f'<rect width="{W}" height="{Hh}" fill="#FFFFFF"/>',
           f'<g font-family="DejaVu Sans, Arial, sans-serif" font-size="11" fill="#222">',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="13" font-weight="bold">{title}</text>',
           f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#222"/>']
    for v in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        out.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{yv(v):.1f}" y2="{yv(v):.1f}" stroke="#DDD"/>')
        out.append(f'<text x="{x0 - 6}" y="{yv(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    for k, lab in zip(ks, xs_lab):
        out.append(f'<text x="{xi[k]:.1f}" y="{y0 + ph + 16}" text-anchor="middle">{lab}</text>')
    out.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 34}" text-anchor="middle">k (patients per class)</text>')
    names = list(pts[0]["summary"]["scorers"]) if pts else []
    for j, n in enumerate(names):
        c = COLORS.get(n, "#555")
        off = (j - (len(names) - 1) / 2) * 4
        line = []
        for s in pts:
            sc = s["summary"]["scorers"][n]
            x = xi[s["k"]] + off
            line.append(f"{x:.1f},{yv(sc['auroc']):.1f}")
            l95, h95 = sc["auroc_ci"]
            if np.isfinite(l95) and np.isfinite(h95):
                out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{yv(l95):.1f}" y2="{yv(h95):.1f}" stroke="{c}" '
                           f'stroke-opacity="0.6"/>')
        out.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="{c}" stroke-width="2"/>')
        out.append(f'<text x="{x0 + pw + 8}" y="{y0 + 14 + 16 * j}" fill="{c}">{n.replace("_", " ")}</text>')
    out.append("</g></svg>")
    return "\n".join(out) + "\n"


def verdicts(all_res) -> dict:
    """The issue's targets from the results, for each foundation head."""
    out = {}
    for head, key in (("foundation", "differences"), ("foundation_finetune", "finetune_differences")):
        few = {}
        for res in all_res:
            for s in res["shots"]:
                if not s["available"] or s["k"] == 0 or s["k"] > 32 or key not in s["summary"]:
                    continue
                diffs = s["summary"][key]
                wins = all(d["auroc_ci"][0] > 0 for d in (diffs.get("from_scratch"), diffs.get("summary_gbm"))
                           if d is not None)
                few.setdefault(s["k"], {"tasks": 0, "wins": 0})
                few[s["k"]]["tasks"] += 1
                few[s["k"]]["wins"] += int(wins)
        full = {}
        for res in all_res:
            s = next((s for s in res["shots"] if s["k"] == 0 and s["available"]), None)
            if s is None or head not in s["summary"]["scorers"]:
                continue
            pts = {n: v["auroc"] for n, v in s["summary"]["scorers"].items()}
            full[res["task"]] = {"foundation": pts[head], "best": max(pts.values()),
                                 "gap": max(pts.values()) - pts[head]}
        if few or full:
            out[head] = {"few_labels": few,
                         "few_labels_met": bool(few) and all(v["wins"] * 2 > v["tasks"] for v in few.values()),
                         "all_labels": full,
                         "all_labels_met": bool(full) and all(v["gap"] <= 0.02 for v in full.values())}
    return out


def markdown(all_res, verdict, meta) -> str:
    lines = [f"# Foundation model adaptation — {meta['model']} on the '{meta['gen']}' generator",
             "", f"Synthetic data only. Pretrained on: {meta['training_data']}. Target: {meta['n']} patients of the "
             f"'{meta['gen']}' generator (seed {meta['seed']}), samples every {EVERY_HOURS:g} h; k-shot patients from its "
             "train/valid split, scored on its test split. AUROC with patient-clustered 95 % CIs "
             f"({meta['bootstrap']} resamples); draws per k: {meta['repeats']} for k < 64.", ""]
    for res in all_res:
        lines.append(f"## {res['task']} ({'new task' if res['new'] else 'served task'}, horizon {res['horizon_hours']} h)")
        lines.append("")
        lines.append(f"Test: {res['test_samples']} samples, {res['test_positives']} positive, {res['test_patients']} "
                     f"patients; pool: {res['pool_positive_patients']} positive of {res['pool_patients']} patients.")
        lines.append("")
        names = None
        for s in res["shots"]:
            if s["available"]:
                names = list(s["summary"]["scorers"])
                break
        if names is None:
            lines += ["Not enough positive patients for any k.", ""]
            continue
        lines.append("| k | " + " | ".join(names) + " | foundation − " + " | foundation − ".join(n for n in names if n != "foundation") + " |")
        lines.append("|---" * (2 * len(names)) + "|")
        for s in res["shots"]:
            lab = str(s["k"]) if s["k"] else "all"
            if not s["available"]:
                lines.append(f"| {lab} | " + " | ".join("n/a" for _ in range(2 * len(names) - 1)) + " |")
                continue
            sc = s["summary"]["scorers"]
            cells = [f"{sc[n]['auroc']:.3f} [{sc[n]['auroc_ci'][0]:.3f}, {sc[n]['auroc_ci'][1]:.3f}]" for n in names]
            for n in names:
                if n == "foundation":
                    continue
                d = s["summary"]["differences"][n]
                cells.append(f"{d['auroc']:+.3f} [{d['auroc_ci'][0]:+.3f}, {d['auroc_ci'][1]:+.3f}]")
            lines.append(f"| {lab} | " + " | ".join(cells) + " |")
        lines += ["", f"![{res['task']}]({res['task']}.svg)", ""]
    lines.append("## Targets")
    for head, v in verdict.items():
        lines += ["", f"### {head}", ""]
        for k, w in sorted(v["few_labels"].items()):
            lines.append(f"- k = {k}: beats both from-scratch and summary GBM (paired CI above 0) on "
                         f"{w['wins']} of {w['tasks']} tasks")
        lines.append(f"- **k ≤ 32, a majority of tasks at every k: {'met' if v['few_labels_met'] else 'MISSED'}**")
        for t, w in v["all_labels"].items():
            lines.append(f"- all labels, {t}: {w['foundation']:.3f}, best {w['best']:.3f}, gap {w['gap']:.3f}")
        lines.append(f"- **all labels, within 0.02 of the best on every task: "
                     f"{'met' if v['all_labels_met'] else 'MISSED'}**")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task", help=f"one of {', '.join(TASKS)} or 'all'")
    ap.add_argument("--model", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "1.0.0"))
    ap.add_argument("--gen", default="ward")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--shots", type=int, nargs="*", help="k values (0: all); default 1 2 4 ... 128 all")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scratch-steps", type=int, default=150)
    ap.add_argument("--finetune-steps", type=int, default=0,
                    help="also a light fine-tune of the pretrained encoder with a logistic head (0: not run)")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    tasks = list(TASKS) if a.task == "all" else [a.task]
    for t in tasks:
        if t not in TASKS:
            ap.error(f"unknown task {t!r}")
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 16)))
    vocab = tokenizer.Vocab.load(os.path.join(a.model, "vocab.json"))
    module = torch.jit.load(os.path.join(a.model, "model.pt"))
    module.eval()
    with open(os.path.join(a.model, "foundation.toml"), "rb") as f:
        import tomllib
        manifest = tomllib.load(f)
    spec = tokenizer.load_spec()
    started = time.time()
    patients = generators.load(a.gen, n=a.n, seed=a.seed)
    S = Samples(vocab, module, patients, spec)
    print(f"{len(S.pid)} samples from {len(patients)} patients in {time.time() - started:.0f} s", file=sys.stderr)
    shots = a.shots if a.shots else SHOTS
    all_res = []
    for t in tasks:
        t0 = time.time()
        res = run_task(t, S, len(vocab.tokens), shots, a.repeats, a.scratch_steps, a.seed, a.bootstrap,
                       a.finetune_steps)
        all_res.append(res)
        for s in res["shots"]:
            if s["available"]:
                sc = s["summary"]["scorers"]
                print(f"{t:<18} k={s['k'] or 'all':>4} " + "  ".join(f"{n} {v['auroc']:.3f}" for n, v in sc.items()),
                      file=sys.stderr)
        print(f"{t}: {time.time() - t0:.0f} s", file=sys.stderr)
    verdict = verdicts(all_res)
    meta = {"model": f"foundation {manifest['version']}", "training_data": manifest["training_data"], "gen": a.gen,
            "n": a.n, "seed": a.seed, "bootstrap": a.bootstrap, "repeats": a.repeats}
    out = a.out or os.path.join(a.model, "adaptation")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "adaptation.json"), "w") as f:
        json.dump({"meta": meta, "results": all_res, "targets": verdict}, f, indent=1, default=float)
    md = markdown(all_res, verdict, meta)
    with open(os.path.join(out, "adaptation.md"), "w") as f:
        f.write(md)
    for res in all_res:
        with open(os.path.join(out, f"{res['task']}.svg"), "w") as f:
            f.write(svg_curve(res))
    print(md)
    return 0


if __name__ == "__main__":
    random.seed(0)
    sys.exit(main())
