"""Pretrains the patient-timeline encoder on a MEDS corpus and exports it for the gateway.

    python -m models.foundation.pretrain --generator cohort --n 2000 --minutes 20 \\
        --out models/foundation/1.0.0
    python -m models.foundation.pretrain --corpus /path/to/meds --minutes 30 --out ...   # a site's export

Objectives, on random windows of each training subject's timeline (up to ``context`` tokens, cut at a
random event): next-token cross-entropy, plus (weight ``--tte-weight``) a piecewise-exponential
time-to-event loss from every token (pieces 0-6-12-24-48-96 h-open) for each clinical outcome
(censored at the end of the record; tokens after the onset do not count) and, as MOTOR pretrains on
many codes, with ``--code-targets`` for the next occurrence of each of a set of codes (each concept's
lowest and highest decile, non-alert consciousness, an ICU location, each medication). The options
are recorded in ``foundation.toml``; 1.0.0 used the defaults. The ``tuning`` split is scored on fixed windows after each
quarter of the budget. Writes ``model.pt`` (TorchScript ``EmbeddingModule``), ``vocab.json`` and
``foundation.toml`` (what the gateway loads and checks) into ``--out``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models.dataset import Progress  # noqa: E402
from models.foundation import corpus, tokenizer  # noqa: E402
from models.foundation.model import EmbeddingModule, Encoder, tte_loss  # noqa: E402


class Timeline:
    """One subject: static ids, timed (microseconds, id) tokens, outcome onsets (seconds or None), end,
    and for each time-to-event code target the times it occurs (seconds, sorted)."""

    def __init__(self, vocab, rec, code_targets=()):
        outcomes = {e["code"][len(corpus.OUTCOME_PREFIX):]: e["time"] for e in rec["events"]
                    if str(e["code"]).startswith(corpus.OUTCOME_PREFIX)}
        self.end = end_of(rec)
        self.statics, self.seq, _, _ = tokenizer.sequence(vocab, inputs_of(rec), self.end)
        self.onsets = [outcomes.get(t) for t in corpus.TASKS]
        times = np.array([t / 1e6 for t, _ in self.seq], dtype=np.float64)
        ids = np.array([i for _, i in self.seq], dtype=np.int64)
        self.occurrences = [np.sort(times[ids == c]) for c in code_targets]
        self.subject_id = rec["subject_id"]


def code_targets(vocab) -> list[int]:
    """Token ids pretrained as recurrent time-to-event targets besides the outcomes (as MOTOR pretrains
    on many codes): each numeric concept's lowest and highest bin, every non-alert consciousness answer,
    an ICU location and every medication code."""
    out = []
    for c in vocab.data["concepts"]:
        if "edges" in c and c["edges"]:
            out += [vocab.index[f"{c['name']}#0"], vocab.index[f"{c['name']}#{len(c['edges'])}"]]
        elif "answers" in c:
            out += [vocab.index[f"{c['name']}={a}"] for a in c["answers"][1:]]
    out += [i for t, i in vocab.index.items() if t == "LOCATION/ICU" or t.startswith("RXNORM/")]
    return sorted(set(out))


def inputs_of(rec) -> list[dict]:
    """The record's events without its outcomes (never model input)."""
    return [e for e in rec["events"] if not str(e["code"]).startswith(corpus.OUTCOME_PREFIX)]


def end_of(rec) -> float:
    """The end of the record: its ``OUTCOME//END`` event, else its last dated input event."""
    ends = [e["time"] for e in rec["events"] if e["code"] == corpus.END]
    if ends:
        return ends[0]
    return max((e["time"] for e in inputs_of(rec) if e["time"] is not None), default=0.0)


