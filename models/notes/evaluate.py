"""Do nursing notes add anything? Structured summaries with and without the note encoder's embedding.

Why: issue 19 asks for notes "where it earns its keep ... tested for whether it adds anything; say so if it
does not". For each task (deterioration, sepsis) and each direction (train on one generator, test on every
patient of the other; and, for reference, in-distribution on the training generator's test split), on the
tasks' own requests (every 2 h from admission + 1 h, label = onset within the horizon), it fits the same
L2 logistic regression (models/comparators.py) on:

| name | inputs |
|---|---|
| `structured` | the task's window summaries (last, min, max, mean, 6-h change, hours since; comparators.summary_features) |
| `structured+encoder` | + the note's own risk score: an L2 logistic on the latest note's MiniLM embedding (charted at or before t, at most 24 h old; 384 floats + "has a note"), cross-fitted by patient on the training requests |
| `structured+words` | + the same from the note's words (the 300 commonest words of training notes, present / absent): a text model without a pretrained encoder |
| `structured+encoder_pca` | + the embedding's 16 principal components (fitted on training notes) + "has a note" |
| `encoder_only`, `words_only` | the note's risk score alone |

and reports AUROC with patient-clustered bootstrap CIs and the paired difference of each model against
`structured` (the question is "does adding the note help?"). Notes come from `models/notes/writer.py`; the
two generators chart in different house styles, so the cross-generator rows test whether a text model
trained on one hospital's words reads another's.

A **positive control** shows that the evaluation can see a gain when there is one: `--nurse-lead-hours 6
--perception-sd 0.1` makes the writer's nurse perceive the sickness of 6 h later, almost without noise
(information the chart does not hold yet); the notes must then add to the structured model.

    python -m models.notes.evaluate [--n 800] [--seed 11] [--out models/notes/results] [--small]
        [--nurse-lead-hours H --perception-sd SD]
    python -m models.notes.evaluate --bundles DIR --out OUT   # a site's own records, in-distribution only
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from models import comparators, dataset, evaluation, featurize, generators
from models.fhir_time import parse_instant
from models.labels import derive_onsets, explain_onsets
from models.notes import encoder as note_encoder
from models.notes.reader import notes_of_bundle

HOUR = 3600.0
MAX_NOTE_AGE_H = 24.0
COMPONENTS = 16
WORDS = 300
TASKS = ("deterioration", "sepsis")
GENS = ("cohort", "ward")
MODELS = ("structured", "structured+encoder", "structured+words", "structured+encoder_pca", "encoder_only",
          "words_only")
FOLDS = 5
NOTE_L2 = 10.0
NEGATIVES_KEPT = 8000  # the note models are fitted on every positive and at most this many negatives


def load(gen: str, n: int, seed: int, cfgs: dict, writer_options: dict) -> dict:
    """Patients of one generator with notes: per task a dataset.Patients, and per patient its notes."""
    return _featurise(generators.load(gen, n, seed, notes=writer_options or True), cfgs, gen, 0)


def _featurise(records: list, cfgs: dict, name: str, skipped: int) -> dict:
    notes = [notes_of_bundle(r["bundle"]) for r in records]
    bspec = dataset.bedside_spec()
    per_task = {}
    for task, cfg in cfgs.items():
        meas = [featurize.extract(cfg["spec"], r["bundle"])[0] for r in records]
        bed = [featurize.extract(bspec, r["bundle"])[0] for r in records]
        per_task[task] = dataset.Patients(records, meas, bed, name, None, len(records), 0)
    for r in records:
        r["bundle"] = None
    return {"name": name, "records": records, "notes": notes, "patients": per_task, "skipped": skipped}


def _split(pid: str) -> str:
    h = int(hashlib.sha256(pid.encode()).hexdigest()[:8], 16) % 100
    return "train" if h < 70 else "valid" if h < 80 else "test"


def _last_instant(bundle: dict):
    """The newest instant a resource of the Bundle carries (for a stay whose Encounter is still open)."""
    best = None
    for e in bundle.get("entry") or []:
        r = e.get("resource") or {}
        for key in ("effectiveDateTime", "issued", "date", "authoredOn"):
            t = parse_instant(r.get(key)) if isinstance(r.get(key), str) else None
            if t is not None and (best is None or t > best):
                best = t
    return best


def load_site(folder: Path, cfgs: dict) -> dict:
    """A site's own records: one FHIR R4 Bundle per patient (`*.json` in `folder`), labelled by
    `models.labels` (the rules every generator follows), split train/valid/test by a hash of the patient
    id (70/10/20). The stay is the Encounters' span (an open one ends at the newest instant recorded);
    a Bundle without an Encounter start is skipped and counted."""
    records, skipped = [], 0
    for path in sorted(folder.glob("*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        lo, hi = explain_onsets(bundle)["stay"]
        hi = hi or _last_instant(bundle)
        if lo is None or hi is None or hi <= lo:
            skipped += 1
            continue
        pid = next((e["resource"]["id"] for e in bundle.get("entry") or []
                    if (e.get("resource") or {}).get("resourceType") == "Patient" and e["resource"].get("id")),
                   path.stem)
        records.append({"id": pid, "bundle": bundle, "admit": lo, "discharge": hi,
                        "onsets": derive_onsets(bundle), "split": _split(pid)})
    if not records:
        raise SystemExit(f"no usable Bundle in {folder} ({skipped} without a stay)")
    return _featurise(records, cfgs, "site", skipped)


def words_of(text: str) -> list[str]:
    """The note's words, through the encoder's own normalisation and split (letters only)."""
    return [w for w in note_encoder.pre_tokenise(note_encoder.normalise(text)) if w.isalpha()]


def latest_note(notes: list[tuple[float, str]], t: float) -> str | None:
    """The newest note charted at or before t and at most MAX_NOTE_AGE_H old."""
    best = None
    for when, text in notes:
        if when > t:
            break
        best = (when, text)
    if best is None or t - best[0] > MAX_NOTE_AGE_H * HOUR:
        return None
    return best[1]


class Pca:
    """Principal components of training rows (centred, not scaled)."""

    def __init__(self, rows: np.ndarray, k: int):
        self.mean = rows.mean(axis=0)
        _, _, vt = np.linalg.svd(rows - self.mean, full_matrices=False)
        self.vt = vt[:k]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return (rows - self.mean) @ self.vt.T


def note_features(texts: list[str | None], embed: dict, pca_e: Pca):
    """Per sample: the encoder's principal components and a has-note flag (zeros without a note)."""
    n = len(texts)
    e = np.zeros((n, COMPONENTS))
    has = np.zeros((n, 1))
    for i, t in enumerate(texts):
        if t is not None:
            has[i] = 1.0
            e[i] = pca_e(embed[t][None, :])[0]
    return e, has


