"""A task head on the foundation model, exported as an ordinary bedside model (shadow first).

    python -m models.foundation.head deterioration --model models/foundation/1.0.0 --gen ward \\
        --version 5.0.0 --out models/deterioration/5.0.0

The head is the linear probe of ``adapt.py`` (L2 logistic on the frozen embedding) fitted with every
label of the target generator's train/valid patients, on inputs read from **Observations only**
(what a CDS service gathers: vital signs and labs). It is written beside the task's other versions
with a ``manifest.toml`` (``status = "shadow"``, ``[input] kind = "tokens"``), a TorchScript
``model.pt`` and a ``MODEL_CARD.md``, so the gateway loads, scores, explains, records and governs it
like any other version, and services score it in shadow beside their active version.

Input contract (``src/features/tokens.rs`` builds it): per sample a float32 ``[context, 2]`` tensor,
one row per token: the token id (an exact integer in float32) and the hours since the first kept
timed token, right-padded with zeros. The module's ``forward`` returns the probability ``[B, 1]``; its
``attribute`` returns per-token contributions to the logit in column 0 (integrated gradients, 8
steps in one batched backward pass, from the record with every reading replaced by its concept's
commonest token: a usual reading scores ~0, an unusual one its share of the shift), column 1 zero.

Synthetic data only: the foundation model was pretrained on one synthetic generator and the head
fitted on another; the model card says what that does and does not show.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import json
import os
import sys
import time
import tomllib

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models import comparators, evaluation, generators  # noqa: E402
from models.foundation import adapt, tokenizer  # noqa: E402
from models.foundation.model import embedding, time_features  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)
MEANING = {
    "deterioration": "probability of unplanned ICU transfer or in-hospital death within 12 hours",
    "sepsis": "probability of sepsis onset (Sepsis-3 as charted) within 12 hours",
    "aki": "probability of acute kidney injury (KDIGO) within 48 hours",
}


class HeadModule(nn.Module):
    """``forward(x [B, T, 2] float32) -> [B, 1]`` probability; ``attribute(x) -> [B, T, 2]``."""

    def __init__(self, encoder, weight: torch.Tensor, bias: float, baseline_ids: torch.Tensor):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("weight", weight.to(torch.float32))
        self.register_buffer("bias", torch.tensor([bias], dtype=torch.float32))
        self.register_buffer("baseline", baseline_ids.to(torch.long))
        self.vocab_size = int(baseline_ids.numel())
        self.steps = 8  # integrated-gradient steps in ``attribute``

    def _tokens(self, x: torch.Tensor):
        """Ids and hours, cut after the longest record of the batch: the model is causal and the
        padding is on the right, so the cut changes nothing but the cost."""
        if x.dim() != 3 or x.size(2) != 2:
            raise ValueError("input must be float32 [B, context, 2]: token id, hours")
        ids = x.select(2, 0).round().to(torch.long)
        if bool((ids < 0).any()) or bool((ids >= self.vocab_size).any()):
            raise ValueError("token id outside the vocabulary")
        used = max(int((ids != 0).sum(1).max()), 1)
        return ids.narrow(1, 0, used), x.select(2, 1).narrow(1, 0, used)

    def _logit(self, states: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return embedding(states, (ids != 0).sum(1)) @ self.weight + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, hours = self._tokens(x)
        return torch.sigmoid(self._logit(self.encoder.states(ids, hours), ids)).unsqueeze(1)

    @torch.jit.export
    def attribute(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token contributions to the logit, column 0 of ``[B, T, 2]``: integrated gradients from
        "every reading its concept's commonest token" to the record (``steps`` midpoints, one batched
        backward pass). They add up to the logit minus the logit of that all-usual record, and a
        usual reading gets ~0."""
        ids, hours = self._tokens(x)
        b, t = ids.shape
        k = self.steps
        tok = self.encoder.tok(ids).detach()
        usual = self.encoder.tok(self.baseline.index_select(0, ids.reshape(-1)).view(ids.shape)).detach()
        times = self.encoder.time(time_features(hours)).detach()
        alphas = (torch.arange(k, dtype=x.dtype, device=x.device) + 0.5) / k
        # [k, B, T, d] -> [k·B, T, d]: each step's interpolated inputs for every sample.
        path = usual.unsqueeze(0) + alphas.view(k, 1, 1, 1) * (tok - usual).unsqueeze(0) + times.unsqueeze(0)
        lengths = (ids != 0).sum(1).repeat(k)
        # Grad on for this pass only (TorchScript has no `with torch.enable_grad()`); the caller's
        # mode (the gateway's no_grad) is restored before returning.
        was = torch.is_grad_enabled()
        torch.ops.aten.set_grad_enabled(True)
        inp = path.reshape(k * b, t, -1).detach().requires_grad_(True)
        logit = embedding(self.encoder.encode(inp), lengths) @ self.weight + self.bias
        grads = torch.autograd.grad([logit.sum()], [inp])
        torch.ops.aten.set_grad_enabled(was)
        g = grads[0]
        assert g is not None
        mean_grad = g.detach().view(k, b, t, -1).mean(0)
        contrib = (mean_grad * (tok - usual)).sum(2) * (ids != 0).to(x.dtype)
        cells = torch.zeros(x.size(0), x.size(1), 2, dtype=x.dtype, device=x.device)
        cells[:, :t, 0] = contrib
        return cells