def make_batch(timelines, cuts, context):
    """Padded ids/hours, next-token targets and TTE targets for (timeline, cut index) pairs."""
    rows = []
    for tl, cut in zip(timelines, cuts):
        ids, hours, kept = tokenizer.window(tl.statics, tl.seq, context, cut)
        t0 = kept[0][0] / 1e6 if kept else tl.end
        times = [t0] * len(tl.statics) + [t / 1e6 for t, _ in kept]
        rows.append((ids, hours, times, tl))
    T = max(len(r[0]) for r in rows)
    B, K = len(rows), len(corpus.TASKS) + len(rows[0][3].occurrences)
    ids = torch.zeros(B, T, dtype=torch.long)
    hours = torch.zeros(B, T)
    targets = torch.full((B, T), -100, dtype=torch.long)
    dur = torch.zeros(B, T, K)
    ev = torch.zeros(B, T, K)
    valid = torch.zeros(B, T, K)
    for b, (i, h, times, tl) in enumerate(rows):
        n = len(i)
        ids[b, :n] = torch.tensor(i)
        hours[b, :n] = torch.tensor(h)
        if n > 1:
            targets[b, : n - 1] = torch.tensor(i[1:])
        t = np.asarray(times, dtype=np.float64)
        for k, onset in enumerate(tl.onsets):
            if onset is None:
                dur[b, :n, k] = torch.from_numpy(((tl.end - t) / 3600.0).clip(min=0.0)).float()
                valid[b, :n, k] = 1.0
            else:
                before = t < onset
                dur[b, :n, k] = torch.from_numpy(((onset - t) / 3600.0).clip(min=0.0)).float()
                ev[b, :n, k] = torch.from_numpy(before.astype(np.float32))
                valid[b, :n, k] = torch.from_numpy(before.astype(np.float32))
        for j, occ in enumerate(tl.occurrences):  # recurrent: time to the next occurrence, else censored
            k = len(tl.onsets) + j
            nxt = np.searchsorted(occ, t, side="right")
            has = nxt < len(occ)
            when = np.where(has, occ[np.minimum(nxt, max(len(occ) - 1, 0))] if len(occ) else tl.end, tl.end)
            dur[b, :n, k] = torch.from_numpy(((when - t) / 3600.0).clip(min=0.0)).float()
            ev[b, :n, k] = torch.from_numpy(has.astype(np.float32))
            valid[b, :n, k] = 1.0
    return ids, hours, targets, dur, ev, valid