def bag(text: str, vocab: dict) -> np.ndarray:
    v = np.zeros(len(vocab))
    for w in words_of(text):
        j = vocab.get(w)
        if j is not None:
            v[j] = 1.0
    return v


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(q / (1 - q))


def _fit_note_model(f: np.ndarray, y: np.ndarray, seed: int) -> dict:
    """L2 logistic on one note representation; negatives subsampled (ranking is what is kept)."""
    rng = np.random.default_rng(seed)
    neg = np.flatnonzero(y == 0)
    keep = np.sort(np.concatenate([np.flatnonzero(y == 1),
                                   rng.choice(neg, min(len(neg), NEGATIVES_KEPT), replace=False)]))
    return comparators.fit_logistic(f[keep], y[keep], l2=NOTE_L2)


def note_score(f_tr: np.ndarray, y_tr: np.ndarray, patient_tr: np.ndarray, f_te: np.ndarray):
    """A note's own risk score (logit), cross-fitted on the training requests by patient (each training
    request is scored by a model that did not see its patient, so the second stage does not trust an
    overfitted score), and on the test requests by a model fitted on all training requests."""
    fold = np.asarray(patient_tr) % FOLDS
    oof = np.zeros(len(y_tr))
    for k in range(FOLDS):
        m = _fit_note_model(f_tr[fold != k], y_tr[fold != k], k)
        oof[fold == k] = _logit(comparators.predict_logistic(m, f_tr[fold == k]))
    full = _fit_note_model(f_tr, y_tr, FOLDS)
    return oof, _logit(comparators.predict_logistic(full, f_te))


