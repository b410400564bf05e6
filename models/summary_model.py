"""`arch = "summary"`: per-channel summaries of the gateway's grid -> piecewise-linear (hinge) basis ->
logistic head -> Platt calibration; `[summary] head = "stumps"` scores the same summaries with boosted
depth-1 trees (`StumpSummaryModel`), `"blend"` with a weighted mean of both (`BlendSummaryModel`).
TorchScript with two methods:

    forward(x)   float32 [B, T, 2C] -> calibrated probability [B, 1]
    attribute(x) float32 [B, T, 2C] -> per-cell contributions to the calibrated logit [B, T, 2C]

Input: exactly the grid `models/featurize.grids` builds (channels 0..C-1 normalised, forward-filled
values; C..2C-1 observed masks), so the gateway's feature pipeline is unchanged.

Summaries per channel (7 x C), the masks used ONLY to select which cells are observations:

    last    value of the last step (the forward-filled last measurement, 0 = mean once stale)
    min     lowest observed value in the last `extreme_hours` (default the window; 0 when none)
    max     highest observed value in the last `extreme_hours` (idem)
    mean    mean of the observed values (0 when none)
    d6      last - value 6 h earlier (0 when nothing was measured by then)
    d24     last - value 24 h earlier (idem); the two spans are `change_hours` (AKI: 24 h, 48 h)
    since   hours since the last observation, capped (cap when never observed)

No measurement counts and no observation frequency: measuring a stable patient more or less often
does not move any summary except `since` (and `since` is capped at `stale_cap_hours`).

Each summary is standardised with the training split's mean/std (buffers), expanded into
[s, relu(s - k) for k in knots] (a continuous piecewise-linear function per summary, like NEWS2
bands but without jumps) and a linear head gives the logit z; the output is
sigmoid(calib_intercept + calib_slope * z).

`attribute` credits each measurement (its cell and its forward-filled copies) with what leaving it
out would undo, to first order: per-summary rescaled gradients x (value - the value carried before
it), the gradients written out per summary (`value_gradient`: no autograd, so the same under the
caller's no_grad or grad mode, and half the cost of the autograd pass earlier versions export).
Masks only select cells, so the mask half of the output is 0. The gateway sums filled copies onto
their measurement.
"""
from __future__ import annotations

from typing import List

import numpy as np
import torch
from torch import nn

SUMMARIES = ("last", "min", "max", "mean", "d6", "d24", "since")
DEFAULT_KNOTS = (-2.0, -1.0, 0.0, 1.0, 2.0)
BIG = 1.0e4