def losses(model, batch):
    ids, hours, targets, dur, ev, valid = batch
    states = model.states(ids, hours)
    logits = model.next_token(states)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                           ignore_index=-100)
    tte = tte_loss(model.log_hazards(states), dur, ev, valid)
    return ce, tte


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export(model: Encoder, vocab: dict, out: str, meta: dict) -> None:
    os.makedirs(out, exist_ok=True)
    model.eval()
    scripted = torch.jit.script(EmbeddingModule(model))
    pt = os.path.join(out, "model.pt")
    scripted.save(pt)
    with open(os.path.join(out, "vocab.json"), "w") as f:
        json.dump(vocab, f, indent=1)
    manifest = f'''# Foundation model manifest: read by the gateway (src/inference/foundation.rs) and by adapt.py.
name = "foundation"
version = "{meta['version']}"
file = "model.pt"
sha256 = "{sha256(pt)}"
vocab = "vocab.json"
vocab_sha256 = "{sha256(os.path.join(out, 'vocab.json'))}"
features = "../features.toml"
embedding_dim = {2 * model.d}
context = {vocab['context']}
description = "Patient-timeline encoder: a {len(model.blocks)}-layer causal transformer (d = {model.d}) over coded events, pretrained with next-event and time-to-event objectives; returns a patient embedding for task heads."
training_data = "{meta['training_data']}"

[pretraining]
subjects = {meta['subjects']}
tokens_seen = {meta['tokens_seen']}
steps = {meta['steps']}
minutes = {meta['minutes']:.1f}
tuning_next_token_ce = {meta['tuning_ce']:.4f}
tuning_tte_nll = {meta['tuning_tte']:.4f}
time_to_event_targets = {json.dumps(meta['tte_targets'])}
options = {json.dumps(meta['options'])}
parameters = {sum(p.numel() for p in model.parameters())}
created = "{meta['created']}"
'''
    with open(os.path.join(out, "foundation.toml"), "w") as f:
        f.write(manifest)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", help="a MEDS dataset folder (else one is generated)")
    ap.add_argument("--generator", default="cohort")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget for the optimiser")
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--tte-weight", type=float, default=1.0, help="weight of the time-to-event loss")
    ap.add_argument("--code-targets", action=argparse.BooleanOptionalAction, default=False,
                    help="pretrain time-to-event on codes too (extremes, ICU, medications), not only outcomes")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    random.seed(a.seed)
    torch.manual_seed(a.seed)
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 16)))

    if a.corpus:
        recs, source = corpus.read(a.corpus), f"MEDS corpus {os.path.basename(a.corpus.rstrip('/'))}"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            summary = corpus.write(corpus.records(a.generator, a.n, a.seed), tmp, f"bedside synthetic ({a.generator})")
            print(f"corpus: {json.dumps(summary)}", file=sys.stderr)
            recs = corpus.read(tmp)
        source = (f"synthetic only: {a.n} patients of the '{a.generator}' generator (seed {a.seed}), "
                  f"written as MEDS and read back")
    train = [r for r in recs if r["split"] == "train"]
    tuning = [r for r in recs if r["split"] == "tuning"]
    spec = tokenizer.load_spec()
    vocab_data = tokenizer.build_vocab(spec, [(inputs_of(r), end_of(r)) for r in train], a.context)
    vocab = tokenizer.Vocab(vocab_data)
    targets = code_targets(vocab) if a.code_targets else []
    tl_train = [t for t in (Timeline(vocab, r, targets) for r in train) if t.seq]
    tl_tune = [t for t in (Timeline(vocab, r, targets) for r in tuning) if t.seq]
    print(f"vocab {len(vocab.tokens)} tokens; train {len(tl_train)} subjects, tuning {len(tl_tune)}",
          file=sys.stderr)

    model = Encoder(len(vocab.tokens), d=a.d, layers=a.layers, heads=a.heads, ff=2 * a.d,
                    tasks=len(corpus.TASKS) + len(targets)).to(a.device)
    print(f"time-to-event targets: {len(corpus.TASKS)} outcomes + {len(targets)} codes", file=sys.stderr)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    rng = random.Random(a.seed)
    tune_cuts = [(t, rng.randint(1, len(t.seq))) for t in tl_tune]

    def evaluate():
        model.eval()
        ce_sum, tte_sum, n = 0.0, 0.0, 0
        with torch.no_grad():
            for i in range(0, len(tune_cuts), 64):
                chunk = tune_cuts[i:i + 64]
                batch = [x.to(a.device) for x in make_batch([c[0] for c in chunk], [c[1] for c in chunk], a.context)]
                ce, tte = losses(model, batch)
                ce_sum += ce.item() * len(chunk)
                tte_sum += tte.item() * len(chunk)
                n += len(chunk)
        model.train()
        return ce_sum / max(n, 1), tte_sum / max(n, 1)

    budget = a.minutes * 60.0
    bar = Progress(1000, "pretrain")
    start = time.time()
    step, tokens_seen = 0, 0
    checkpoints = {0.25, 0.5, 0.75}
    ce_t, tte_t = evaluate()
    print(f"\nstep 0: tuning CE {ce_t:.3f}, TTE {tte_t:.3f}", file=sys.stderr)
    model.train()
    while step < a.max_steps:
        elapsed = time.time() - start
        frac = elapsed / budget
        if frac >= 1.0:
            break
        for lr_group in opt.param_groups:  # linear warm-up over 100 steps, cosine over the time budget
            lr_group["lr"] = a.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0)))
        picks = [rng.choice(tl_train) for _ in range(a.batch)]
        cuts = [rng.randint(1, len(t.seq)) for t in picks]
        batch = [x.to(a.device) for x in make_batch(picks, cuts, a.context)]
        ce, tte = losses(model, batch)
        loss = ce + a.tte_weight * tte
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_seen += int((batch[0] != 0).sum())
        bar.update(int(min(frac, 1.0) * 1000), f"step {step} CE {ce.item():.3f} TTE {tte.item():.3f}")
        for c in sorted(checkpoints):
            if frac >= c:
                checkpoints.discard(c)
                ce_t, tte_t = evaluate()
                print(f"\nstep {step} ({c:.0%} of budget): tuning CE {ce_t:.3f}, TTE {tte_t:.3f}", file=sys.stderr)
    bar.update(1000, f"step {step}")
    ce_t, tte_t = evaluate()
    minutes = (time.time() - start) / 60
    print(f"done: {step} steps, {tokens_seen} tokens, {minutes:.1f} min; tuning CE {ce_t:.4f}, TTE {tte_t:.4f}",
          file=sys.stderr)
    model = model.to("cpu")
    export(model, vocab_data, a.out, {
        "version": a.version, "training_data": source, "subjects": len(tl_train), "tokens_seen": tokens_seen,
        "steps": step, "minutes": minutes, "tuning_ce": ce_t, "tuning_tte": tte_t,
        "tte_targets": list(corpus.TASKS) + [vocab.tokens[i] for i in targets],
        "options": " ".join(sys.argv[1:] if argv is None else argv),
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