def direction(task: str, cfg: dict, train: dict, test: dict, same: bool, embed: dict, n_boot: int) -> dict:
    ptr, pte = train["patients"][task], test["patients"][task]
    mean, std = dataset.normalisation(cfg, ptr, "train")
    s_tr = dataset.samples(cfg, ptr, "train", mean, std)
    s_te = dataset.samples(cfg, pte, "test" if same else None, mean, std)
    x_tr = comparators.summary_features(s_tr.x, cfg["spec"])
    x_te = comparators.summary_features(s_te.x, cfg["spec"])
    t_tr = [latest_note(train["notes"][p], t) for p, t in zip(s_tr.patient, s_tr.t)]
    t_te = [latest_note(test["notes"][p], t) for p, t in zip(s_te.patient, s_te.t)]
    train_texts = sorted({t for t in t_tr if t is not None})
    df = {}
    for t in train_texts:
        for w in set(words_of(t)):
            df[w] = df.get(w, 0) + 1
    vocab = {w: j for j, (w, _) in enumerate(sorted(df.items(), key=lambda kv: (-kv[1], kv[0]))[:WORDS])}
    pca_e = Pca(np.stack([embed[t] for t in train_texts]), COMPONENTS)
    e_tr, h_tr = note_features(t_tr, embed, pca_e)
    e_te, h_te = note_features(t_te, embed, pca_e)
    full = {}
    for kind in ("encoder", "words"):
        rep = (lambda t: embed[t]) if kind == "encoder" else (lambda t: bag(t, vocab))
        dim = note_encoder.DIM if kind == "encoder" else len(vocab)

        def rows(texts):
            out = np.zeros((len(texts), dim + 1))
            for i, t in enumerate(texts):
                if t is not None:
                    out[i, :dim], out[i, dim] = rep(t), 1.0
            return out
        full[kind] = note_score(rows(t_tr), s_tr.y, s_tr.patient, rows(t_te))
    inputs = {
        "structured": (x_tr, x_te),
        "structured+encoder": (np.hstack([x_tr, full["encoder"][0][:, None]]),
                               np.hstack([x_te, full["encoder"][1][:, None]])),
        "structured+words": (np.hstack([x_tr, full["words"][0][:, None]]),
                             np.hstack([x_te, full["words"][1][:, None]])),
        "structured+encoder_pca": (np.hstack([x_tr, e_tr, h_tr]), np.hstack([x_te, e_te, h_te])),
    }
    scores = {}
    for name, (a, b) in inputs.items():
        scores[name] = comparators.predict_logistic(comparators.fit_logistic(a, s_tr.y, l2=1.0), b)
    scores["encoder_only"] = full["encoder"][1]
    scores["words_only"] = full["words"][1]
    boot = evaluation.cluster_bootstrap(s_te.y, scores, s_te.patient, n=n_boot, seed=0)
    summ = evaluation.summarize_bootstrap(boot, "structured")
    rows = {}
    for name in MODELS:
        sc = summ["scorers"][name]
        row = {"auroc": sc["auroc"], "auroc_ci": sc["auroc_ci"]}
        if name != "structured":
            d = boot["point"][name]["auroc"] - boot["point"]["structured"]["auroc"]
            reps = boot["reps"][name]["auroc"] - boot["reps"]["structured"]["auroc"]
            row["gain_vs_structured"] = float(d)
            row["gain_ci"] = evaluation._pct_ci(reps)
        rows[name] = row
    return {"task": task, "train": train["name"], "test": test["name"], "in_distribution": same,
            "requests": int(len(s_te.y)), "positives": int(s_te.y.sum()), "patients": int(len(set(s_te.patient))),
            "requests_with_note": float(h_te.mean()), "train_requests": int(len(s_tr.y)), "models": rows}