class SummaryModel(nn.Module):
    """The exported module (its class name is part of the TorchScript bytes: keep it).

    Trained in standardised-summary space; `fold_standardisation` then moves the summaries'
    mean/std into the knots and the head, so that the exported forward pass needs no
    standardisation ops (the op count is what sets batch-1 latency)."""

    def __init__(self, steps: int, channels: int, step_hours: float, stale_cap_hours: float = 24.0,
                 knots=DEFAULT_KNOTS, extreme_hours: float | None = None, change_hours=(6.0, 24.0)):
        super().__init__()
        c = channels // 2
        self.steps = steps
        self.channels = channels
        self.c = c
        if len(change_hours) != 2:
            raise ValueError("change_hours: two spans (default 6 h and 24 h)")
        k6, k24 = (int(min(max(1, round(h / step_hours)), steps - 1)) for h in change_hours)
        self.stale_cap_hours = float(stale_cap_hours)
        # min / max over the last `extreme_hours` (default: the whole window)
        kx = steps if extreme_hours is None else int(min(max(1, round(extreme_hours / step_hours)), steps))
        self.extreme_start = steps - kx
        # "since" = (T + 1 - position of the last observation) * step hours, capped
        self.since_origin = float((steps + 1) * step_hours)
        n_sum = len(SUMMARIES) * c
        self.n_summaries = n_sum
        self.n_knots = len(knots)
        self.register_buffer("position", torch.arange(1, steps + 1, dtype=torch.float32).view(1, steps, 1))
        self.register_buffer("position_hours",
                             (torch.arange(1, steps + 1, dtype=torch.float32) * step_hours).view(1, steps, 1))
        # the steps 6 h and 24 h before the last one
        self.register_buffer("past_steps", torch.tensor([steps - 1 - k6, steps - 1 - k24], dtype=torch.long))
        # knots per summary in raw summary units [F, K]; standardised space until folded
        self.register_buffer("knots", torch.tensor(list(knots), dtype=torch.float32).repeat(n_sum, 1))
        self.register_buffer("one_half", torch.tensor(0.5))
        self.register_buffer("zero", torch.tensor(0.0))
        self.register_buffer("big", torch.tensor(1.0e4))
        self.register_buffer("neg_big", torch.tensor(-1.0e4))
        self.register_buffer("sum_mean", torch.zeros(n_sum))
        self.register_buffer("sum_std", torch.ones(n_sum))
        self.head = nn.Linear(n_sum * (1 + len(knots)), 1)
        self.register_buffer("calib_intercept", torch.zeros(1))
        self.register_buffer("calib_slope", torch.ones(1))

    def summaries(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, 2C] -> raw summaries [B, 7C], order SUMMARIES x channel. (narrow, select and 0-dim
        buffers rather than x[:, :, :c] and Python scalars: fewer ops, batch-1 latency.)"""
        c = self.c
        v = x.narrow(2, 0, c)
        m = x.narrow(2, c, c).detach()
        obs = m > self.one_half
        last = v.select(1, -1)
        recent_v = v.narrow(1, self.extreme_start, self.steps - self.extreme_start)
        recent_obs = obs.narrow(1, self.extreme_start, self.steps - self.extreme_start)
        any_recent = recent_obs.any(1)
        mn = torch.where(any_recent, torch.where(recent_obs, recent_v, self.big).amin(1), self.zero)
        mx = torch.where(any_recent, torch.where(recent_obs, recent_v, self.neg_big).amax(1), self.zero)
        mean = (v * m).sum(1) / m.sum(1).clamp(min=1.0)
        # change over 6 h and 24 h, where something had been measured by then
        seen = m.cumsum(1).index_select(1, self.past_steps)
        past = v.index_select(1, self.past_steps)
        delta = torch.where(seen > self.one_half, last.unsqueeze(1) - past, self.zero).flatten(1)
        since = (self.since_origin - (m * self.position_hours).amax(1)).clamp(max=self.stale_cap_hours)
        return torch.cat([last, mn, mx, mean, delta, since], 1)

    def standardise(self, s: torch.Tensor) -> torch.Tensor:
        return (s - self.sum_mean) / self.sum_std

    def basis(self, s: torch.Tensor) -> torch.Tensor:
        """Summaries [B, F] -> [s, relu(s - knot_k) for each knot] [B, F * (1 + K)]."""
        return torch.cat([s, torch.relu(s.unsqueeze(2) - self.knots).flatten(1)], 1)

    def raw_logit(self, x: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logit [B, 1]."""
        return self.head(self.basis(self.summaries(x)))

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated logit [B, 1]."""
        return torch.addcmul(self.calib_intercept, self.calib_slope, self.raw_logit(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.size(1) != self.steps or x.size(2) != self.channels:
            raise ValueError("input must be float32 [B, steps, channels] as the manifest declares")
        return torch.sigmoid(self.logit(x))

    def secant(self, sd: torch.Tensor) -> torch.Tensor:
        """m_j = (f_j(s_j) - f_j(0)) / s_j per raw summary [B, F], the head being a sum of one
        function f_j per summary: what `attribute` needs from the head."""
        return self.hinge_secant(sd)

    def hinge_secant(self, sd: torch.Tensor) -> torch.Tensor:
        """`secant` of the hinge head (f_j'(s_j) where s_j is ~0)."""
        f = self.n_summaries
        w = self.head.weight.detach().view(-1)
        w_lin = w[:f]
        w_hinge = w[f:].view(f, self.n_knots)
        above = sd.unsqueeze(2) - self.knots
        f_s = w_lin * sd + (torch.relu(above) * w_hinge).sum(2)
        f_0 = (torch.relu(-self.knots) * w_hinge).sum(1)
        slope_here = w_lin + ((above > 0).float() * w_hinge).sum(2)
        small = sd.abs() < 1e-6
        return torch.where(small, slope_here, (f_s - f_0) / torch.where(small, 1.0, sd))

    def value_gradient(self, x: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
        """d(sum_j mult_j * s_j(x)) / d(values), [B, T, C], in closed form from each summary's
        own derivative: last -> the last step; min / max -> the observed cells of the last
        `extreme_hours` at the extreme (ties share it evenly, as autograd's amin / amax do; none
        when nothing was observed there); mean -> each observed cell 1 / count; the changes ->
        +1 on the last step and -1 on the step 6 h (24 h) before, where something had been
        measured by then; "since" reads the masks only. Equal to the autograd pass it replaced
        (`test_summary_model.py`) and half its cost at batch 1: no graph to record and walk."""
        c = self.c
        v = x.narrow(2, 0, c)
        m = x.narrow(2, c, c)
        obs = m > self.one_half
        per = mult.narrow(1, 0, 6 * c).view(-1, 6, c)  # last, min, max, mean, d6, d24
        g = m * (per.select(1, 3) / m.sum(1).clamp(min=1.0)).unsqueeze(1)
        start = self.extreme_start
        rv = v.narrow(1, start, self.steps - start)
        ro = obs.narrow(1, start, self.steps - start)
        at_min = (ro & (rv == torch.where(ro, rv, self.big).amin(1, keepdim=True))).float()
        at_max = (ro & (rv == torch.where(ro, rv, self.neg_big).amax(1, keepdim=True))).float()
        extremes = (at_min * (per.select(1, 1) / at_min.sum(1).clamp(min=1.0)).unsqueeze(1)
                    + at_max * (per.select(1, 2) / at_max.sum(1).clamp(min=1.0)).unsqueeze(1))
        g = g + nn.functional.pad(extremes, [0, 0, start, 0])
        seen = (m.cumsum(1).index_select(1, self.past_steps) > self.one_half).float()
        changes = per.narrow(1, 4, 2) * seen  # [B, 2, C]: d6, d24 where defined
        g = g.index_add(1, self.past_steps, -changes)
        at_last = (per.select(1, 0) + changes.sum(1)).unsqueeze(1)
        return g + nn.functional.pad(at_last, [0, 0, self.steps - 1, 0])

    @torch.jit.export
    def attribute(self, x: torch.Tensor) -> torch.Tensor:
        """Per-cell contributions to the calibrated logit [B, T, 2C]: each measurement is credited
        with what leaving it out would undo, to first order (a linearised occlusion, one pass).

        The logit is additive over summaries: a + b * (bias + sum_j f_j(s_j)), f_j piecewise
        linear (hinge head) or a step function (stumps). With m_j = b * (f_j(s_j) - f_j(0)) / s_j
        (`secant`; f_j'(s_j) where s_j is ~0; 0 = the training mean) held fixed, g = d(sum_j m_j s_j)/dx
        (`value_gradient`, in closed form). Leaving a measurement out puts back, on its cell and its forward-filled copies, the value carried
        before it (u: the cell before its run, 0 = the mean when there is none), so each cell gets
        g * (v - u): summed per measurement (the gateway sums filled copies onto their
        measurement) that is the occlusion's change of the logit when the summaries are linear in
        the values (last, changes), and its first-order estimate otherwise (min, max, mean,
        hinges). A value that stays as it was scores ~0; a new abnormal one scores its jump. Cells
        after a value expired (max_age_hours) have no measurement and are dropped by the gateway.
        "since" depends on the masks only and is not attributed; the mask half is 0."""
        if x.dim() != 3 or x.size(1) != self.steps or x.size(2) != self.channels:
            raise ValueError("input must be float32 [B, steps, channels] as the manifest declares")
        x = x.detach()
        mult = self.secant(self.summaries(x)) * self.calib_slope
        g = self.value_gradient(x, mult)
        c = self.c
        v = x.narrow(2, 0, c)
        m = x.narrow(2, c, c)
        # 1-based step of the observation each cell carries (0: none yet)
        run = torch.cummax(m * self.position, 1)[0]
        before = torch.gather(v, 1, (run - 2.0).clamp(min=0.0).long())
        before = torch.where(run > 1.5, before, self.zero)
        return torch.cat([g * (v - before), torch.zeros_like(v)], 2)

    @torch.jit.unused
    def fold_standardisation(self) -> None:
        """Training used basis(standardise(s)); rewrite knots and head so that basis(s) on raw
        summaries gives the same logit: relu((s - mu)/sd - k) = relu(s - (mu + k sd)) / sd."""
        with torch.no_grad():
            mu, sd = self.sum_mean.clone(), self.sum_std.clone()
            f, k = self.n_summaries, self.n_knots
            w = self.head.weight.view(f * (1 + k)).clone()
            w_lin, w_hinge = w[:f], w[f:].view(f, k)
            self.head.bias.sub_((w_lin * mu / sd).sum())
            new_lin = w_lin / sd
            new_hinge = w_hinge / sd.unsqueeze(1)
            self.head.weight.copy_(torch.cat([new_lin, new_hinge.flatten()]).view(1, -1))
            self.knots.copy_(mu.unsqueeze(1) + self.knots * sd.unsqueeze(1))
            self.sum_mean.zero_()
            self.sum_std.fill_(1.0)


class StumpSummaryModel(SummaryModel):
    """`[summary] head = "stumps"`: the same summaries, scored by gradient-boosted depth-1 trees
    (the strongest simple baseline on the cross-generator runs) instead of the hinge basis. A sum
    of stumps is a sum of one step function per summary, so `attribute` (inherited) credits
    measurements in the same way as for the hinge head; the forward pass is one gather, one comparison and
    one sum. Trained on raw summaries: thresholds are in the summaries' own units, no folding."""

    def __init__(self, steps: int, channels: int, step_hours: float, stumps: int, stale_cap_hours: float = 24.0,
                 extreme_hours: float | None = None, change_hours=(6.0, 24.0), knots=()):
        super().__init__(steps, channels, step_hours, stale_cap_hours=stale_cap_hours, knots=knots,
                         extreme_hours=extreme_hours, change_hours=change_hours)
        self.register_buffer("stump_feature", torch.zeros(stumps, dtype=torch.long))
        self.register_buffer("stump_threshold", torch.zeros(stumps))
        self.register_buffer("stump_left", torch.zeros(stumps))
        self.register_buffer("stump_right", torch.zeros(stumps))
        self.register_buffer("stump_base", torch.zeros(1))
        self.register_buffer("secant_floor", torch.tensor(0.5))
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()

    def leaves(self, s: torch.Tensor) -> torch.Tensor:
        """Each stump's output [B, S] for raw summaries [B, F] (left where s < threshold)."""
        return torch.where(s.index_select(1, self.stump_feature) < self.stump_threshold, self.stump_left,
                           self.stump_right)

    def raw_logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.stump_logit(self.summaries(x))

    def stump_logit(self, s: torch.Tensor) -> torch.Tensor:
        return self.leaves(s).sum(1, keepdim=True) + self.stump_base

    def secant(self, sd: torch.Tensor) -> torch.Tensor:
        return self.stump_secant(sd)

    def stump_secant(self, sd: torch.Tensor) -> torch.Tensor:
        """f_j = the sum of summary j's stumps, a step function: (f_j(s) - f_j(0)) / s with |s|
        floored at `secant_floor` (a step just beside 0 would otherwise turn a tiny summary into a
        huge multiplier and credit whichever reading moved it)."""
        f_s = torch.zeros_like(sd).index_add_(1, self.stump_feature, self.leaves(sd))
        at_zero = torch.where(self.zero < self.stump_threshold, self.stump_left, self.stump_right)
        f_0 = torch.zeros(sd.size(1), dtype=sd.dtype).index_add_(0, self.stump_feature, at_zero)
        den = torch.where(sd < self.zero, torch.clamp(sd, max=-self.secant_floor),
                          torch.clamp(sd, min=self.secant_floor))
        return (f_s - f_0) / den

    @torch.jit.unused
    def fold_standardisation(self) -> None:
        """Nothing to fold: the stumps were fitted on raw summaries."""

    @torch.jit.unused
    def set_stumps(self, base: float, stumps) -> None:
        """(feature, threshold, left, right) per stump, as `models.comparators.fit_stumps` returns them."""
        with torch.no_grad():
            self.stump_base.fill_(base)
            self.stump_feature.copy_(torch.tensor([t[0] for t in stumps], dtype=torch.long))
            self.stump_threshold.copy_(torch.tensor([t[1] for t in stumps], dtype=torch.float32))
            self.stump_left.copy_(torch.tensor([t[2] for t in stumps], dtype=torch.float32))
            self.stump_right.copy_(torch.tensor([t[3] for t in stumps], dtype=torch.float32))


class BlendSummaryModel(StumpSummaryModel):
    """`[summary] head = "blend"`: a weighted mean of a hinge head and a boosted-stumps head fitted on
    the same summaries (`stump_weight`, default 0.5), then Platt-calibrated. The stumps carry the
    thresholds that transferred between generators; the hinge head keeps every summary's smooth effect (a high respiratory rate that is
    not the newest reading still raises the risk). Still one function per summary, so `attribute`
    is the inherited linearised occlusion."""

    def __init__(self, steps: int, channels: int, step_hours: float, stumps: int, stump_weight: float = 0.5,
                 **kw):
        super().__init__(steps, channels, step_hours, stumps, **kw)
        self.register_buffer("stump_weight", torch.tensor(float(stump_weight)))
        self.register_buffer("hinge_weight", torch.tensor(1.0 - float(stump_weight)))

    def raw_logit(self, x: torch.Tensor) -> torch.Tensor:
        s = self.summaries(x)
        return self.head(self.basis(s)) * self.hinge_weight + self.stump_logit(s) * self.stump_weight

    def secant(self, sd: torch.Tensor) -> torch.Tensor:
        return self.hinge_secant(sd) * self.hinge_weight + self.stump_secant(sd) * self.stump_weight


def summary_names(feature_names: List[str]) -> List[str]:
    return [f"{s}:{f}" for s in SUMMARIES for f in feature_names]


# ------------------------------------------------------------------------------------- training
def summaries_of(model: SummaryModel, x, bs: int = 4096) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(x), bs):
            out.append(model.summaries(torch.from_numpy(x[i:i + bs])))
    return torch.cat(out)


def fit(model: SummaryModel, x_tr, y_tr, x_va, y_va, *, epochs: int, l2: float, steps_per_epoch: int = 25,
        patience: int = 3, log=print):
    """Fits the head (a convex, L2-penalised logistic regression on the hinge basis) by full-batch
    L-BFGS, `steps_per_epoch` iterations per epoch; keeps the epoch with the lowest validation loss
    and stops after `patience` epochs without improvement. Deterministic (single thread, zero start).
    Sets the summaries' standardisation from the training split. Returns (best epoch, val loss)."""
    import math

    from models.calibration import nll
    from models.evaluation import auroc

    s_tr = summaries_of(model, x_tr)
    mu = s_tr.mean(0)
    sd = s_tr.std(0).clamp(min=1e-3)
    model.sum_mean.copy_(mu)
    model.sum_std.copy_(sd)
    with torch.no_grad():
        phi_tr = model.basis(model.standardise(s_tr))
        phi_va = model.basis(model.standardise(summaries_of(model, x_va)))
    y = torch.from_numpy(np.asarray(y_tr, dtype=np.float32))
    yv = np.asarray(y_va, dtype=np.float64)
    prev = float(y.mean().clamp(1e-4, 1 - 1e-4))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(math.log(prev / (1 - prev)))
    opt = torch.optim.LBFGS(model.head.parameters(), lr=1.0, max_iter=steps_per_epoch, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)
    loss_fn = nn.BCEWithLogitsLoss()

    def closure():
        opt.zero_grad()
        loss = loss_fn(model.head(phi_tr).squeeze(1), y) + l2 * model.head.weight.pow(2).sum()
        loss.backward()
        return loss

    best = (math.inf, None, 0)
    bad = 0
    for epoch in range(1, epochs + 1):
        train_loss = float(opt.step(closure).detach())
        with torch.no_grad():
            zv = model.head(phi_va).squeeze(1).double().numpy()
        val = nll(zv, yv)
        mark = ""
        if val < best[0] - 1e-6:
            best, mark, bad = (val, {k: v.clone() for k, v in model.head.state_dict().items()}, epoch), " *", 0
        else:
            bad += 1
        log(f"epoch {epoch:2d}  train_loss {train_loss:.4f}  val_loss {val:.4f}  val_auroc {auroc(yv, zv):.4f}{mark}")
        if bad >= patience:
            break
    model.head.load_state_dict(best[1])
    return best[2], best[0]


def fit_stumps(steps: int, channels: int, step_hours: float, x_tr, y_tr, x_va, y_va, *, rounds: int,
               learning_rate: float, bins: int, l2: float, log=print, **summary_kw) -> StumpSummaryModel:
    """Boosts depth-1 trees on the training split's summaries (`models.comparators.fit_stumps`:
    logistic loss, quantile cuts, Newton leaves), keeps the number of rounds with the lowest
    validation loss, merges stumps that cut one summary at one threshold, and returns the model
    (uncalibrated: calib_intercept 0, calib_slope 1). Deterministic."""
    from models import comparators
    from models.calibration import nll
    from models.evaluation import auroc

    probe = SummaryModel(steps, channels, step_hours, **summary_kw)
    s_tr = summaries_of(probe, x_tr).numpy()
    s_va = summaries_of(probe, x_va).numpy()
    gb = comparators.fit_stumps(s_tr.astype(np.float64), np.asarray(y_tr, dtype=np.float64), rounds=rounds,
                                learning_rate=learning_rate, bins=bins, l2=l2)
    yv = np.asarray(y_va, dtype=np.float64)
    z = np.full(len(yv), gb["base"])
    best = (nll(z, yv), 0)
    # thresholds are compared as float32, as the exported buffers hold them (here and when merging)
    for i, (f, thr, left, right) in enumerate(gb["trees"], 1):
        z += np.where(s_va[:, f] < np.float32(thr), left, right)
        loss = nll(z, yv)
        if loss < best[0] - 1e-7:
            best = (loss, i)
        if i % 25 == 0 or i == len(gb["trees"]):
            log(f"round {i:3d}  val_loss {loss:.4f}  val_auroc {auroc(yv, z):.4f}")
    merged: dict = {}
    for f, thr, left, right in gb["trees"][:best[1]]:
        key = (int(f), float(np.float32(thr)))
        l0, r0 = merged.get(key, (0.0, 0.0))
        merged[key] = (l0 + left, r0 + right)
    stumps = [(f, thr, lr[0], lr[1]) for (f, thr), lr in sorted(merged.items())]
    log(f"kept {best[1]} rounds (validation loss {best[0]:.4f}): {len(stumps)} distinct stumps")
    model = StumpSummaryModel(steps, channels, step_hours, len(stumps), **summary_kw)
    model.set_stumps(gb["base"], stumps)
    return model


def blend(hinge: SummaryModel, stumps: StumpSummaryModel, step_hours: float, stump_weight: float = 0.5,
          **summary_kw) -> BlendSummaryModel:
    """A `BlendSummaryModel` from a fitted (folded) hinge model and a fitted stumps model, both built
    with these `step_hours` and summary settings (uncalibrated)."""
    model = BlendSummaryModel(hinge.steps, hinge.channels, step_hours, int(stumps.stump_feature.numel()),
                              stump_weight=stump_weight, knots=tuple([0.0] * hinge.n_knots), **summary_kw)
    state = model.state_dict()   # its own blend weights; the rest from the two fitted heads
    state.update(hinge.state_dict())
    state.update({k: v for k, v in stumps.state_dict().items() if k.startswith("stump_") or k == "secant_floor"})
    model.load_state_dict(state)
    return model
