"""Self-tests of the foundation pipeline (run by tests/models/model_pipeline.rs):

    python -m models.foundation.test_foundation

tokeniser rules; the MEDS corpus validates and reads back to the same tokens; the time-to-event loss
against a hand computation; a tiny pretraining run exports a TorchScript model that matches the eager
one and whose manifest hashes check; a tiny adaptation run produces every model's score per k and the
report files.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import tomllib

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models import generators, testrun  # noqa: E402
from models.fhir_time import instant_seconds  # noqa: E402
from models.foundation import adapt, head, corpus, pretrain, tokenizer  # noqa: E402
from models.foundation.model import Encoder, EmbeddingModule, tte_loss  # noqa: E402


def tiny_vocab(context=8) -> tokenizer.Vocab:
    spec = tokenizer.load_spec()
    t = instant_seconds("2026-01-01T00:00:00Z")
    events = [{"time": t + 60 * i, "code": "LOINC/8867-4", "numeric_value": float(50 + 10 * i), "text_value": None}
              for i in range(10)]
    events += [{"time": t, "code": "RXNORM/2193", "numeric_value": None, "text_value": None}] * 5
    return tokenizer.Vocab(tokenizer.build_vocab(spec, [(events, t + 3600)], context))


def test_tokeniser_rules():
    v = tiny_vocab()
    hr = v.concepts["LOINC/8867-4"]
    assert hr["edges"] == sorted(hr["edges"]) and len(hr["edges"]) == 9, hr
    edge = hr["edges"][3]
    assert v.token_of({"code": "LOINC/8889-8", "numeric_value": edge}) == "heart_rate#4"  # at an edge: above
    assert v.token_of({"code": "LOINC/8867-4", "numeric_value": float("nan")}) == "[UNK]"
    assert v.token_of({"code": "SNOMED/1"}) == "[UNK]"
    t = instant_seconds("2026-01-01T10:00:00Z")
    events = [{"time": None, "code": "GENDER/male", "numeric_value": None, "text_value": None},
              {"time": t, "code": "RXNORM/2193", "numeric_value": None, "text_value": None},
              {"time": t + 7200, "code": "LOINC/8867-4", "numeric_value": 200.0, "text_value": None},
              {"time": t + 9000, "code": "LOINC/8867-4", "numeric_value": 10.0, "text_value": None},
              {"time": t + 99999, "code": "LOINC/8867-4", "numeric_value": 10.0, "text_value": None}]
    out = tokenizer.encode(v, events, t + 9000)
    names = [v.tokens[i] for i in out["ids"]]
    assert names == ["[BOS]", "RXNORM/2193", "DT#1", "heart_rate#9", "heart_rate#0"], names  # no male token
    assert out["hours"] == [0.0, 0.0, 2.0, 2.0, 2.5], out["hours"]
    assert out["events"] == 3 and out["unknown"] == 0
    small = tokenizer.Vocab(dict(v.data, context=3))
    out = tokenizer.encode(small, events, t + 9000)
    assert [small.tokens[i] for i in out["ids"]] == ["[BOS]", "heart_rate#9", "heart_rate#0"]
    assert out["hours"] == [0.0, 0.0, 0.5]


def test_corpus_round_trip():
    spec = tokenizer.load_spec()
    recs = corpus.records("ward", 6, 3)
    with tempfile.TemporaryDirectory() as tmp:
        summary = corpus.write(recs, tmp, "test")
        back = corpus.read(tmp)
    assert summary["subjects"] == 6 and len(back) == 6
    vocab = tokenizer.Vocab(tokenizer.build_vocab(spec, [(pretrain.inputs_of(r), pretrain.end_of(r)) for r in recs], 64,
                                                  min_count=1))
    for a, b in zip(recs, back):
        now = pretrain.end_of(a)
        ea = tokenizer.encode(vocab, pretrain.inputs_of(a), now)
        eb = tokenizer.encode(vocab, pretrain.inputs_of(b), now)
        assert ea["ids"] == eb["ids"], "float32 MEDS values must bin as the float64 originals"
        assert max(abs(x - y) for x, y in zip(ea["hours"], eb["hours"])) < 1e-5
    assert any(e["code"].startswith(corpus.OUTCOME_PREFIX) for r in back for e in r["events"])


def test_tte_loss_by_hand():
    log_h = torch.full((1, 1, 1, 6), math.log(0.01))
    # Event at 30 h: exposure 6 + 6 + 12 + 6 h = 30 h at 0.01/h, event in the 24-48 h piece.
    loss = tte_loss(log_h, torch.tensor([[[30.0]]]), torch.tensor([[[1.0]]]), torch.tensor([[[1.0]]]))
    assert abs(loss.item() - (0.3 - math.log(0.01))) < 1e-5, loss
    # Censored at 100 h: exposure only.
    loss = tte_loss(log_h, torch.tensor([[[100.0]]]), torch.tensor([[[0.0]]]), torch.tensor([[[1.0]]]))
    assert abs(loss.item() - 1.0) < 1e-5, loss
    # Not valid: nothing.
    loss = tte_loss(log_h, torch.tensor([[[100.0]]]), torch.tensor([[[0.0]]]), torch.tensor([[[0.0]]]))
    assert loss.item() == 0.0


def test_recurrent_code_targets():
    """A code target's duration from each token is the time to that code's next occurrence."""
    spec = tokenizer.load_spec()
    recs = corpus.records("cohort", 12, 5)
    vocab = tokenizer.Vocab(tokenizer.build_vocab(spec, [(pretrain.inputs_of(r), pretrain.end_of(r)) for r in recs],
                                                  128, min_count=1))
    targets = pretrain.code_targets(vocab)
    assert vocab.index["heart_rate#0"] in targets and vocab.index["LOCATION/ICU"] in targets
    tl = max((pretrain.Timeline(vocab, r, targets) for r in recs), key=lambda t: len(t.seq))
    j = targets.index(vocab.index["heart_rate#0"])
    occ = tl.occurrences[j]
    assert len(occ) >= 2, "a long stay has several lowest-decile heart rates"
    cut = len(tl.seq)
    _, _, _, dur, ev, valid = pretrain.make_batch([tl], [cut], 128)
    ids, _, kept = tokenizer.window(tl.statics, tl.seq, 128, cut)
    k = len(corpus.TASKS) + j
    for pos, (t_us, _) in enumerate(kept):
        p = len(tl.statics) + pos
        t = t_us / 1e6
        later = occ[occ > t]
        if len(later):
            assert ev[0, p, k] == 1 and abs(dur[0, p, k].item() - (later[0] - t) / 3600) < 1e-3
        else:
            assert ev[0, p, k] == 0 and abs(dur[0, p, k].item() - (tl.end - t) / 3600) < 1e-3
    assert valid[0, : len(ids), k].min() == 1


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_pretrain_export_and_adapt():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "fm")
        pretrain.main(["--generator", "cohort", "--n", "60", "--seed", "2", "--minutes", "5", "--max-steps", "6",
                       "--batch", "8", "--context", "64", "--d", "16", "--heads", "2", "--out", out])
        with open(os.path.join(out, "foundation.toml"), "rb") as f:
            m = tomllib.load(f)
        assert m["sha256"] == sha(os.path.join(out, "model.pt"))
        assert m["vocab_sha256"] == sha(os.path.join(out, "vocab.json"))
        assert m["embedding_dim"] == 32 and m["context"] == 64 and "synthetic" in m["training_data"]
        vocab = tokenizer.Vocab.load(os.path.join(out, "vocab.json"))
        scripted = torch.jit.load(os.path.join(out, "model.pt"))
        p = generators.load("ward", 2, 4)[0]
        events, _ = tokenizer.events_of_bundle(tokenizer.load_spec(), p["bundle"])
        enc = tokenizer.encode(vocab, events, p["discharge"].timestamp())
        assert len(enc["ids"]) <= 64
        ids, hours = torch.tensor([enc["ids"]]), torch.tensor([enc["hours"]])
        enc_eager = Encoder(len(vocab.tokens), d=16, layers=2, heads=2, ff=32)
        enc_eager.load_state_dict({k[len("encoder."):]: v for k, v in scripted.state_dict().items()})
        enc_eager.eval()
        with torch.no_grad():
            a = scripted(ids, hours)
            b = EmbeddingModule(enc_eager)(ids, hours)
            # Right padding does not change a record's embedding.
            padded = scripted(torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1),
                              torch.cat([hours, torch.zeros(1, 3)], 1))
        assert a.shape == (1, 32) and torch.allclose(a, b, atol=1e-5)
        assert torch.allclose(a, padded, atol=1e-5)

        rep = os.path.join(tmp, "adapt")
        adapt.main(["oxygen_24h", "--model", out, "--n", "80", "--seed", "3", "--shots", "2", "0",
                    "--repeats", "1", "--scratch-steps", "3", "--finetune-steps", "3", "--bootstrap", "10",
                    "--out", rep])
        with open(os.path.join(rep, "adaptation.json")) as f:
            res = json.load(f)
        shots = res["results"][0]["shots"]
        assert [s["k"] for s in shots] == [2, 0]
        done = [s for s in shots if s["available"]]
        assert done, shots
        assert set(done[-1]["summary"]["scorers"]) == {"foundation", "foundation_finetune", "summary_gbm",
                                                        "summary_logistic", "from_scratch"}
        assert set(res["targets"]) == {"foundation", "foundation_finetune"}
        assert os.path.exists(os.path.join(rep, "oxygen_24h.svg"))
        assert "Targets" in open(os.path.join(rep, "adaptation.md")).read()

        # A task head exported as an ordinary bedside model (token input, shadow).
        hd = os.path.join(tmp, "head")
        head.main(["deterioration", "--model", out, "--n", "60", "--seed", "3", "--other-gen", "",
                   "--version", "0.0.1", "--bootstrap", "10", "--out", hd])
        with open(os.path.join(hd, "manifest.toml"), "rb") as f:
            hm = tomllib.load(f)
        assert hm["status"] == "shadow" and hm["explanation"] == "attribute"
        assert hm["input"]["kind"] == "tokens" and hm["input"]["shape"] == [64, 2]
        assert hm["sha256"] == sha(os.path.join(hd, "model.pt"))
        assert hm["input"]["vocab_sha256"] == sha(os.path.normpath(os.path.join(hd, hm["input"]["vocab"])))
        assert os.path.exists(os.path.normpath(os.path.join(hd, hm["features"])))
        assert "synthetic" in hm["training_data"] and "Synthetic data only" in open(os.path.join(hd, "MODEL_CARD.md")).read()
        hmod = torch.jit.load(os.path.join(hd, "model.pt"))
        x = torch.from_numpy(head.as_rows(enc["ids"], enc["hours"], 64))[None]
        with torch.no_grad():
            p1 = hmod(x)
            a = hmod.attribute(x)
            assert not torch.is_grad_enabled(), "attribute restores the caller's grad mode"
        assert p1.shape == (1, 1) and 0 < p1.item() < 1
        assert a.shape == (1, 64, 2) and float(a[0, :, 1].abs().sum()) == 0.0
        assert float(a[0, len(enc["ids"]):, 0].abs().sum()) == 0.0, "padding gets no credit"
        # Integrated gradients add up to the logit's shift from the all-usual record.
        usual = x.clone()
        usual[0, :, 0] = hmod.baseline[x[0, :, 0].long()].float()
        with torch.no_grad():
            shift = torch.logit(p1) - torch.logit(hmod(usual))
        assert abs(float(a[0, :, 0].sum()) - float(shift)) < 0.05 * max(1.0, abs(float(shift))), (a.sum(), shift)
        bad = x.clone()
        bad[0, 0, 0] = 10_000.0
        try:
            hmod(bad)
            raise AssertionError("an id outside the vocabulary must be refused")
        except Exception as e:  # TorchScript raises its own error type
            assert "outside the vocabulary" in str(e)


def main() -> int:
    return testrun.run(globals(), "foundation")


if __name__ == "__main__":
    sys.exit(main())