def as_rows(ids: list[int], hours: list[float], context: int) -> np.ndarray:
    """One sample in the model's input layout: ``[context, 2]`` (id, hours), right-padded."""
    x = np.zeros((context, 2), dtype=np.float32)
    x[:len(ids), 0] = ids
    x[:len(hours), 1] = hours
    return x


def baseline_ids(vocab: tokenizer.Vocab, token_lists) -> torch.Tensor:
    """Per token id, the id it is compared with in ``attribute``: for a reading of a concept, that
    concept's commonest token in ``token_lists`` (the head's training inputs); any other token, itself
    (no credit: only readings are explained)."""
    concept_of = {}
    for c in vocab.data["concepts"]:
        for i, tok in enumerate(vocab.tokens):
            if tok.startswith(c["name"] + "#") or tok.startswith(c["name"] + "="):
                concept_of[i] = c["name"]
    counts = collections.Counter(t for ids in token_lists for t in ids if t in concept_of)
    commonest = {}
    for tok, _n in counts.most_common():
        commonest.setdefault(concept_of[tok], tok)
    return torch.tensor([commonest.get(concept_of.get(i), i) for i in range(len(vocab.tokens))], dtype=torch.long)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def score(module, S, idx, context, batch=256) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(idx), batch):
            x = np.stack([as_rows(S.ids[j], S.hours[j], context) for j in idx[i:i + batch]])
            out.append(module(torch.from_numpy(x)).squeeze(1).numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def evaluate(S, task, idx, scores: dict, bootstrap: int, seed: int) -> dict:
    y = S.labels[task][idx]
    boot = evaluation.cluster_bootstrap(y, scores, S.pid[idx], n=bootstrap, seed=seed)
    summary = evaluation.summarize_bootstrap(boot, "head")
    p = scores["head"]
    return {"samples": int(len(idx)), "positives": int(y.sum()), "patients": int(len(set(S.pid[idx].tolist()))),
            "summary": summary, "calibration": evaluation.calibration_slope_intercept(y, p),
            "observed_expected": evaluation.observed_expected(y, p)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task", choices=sorted(MEANING))
    ap.add_argument("--model", default=os.path.join(HERE, "1.0.0"), help="the foundation model's folder")
    ap.add_argument("--gen", default="ward", help="generator whose labels the head is fitted on")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--other-gen", default="cohort", help="a second generator to report on ('' for none)")
    ap.add_argument("--other-n", type=int, default=400)
    ap.add_argument("--version", required=True)
    ap.add_argument("--status", default="shadow", choices=["shadow", "active"])
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--out", help="default: models/<task>/<version>")
    a = ap.parse_args(argv)
    out = a.out or os.path.join(MODELS, a.task, a.version)
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 16)))
    started = time.time()
    with open(os.path.join(a.model, "foundation.toml"), "rb") as f:
        fm = tomllib.load(f)
    vocab = tokenizer.Vocab.load(os.path.join(a.model, "vocab.json"))
    fm_module = torch.jit.load(os.path.join(a.model, "model.pt"))
    fm_module.eval()
    spec = tokenizer.load_spec()
    S = adapt.Samples(vocab, fm_module, generators.load(a.gen, n=a.n, seed=a.seed), spec, observations_only=True)
    v = S.valid[a.task]
    pool = np.flatnonzero(v & np.isin(S.split, ["train", "valid"]))
    test = np.flatnonzero(v & (S.split == "test"))
    y = S.labels[a.task][pool].astype(np.float64)
    probe = comparators.fit_logistic(S.emb[pool], y, l2=adapt.PROBE_L2)
    # The probe works on standardised embeddings; fold that into one weight vector and bias.
    w = probe["beta"][1:] / probe["std"]
    b = float(probe["beta"][0] - np.sum(probe["beta"][1:] * probe["mean"] / probe["std"]))
    encoder = adapt.pretrained_encoder(fm_module)
    encoder.eval()
    head = HeadModule(encoder, torch.tensor(w), b, baseline_ids(vocab, [S.ids[j] for j in pool]))
    head.eval()
    scripted = torch.jit.script(head)
    context = vocab.context

    # The exported module must give the probe's probabilities.
    check = test[:64]
    want = comparators.predict_logistic(probe, S.emb[check])
    got = score(scripted, S, check, context)
    if not np.allclose(want, got, atol=1e-4):
        raise SystemExit(f"exported head disagrees with the probe: max |diff| {np.abs(want - got).max():.2e}")

    # The comparators: summary GBM and logistic fitted on the same patients' summary features.
    Xtr = adapt.impute(S.X[pool], S.X[pool])
    gbm = comparators.fit_stumps(Xtr, y, rounds=100, learning_rate=0.1)
    lr = comparators.fit_logistic(Xtr, y, l2=adapt.PROBE_L2)

    def scores_on(T, idx):
        X = adapt.impute(S.X[pool], T.X[idx])
        return {"head": score(scripted, T, idx, context), "summary_gbm": comparators.predict_stumps(gbm, X),
                "summary_logistic": comparators.predict_logistic(lr, X)}

    results = {a.gen: evaluate(S, a.task, test, scores_on(S, test), a.bootstrap, a.seed)}
    if a.other_gen:
        O = adapt.Samples(vocab, fm_module, generators.load(a.other_gen, n=a.other_n, seed=a.seed + 1), spec,
                          observations_only=True)
        oi = np.flatnonzero(O.valid[a.task])
        results[a.other_gen] = evaluate(O, a.task, oi, scores_on(O, oi), a.bootstrap, a.seed)
    os.makedirs(out, exist_ok=True)
    pt = os.path.join(out, "model.pt")
    scripted.save(pt)

    def rel(path):
        return os.path.relpath(path, out)
    meta = {"task": a.task, "version": a.version, "foundation": fm["version"], "gen": a.gen, "n": a.n,
            "seed": a.seed, "pool_patients": int(len(set(S.pid[pool].tolist()))), "pool_samples": int(len(pool)),
            "pool_positives": int(y.sum()), "results": results, "seconds": round(time.time() - started, 1),
            "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    with open(os.path.join(out, "evaluation.json"), "w") as f:
        json.dump(meta, f, indent=1, default=float)
    own = results[a.gen]["summary"]["scorers"]["head"]
    manifest = f'''# Model manifest read by the bedside gateway. Generated by models/foundation/head.py -- do not edit by hand.
name = "{a.task}"
version = "{a.version}"
status = "{a.status}"
file = "model.pt"
sha256 = "{sha256(pt)}"
features = "{rel(os.path.join(HERE, 'features.toml'))}"
description = "Foundation-model head: a linear probe on the foundation {fm['version']} patient embedding of the Observations (vital signs and labs) up to the prediction time; {MEANING[a.task]}. Demonstration model trained on synthetic data only; NOT for clinical use."
training_data = "synthetic only: encoder pretrained on {fm['training_data'].removeprefix('synthetic only: ')}; head fitted on {meta['pool_patients']} patients of the '{a.gen}' generator (seed {a.seed}); no real patient data"
arch = "foundation-probe"
explanation = "attribute"
base_model = "foundation {fm['version']}"

[input]
kind = "tokens"
shape = [{context}, 2]   # per sample: tokens, (token id, hours since the first kept token)
dtype = "float32"
mean = []
std = []
vocab = "{rel(os.path.join(a.model, 'vocab.json'))}"
vocab_sha256 = "{fm['vocab_sha256']}"

[output]
shape = [1]
meaning = "{MEANING[a.task]}"
horizon_hours = {adapt.TASKS[a.task]['horizon']}
calibration = "L2 logistic regression (l2 = {adapt.PROBE_L2:g}) on the embedding, fitted on samples every {adapt.EVERY_HOURS:g} h of the training patients"

[validity]
min_measurements = 4
required = []
max_staleness_hours = 12

[metrics]
auroc_{a.gen} = {own['auroc']:.4f}
'''
    for g, r in results.items():
        if g != a.gen:
            manifest += f"auroc_{g} = {r['summary']['scorers']['head']['auroc']:.4f}\n"
    with open(os.path.join(out, "manifest.toml"), "w") as f:
        f.write(manifest)
    with open(os.path.join(out, "MODEL_CARD.md"), "w") as f:
        f.write(model_card(meta, fm))
    print(json.dumps({g: {n: round(s["auroc"], 3) for n, s in r["summary"]["scorers"].items()}
                      for g, r in results.items()}), file=sys.stderr)
    print(f"wrote {out} in {meta['seconds']:.0f} s", file=sys.stderr)
    return 0


def model_card(meta: dict, fm: dict) -> str:
    t = meta["task"]
    lines = [f"# {t} {meta['version']} — foundation-model head (shadow)", "",
             "**Synthetic data only. Not for clinical use.** A demonstration of the foundation model's "
             "pipeline: a task head served by the gateway like any other model version, in shadow first.", "",
             "## What it is", "",
             f"- A linear probe (L2 logistic) on the 128-number patient embedding of foundation {fm['version']} "
             "(`models/foundation/`), a 2-layer causal transformer over coded events.",
             "- **Inputs: Observations only** (vital signs and labs, every code, unit and answer variant of "
             "`models/terminology.toml`), read up to the prediction time, the newest "
             f"{fm['context']} tokens. Conditions, medications and encounters are not read: a CDS service "
             "gathers Observations.",
             f"- Output: {MEANING[t]}.",
             "- Explanation: integrated gradients (8 steps, one batched backward pass) from the record "
             "with every reading replaced by its concept's commonest token; the credits add up to the "
             "logit's shift from that all-usual record, and a usual reading gets ~0. The gateway maps "
             "each token back to the Observation it was read from, as for the other models.",
             f"- Fitted on {meta['pool_patients']} patients ({meta['pool_samples']} samples every "
             f"{adapt.EVERY_HOURS:g} h, {meta['pool_positives']} positive) of the '{meta['gen']}' generator; "
             f"the encoder was pretrained on the other generator only ({fm['training_data']}).", "",
             "## Measured (patient-clustered 95 % CIs; paired CIs for the head minus each comparator)", "",
             "Comparators: boosted stumps and logistic regression on count and summary features of the "
             "same Observations (last 24 h), fitted on the same patients.", "",
             "| test set | samples (positive, patients) | head AUROC | summary GBM | summary logistic | head − GBM | head − logistic | calibration slope / intercept | O/E |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g, r in meta["results"].items():
        sc, d = r["summary"]["scorers"], r["summary"]["differences"]
        cell = lambda n: f"{sc[n]['auroc']:.3f} [{sc[n]['auroc_ci'][0]:.3f}, {sc[n]['auroc_ci'][1]:.3f}]"  # noqa: E731
        diff = lambda n: f"{d[n]['auroc']:+.3f} [{d[n]['auroc_ci'][0]:+.3f}, {d[n]['auroc_ci'][1]:+.3f}]"  # noqa: E731
        cal = r["calibration"] or {}
        oe = r["observed_expected"] or {}
        where = ("test split of the generator the head was fitted on" if g == meta["gen"]
                 else "the encoder's pretraining generator; the head never saw its labels")
        lines.append(f"| '{g}' ({where}) | {r['samples']} ({r['positives']}, {r['patients']}) | {cell('head')} | "
                     f"{cell('summary_gbm')} | {cell('summary_logistic')} | {diff('summary_gbm')} | "
                     f"{diff('summary_logistic')} | {cal.get('slope', float('nan')):.2f} / "
                     f"{cal.get('intercept', float('nan')):.2f} | {oe.get('o_e') or float('nan'):.2f} |")
    lines += ["", "## What this does and does not show", "",
              "- It shows that a head adapted from the foundation model is loaded, checked (sha256 of the "
              "model and of the vocabulary), scored, explained and recorded by the gateway like any other "
              "version, and that services score it in shadow beside their active version: the shadow "
              "prediction records are what a site reviews before promoting anything.",
              "- It does not show clinical value: both generators are synthetic. Where the head trails the "
              "summary models above, it trails them; it stays in shadow. The active model of this task is "
              "the one its services show.",
              "- Recalibrate or refit from a site's own shadow records before any use "
              "(`python -m models.recalibrate`, models/README.md).", "",
              "## Reproduce", "",
              f"    python -m models.foundation.head {t} --model models/foundation/{fm['version']} --gen {meta['gen']} "
              f"--n {meta['n']} --seed {meta['seed']} --version {meta['version']}", "",
              f"Took {meta['seconds']:.0f} s on this machine ({meta['created']})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
