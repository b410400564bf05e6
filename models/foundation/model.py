"""The patient-timeline encoder: a small causal transformer over tokeniser output.

Input: token ids ``[B, T]`` (int64, right-padded with 0) and each token's hours since the first timed
token ``[B, T]`` (float32). A token's representation depends only on it and the tokens before it, so
right padding needs no mask and the representation at the last real token summarises the record.

Heads used in pretraining only: next-token logits and, for each clinical outcome, a piecewise-
exponential time-to-event head (log-hazard per time piece, as MOTOR does). The exported TorchScript
(``EmbeddingModule``) returns the patient embedding: the last real token's state and the mean of all
real tokens' states, concatenated.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

PIECES_HOURS = [0.0, 6.0, 12.0, 24.0, 48.0, 96.0]  # piece j covers [PIECES[j], PIECES[j+1]); last is open
N_TIME_PERIODS = 5  # how many periods time_features uses (3, 12, 24, 72, 168 h)


def time_features(hours: torch.Tensor) -> torch.Tensor:
    """[.., T] hours -> [.., T, 2 + 2·periods]: log1p(h), h/168, then sin and cos at each period."""
    periods = torch.tensor([3.0, 12.0, 24.0, 72.0, 168.0], dtype=hours.dtype, device=hours.device)
    a = hours.unsqueeze(-1) * (2.0 * math.pi) / periods
    return torch.cat([torch.log1p(hours.clamp(min=0.0)).unsqueeze(-1), (hours / 168.0).unsqueeze(-1),
                      torch.sin(a), torch.cos(a)], dim=-1)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)
        h = self.heads
        q = q.view(b, t, h, d // h).transpose(1, 2)
        k = k.view(b, t, h, d // h).transpose(1, 2)
        v = v.view(b, t, h, d // h).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        x = x + F.dropout(self.out(a.transpose(1, 2).reshape(b, t, d)), p, self.training)
        y = self.ff2(F.gelu(self.ff1(self.norm2(x))))
        return x + F.dropout(y, p, self.training)


class Encoder(nn.Module):
    def __init__(self, vocab_size: int, d: int = 64, layers: int = 2, heads: int = 4, ff: int = 128,
                 dropout: float = 0.1, tasks: int = 3):
        super().__init__()
        self.d = d
        self.tok = nn.Embedding(vocab_size, d, padding_idx=0)
        self.time = nn.Linear(2 + 2 * N_TIME_PERIODS, d)
        self.blocks = nn.ModuleList([Block(d, heads, ff, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(d)
        self.next_token = nn.Linear(d, vocab_size)
        self.tasks = tasks
        self.hazard = nn.Linear(d, tasks * len(PIECES_HOURS))
        nn.init.constant_(self.hazard.bias, -6.0)  # ~1 event per 400 h: the loss starts near its scale

    def states(self, ids: torch.Tensor, hours: torch.Tensor) -> torch.Tensor:
        return self.encode(self.tok(ids) + self.time(time_features(hours)))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, d] token inputs (token embedding + time features) -> [B, T, d] states; split from
        ``states`` so that a head can take gradients with respect to each token's input."""
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def log_hazards(self, states: torch.Tensor) -> torch.Tensor:
        """[B, T, d] -> [B, T, tasks, pieces]."""
        b, t, _ = states.shape
        return self.hazard(states).view(b, t, self.tasks, len(PIECES_HOURS))


def embedding(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, T, d] states and real lengths [B] -> [B, 2d]: last real state ‖ mean of real states."""
    b, t, d = states.shape
    idx = (lengths - 1).clamp(min=0).view(b, 1, 1).expand(b, 1, d)
    last = states.gather(1, idx).squeeze(1)
    mask = (torch.arange(t, device=states.device).view(1, t) < lengths.view(b, 1)).to(states.dtype)
    mean = (states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
    return torch.cat([last, mean], dim=-1)


def tte_loss(log_h: torch.Tensor, durations: torch.Tensor, events: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Piecewise-exponential negative log-likelihood.

    log_h [B, T, K, P]; durations [B, T, K] hours from the token to the outcome (event) or to the end of
    the record (censored); events [B, T, K] 1 where the outcome happened; valid [B, T, K] 1 where the
    token is before the outcome."""
    starts = torch.tensor(PIECES_HOURS, dtype=log_h.dtype, device=log_h.device)
    widths = torch.cat([starts[1:] - starts[:-1], torch.tensor([1e9], dtype=log_h.dtype, device=log_h.device)])
    dur = durations.unsqueeze(-1)
    exposure = (dur - starts).clamp(min=0.0)
    exposure = torch.minimum(exposure, widths)
    in_piece = ((dur >= starts) & (dur < starts + widths)).to(log_h.dtype) * events.unsqueeze(-1)
    nll = torch.exp(log_h) * exposure - in_piece * log_h
    v = valid.unsqueeze(-1)
    return (nll * v).sum() / valid.sum().clamp(min=1.0)


class EmbeddingModule(nn.Module):
    """What ships: ``forward(ids [1, T] int64, hours [1, T] float32) -> [1, 2d] float32``."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, ids: torch.Tensor, hours: torch.Tensor) -> torch.Tensor:
        states = self.encoder.states(ids, hours)
        lengths = (ids != 0).sum(1)
        return embedding(states, lengths)