def table(results: list[dict]) -> str:
    head = ("| task | train → test | requests (pos) | with a note | structured | + encoder: AUROC, gain (95 % CI) | "
            "+ words: AUROC, gain (95 % CI) | + encoder PCA: AUROC, gain (95 % CI) | encoder only | words only |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in results:
        m = r["models"]

        def gain(k):
            g = m[k]
            return f"{g['auroc']:.3f}, {g['gain_vs_structured']:+.3f} ({g['gain_ci'][0]:+.3f} to {g['gain_ci'][1]:+.3f})"
        where = f"{r['train']} → {r['test']}" + (" (test split)" if r["in_distribution"] else "")
        lines.append(f"| {r['task']} | {where} | {r['requests']} ({r['positives']}) | {r['requests_with_note']:.0%} | "
                     f"{m['structured']['auroc']:.3f} | {gain('structured+encoder')} | {gain('structured+words')} | "
                     f"{gain('structured+encoder_pca')} | {m['encoder_only']['auroc']:.3f} | "
                     f"{m['words_only']['auroc']:.3f} |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="patients per generator (default 800; --small 120)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--out", type=Path, default=None, help="write results.json and RESULTS.md here")
    ap.add_argument("--small", action="store_true", help="n 120, 30 resamples, deterioration only (the test)")
    ap.add_argument("--nurse-lead-hours", type=float, default=0.0, help="positive control: the nurse sees ahead")
    ap.add_argument("--perception-sd", type=float, default=None, help="the nurse's perception noise")
    ap.add_argument("--bundles", type=Path, default=None,
                    help="a site's own records (one Bundle per patient, *.json): train and test on them")
    a = ap.parse_args(argv)
    if a.small:
        a.boot, a.tasks = 30, "deterioration"
    a.n = a.n or (120 if a.small else 800)
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    started = time.time()
    tasks = [t for t in a.tasks.split(",") if t]
    cfgs = {t: dataset.load_config(t) for t in tasks}
    opts = {}
    if a.nurse_lead_hours:
        opts["lead_hours"] = a.nurse_lead_hours
    if a.perception_sd is not None:
        opts["perception_sd"] = a.perception_sd
    data = {}
    if a.bundles:
        data["site"] = load_site(a.bundles, cfgs)
        pairs = [("site", "site")]
    else:
        for g in GENS:
            data[g] = load(g, a.n, a.seed, cfgs, opts)
        pairs = [(tr, te) for tr in GENS for te in GENS]
    enc = note_encoder.NoteEncoder()
    texts = sorted({text for d in data.values() for ns in d["notes"] for _, text in ns})
    t0 = time.time()
    vecs = enc.encode(texts)
    embed = dict(zip(texts, vecs))
    enc_s = time.time() - t0
    results = []
    for task in tasks:
        for tr, te in pairs:
            results.append(direction(task, cfgs[task], data[tr], data[te], tr == te, embed, a.boot))
    out = {"source": str(a.bundles) if a.bundles else "generators",
           "patients": {k: len(d["records"]) for k, d in data.items()},
           "skipped_without_stay": {k: d["skipped"] for k, d in data.items()},
           "n_per_generator": a.n, "seed": a.seed, "resamples": a.boot, "writer_options": opts,
           "notes_encoded": len(texts),
           "encode_seconds": round(enc_s, 1), "ms_per_note": round(1000 * enc_s / max(len(texts), 1), 2),
           "seconds": round(time.time() - started, 1), "results": results}
    md = table(results)
    print(md)
    print(f"{len(texts)} distinct notes encoded in {enc_s:.1f} s ({out['ms_per_note']} ms each, batched, "
          f"{torch.get_num_threads()} thread(s)); total {out['seconds']} s")
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(json.dumps(out, indent=1, default=float) + "\n")
        (a.out / "RESULTS.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
