#!/usr/bin/env python3
"""Checks of arch "summary" (models/summary_model.py) and of exported summary models.

    .venv/bin/python -m models.test_summary_model                       # the module (~5 s)
    .venv/bin/python -m models.test_summary_model models/sepsis/2.0.0 models/aki/2.0.0 ...

Module checks: folding the standardisation keeps the logit; `attribute` summed per measurement is
occlusion for a model linear in the values, 0 on the mask half, works on the saved file under no_grad and
leaves no_grad on; forward and attribute agree between eager and TorchScript; the summaries ignore
how often a stable value was measured; the boosted-stumps head (`StumpSummaryModel`) is the sum of
its stumps and attributes like the hinge head.

Model checks (as tests/models/explanations.rs does in the gateway): quiet cohort patients scored 60 h
after admission; the newest respiratory rate set to 34/min (sepsis, deterioration) or the newest
creatinine raised by 0.25 mg/dL (aki) must raise the risk and be the measurement with the largest
attribution once cells are summed per source measurement (forward-filled copies included).
"""
from __future__ import annotations

import os
import sys
import tempfile
import tomllib

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models import featurize  # noqa: E402
from models.summary_model import StumpSummaryModel, SummaryModel, blend, fit_stumps  # noqa: E402
from models.torchscript import save_deterministic  # noqa: E402


def random_grid(b, steps, c, seed=0, p_obs=0.3):
    g = torch.Generator().manual_seed(seed)
    m = (torch.rand(b, steps, c, generator=g) < p_obs).float()
    raw = torch.randn(b, steps, c, generator=g) * 1.5
    v = torch.zeros(b, steps, c)
    cur = torch.zeros(b, c)
    for t in range(steps):
        cur = torch.where(m[:, t] > 0, raw[:, t], cur)
        v[:, t] = cur
    return torch.cat([v, m], 2)


def saved_and_loaded(model, x):
    """Scripts `model`, saves it as the training pipeline does, loads it back and returns its
    (attribute(x), forward(x)) under no_grad, checking that attribute leaves no_grad on."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.pt")
        save_deterministic(torch.jit.script(model), path)
        loaded = torch.jit.load(path)
        with torch.no_grad():
            att = loaded.attribute(x)
            assert not torch.is_grad_enabled(), "attribute must restore the caller's no_grad"
            return att, loaded(x)


def check_module():
    torch.manual_seed(0)
    steps, c = 36, 5
    model = SummaryModel(steps, 2 * c, 1.0)
    with torch.no_grad():
        model.sum_mean.copy_(torch.randn(model.n_summaries) * 0.3)
        model.sum_std.copy_(torch.rand(model.n_summaries) + 0.5)
        model.head.weight.normal_(0, 0.3)
        model.calib_intercept.fill_(-0.4)
        model.calib_slope.fill_(0.8)
    x = random_grid(64, steps, c)
    with torch.no_grad():
        before = model.head(model.basis(model.standardise(model.summaries(x))))
        model.fold_standardisation()
        after = model.raw_logit(x)
    assert torch.allclose(before, after, atol=1e-4), (before - after).abs().max()

    eager = model.attribute(x)
    att, p = saved_and_loaded(model, x)
    with torch.no_grad():
        z = model.logit(x)
    assert torch.allclose(att, eager, atol=1e-6)
    assert torch.allclose(p, torch.sigmoid(z), atol=1e-6)
    assert att[:, :, c:].abs().max() == 0, "mask half"
    # For a model linear in the values (last and changes only), the attribution summed per
    # measurement IS occlusion: the logit change when the measurement is left out (its cells take
    # the value carried before it).
    lin = SummaryModel(steps, 2 * c, 1.0)
    with torch.no_grad():
        lin.head.weight.zero_()
        w = lin.head.weight.view(-1)
        for j, name in enumerate(("last", "min", "max", "mean", "d6", "d24", "since")):
            if name in ("last", "d6", "d24"):
                w[j * c:(j + 1) * c] = torch.randn(c)
        lin.calib_slope.fill_(0.7)
    one = random_grid(1, steps, c, seed=3, p_obs=0.25)
    att1 = lin.attribute(one)[0]
    worst = 0.0
    for f in range(c):
        obs_steps = [t for t in range(steps) if one[0, t, c + f] > 0]
        for i, t in enumerate(obs_steps):
            end = obs_steps[i + 1] if i + 1 < len(obs_steps) else steps
            left_out = one.clone()
            left_out[0, t, c + f] = 0.0
            left_out[0, t:end, f] = one[0, t - 1, f] if t > 0 else 0.0
            with torch.no_grad():
                occl = float(lin.logit(one) - lin.logit(left_out))
            worst = max(worst, abs(occl - float(att1[t:end, f].sum())))
    assert worst < 1e-4, f"linear model: attribution is not occlusion ({worst})"

    # A stable value measured every hour vs every 4 h (the last hour included): the same summaries.
    dense = torch.zeros(1, steps, 2 * c)
    dense[:, :, :c] = 0.7
    dense[:, :, c:] = 1.0
    sparse = dense.clone()
    sparse[:, :, c:] = 0.0
    sparse[:, (steps - 1) % 4::4, c:] = 1.0  # every 4 h, the last step included
    with torch.no_grad():
        assert torch.allclose(model.summaries(dense), model.summaries(sparse)), "frequency leaks"
    check_stumps(steps, c)
    print("ok: summary module (fold, attribution = occlusion when linear, no_grad, frequency-free summaries, "
          "stumps head)")


def check_stumps(steps, c):
    """The boosted-stumps head: its logit is the sum of its stumps on the raw summaries; scripted and
    saved it agrees with the eager module; `attribute` works under no_grad, leaves the mask half 0,
    and credits the measurement that moved a summary across a stump; no stumps at all is a constant."""
    g = torch.Generator().manual_seed(5)
    n_sum = 7 * c
    stumps = [(int(torch.randint(0, n_sum, (1,), generator=g)), float(torch.randn(1, generator=g)),
               float(torch.randn(1, generator=g)), float(torch.randn(1, generator=g))) for _ in range(30)]
    model = StumpSummaryModel(steps, 2 * c, 1.0, len(stumps))
    model.set_stumps(-2.0, stumps)
    with torch.no_grad():
        model.calib_intercept.fill_(0.3)
        model.calib_slope.fill_(0.9)
    x = random_grid(32, steps, c, seed=4)
    with torch.no_grad():
        s = model.summaries(x)
        z = -2.0 + sum(torch.where(s[:, f] < t, left, right) for f, t, left, right in stumps)
        assert torch.allclose(model.raw_logit(x).squeeze(1), z, atol=1e-5), "the logit is the sum of the stumps"
    eager_att = model.attribute(x)
    att, p = saved_and_loaded(model, x)
    with torch.no_grad():
        assert torch.allclose(p, torch.sigmoid(model.logit(x)), atol=1e-6)
    assert torch.allclose(att, eager_att, atol=1e-6)
    assert att[:, :, c:].abs().max() == 0, "mask half"
    # One stump on the last value of channel 0: a new reading that crosses it is the one credited.
    one = StumpSummaryModel(steps, 2 * c, 1.0, 1)
    one.set_stumps(0.0, [(0, 1.0, 0.0, 2.0)])   # "last" of channel 0 >= 1.0 -> +2
    quiet = torch.zeros(1, steps, 2 * c)
    quiet[:, ::3, c:] = 1.0
    high = quiet.clone()
    high[0, -1, 0] = 1.5
    high[0, -1, c] = 1.0
    with torch.no_grad():
        assert float(one.logit(high) - one.logit(quiet)) == 2.0
    a = one.attribute(high)[0]
    assert int(a.abs().argmax()) == (steps - 1) * 2 * c + 0 and float(a[-1, 0]) > 0, a.nonzero()
    # The blend: the mean of a (folded) hinge head and the stumps, scripted as it was built.
    hinge = SummaryModel(steps, 2 * c, 1.0)
    with torch.no_grad():
        hinge.head.weight.normal_(0, 0.3, generator=g)
    hinge.fold_standardisation()
    mixed = blend(hinge, model, 1.0)
    with torch.no_grad():
        want = (hinge.raw_logit(x) + model.raw_logit(x)) / 2
        assert torch.allclose(mixed.raw_logit(x), want, atol=1e-5), "blend = mean of the two heads"
        scripted = torch.jit.script(mixed)
        assert torch.allclose(scripted(x), torch.sigmoid(want), atol=1e-6)
        att = scripted.attribute(x)
        assert not torch.is_grad_enabled()
    # (the stumps model's calibration slope 0.9 scales its attribution; the blend's is 1)
    both = (hinge.attribute(x) + model.attribute(x) / 0.9) / 2
    assert torch.allclose(att, both, atol=1e-4), (att - both).abs().max()
    assert att[:, :, c:].abs().max() == 0, "mask half"
    # Fitting: a label set by the last value of channel 1 is learnt from that summary alone.
    xs = random_grid(600, steps, c, seed=6, p_obs=0.4)
    ys = (xs[:, -1, 1] > 0.8).numpy().astype(np.float64)
    fitted = fit_stumps(steps, 2 * c, 1.0, xs[:400].numpy(), ys[:400], xs[400:].numpy(), ys[400:], rounds=40,
                        learning_rate=0.3, bins=16, l2=1.0, log=lambda line: None)
    with torch.no_grad():
        zs = fitted.raw_logit(xs[400:]).squeeze(1).numpy()
    from models.evaluation import auroc
    assert auroc(ys[400:], zs) > 0.95, auroc(ys[400:], zs)
    weight = torch.zeros(7 * c).index_add_(0, fitted.stump_feature,
                                           (fitted.stump_right - fitted.stump_left).abs())
    assert int(weight.argmax()) == 1, f"`last` of channel 1 carries the label: {weight}"
    empty = StumpSummaryModel(steps, 2 * c, 1.0, 0)
    empty.set_stumps(-3.0, [])
    with torch.no_grad():
        assert torch.allclose(empty.raw_logit(x), torch.full((32, 1), -3.0))
    assert empty.attribute(x).abs().max() == 0


CASES = {  # model -> (feature, change)
    "sepsis": ("respiratory_rate", lambda v: 34.0),
    "deterioration": ("respiratory_rate", lambda v: 34.0),
    "aki": ("creatinine", lambda v: v + 0.25),
}


def check_model(model_dir: str, n: int = 40, seed: int = 3, tries: int = 5):
    from models.cohort.generate import generate

    with open(os.path.join(model_dir, "manifest.toml"), "rb") as f:
        man = tomllib.load(f)
    spec = featurize.load_spec(os.path.normpath(os.path.join(model_dir, man["features"])))
    mean, std = np.array(man["input"]["mean"]), np.array(man["input"]["std"])
    module = torch.jit.load(os.path.join(model_dir, "model.pt"))
    name = man["name"]
    feat, change = CASES[name]
    f_idx = [f["name"] for f in spec["feature"]].index(feat)
    done = ok = 0
    for r in generate(n, seed):
        if any(v is not None for v in r["onsets"].values()) or done >= tries:
            continue
        now = r["admit"].timestamp() + 60 * 3600
        meas, _ = featurize.extract(spec, r["bundle"])
        meas = [m for m in meas if m[1] < now]
        cand = [i for i, m in enumerate(meas) if m[0] == f_idx and m[1] < now - 1800]
        if not cand:
            continue
        k = cand[-1]
        changed = list(meas)
        changed[k] = (meas[k][0], meas[k][1], change(meas[k][2]), meas[k][3])
        x0 = torch.from_numpy(featurize.grids(spec, mean, std, meas, [now]))
        x1 = torch.from_numpy(featurize.grids(spec, mean, std, changed, [now]))
        with torch.no_grad():
            before, after = float(module(x0)), float(module(x1))
            att = module.attribute(x1)[0].numpy()
        sources = featurize.grid_sources(spec, changed, now)
        per = {}
        for t, row in enumerate(sources):
            for fi, rid in enumerate(row):
                if rid is not None:
                    per[rid] = per.get(rid, 0.0) + float(att[t, fi])
        top = max(per, key=per.get)
        good = after > before and top == meas[k][3]
        ok += good
        done += 1
        print(f"  {name} {r['id']}: risk {before:.4f} -> {after:.4f}; top {top} ({per[top]:+.3f})"
              f"{'' if good else '  <-- changed: ' + meas[k][3] + f' ({per.get(meas[k][3], 0):+.3f})'}")
    assert done >= 3, f"{name}: only {done} patients had {feat}"
    # As tests/models/explanations.rs: first for all but at most one patient (a CKD patient's high
    # first creatinine against the ward's may stand out more than a +0.25 mg/dL precursor rise).
    assert ok >= done - 1, f"{name}: the changed observation ranked first for {ok} of {done}"
    print(f"ok: {model_dir}: the changed {feat} ranks first for {ok}/{done} patients")


def autograd_gradient(model, x, mult):
    """The reference `value_gradient` replaced: d(sum_j mult_j s_j)/d(values) by autograd."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad([(model.summaries(xg) * mult).sum()], [xg])
    return g[:, :, :model.c]


def check_value_gradient():
    """The closed-form gradient equals autograd's on grids with ties at the extremes (values on a
    coarse lattice), channels never observed, a min/max window shorter than the grid, and the
    change spans of both settings; eager and TorchScript alike, under no_grad and grad mode."""
    for extreme_hours, change_hours in ((None, (6.0, 24.0)), (12.0, (6.0, 24.0)), (8.0, (24.0, 48.0))):
        steps, c = 48, 5
        model = SummaryModel(steps, 2 * c, 1.0, extreme_hours=extreme_hours, change_hours=change_hours)
        x = random_grid(32, steps, c, seed=11, p_obs=0.25)
        x[:, :, :c] = (x[:, :, :c] * 2).round() / 2  # ties
        x[:3, :, 2] = 0.0
        x[:3, :, c + 2] = 0.0  # channel 2 never observed in three samples
        mult = torch.randn(32, 7 * c, generator=torch.Generator().manual_seed(5))
        want = autograd_gradient(model, x, mult)
        scripted = torch.jit.script(model)
        for name, got in (("eager", model.value_gradient(x, mult)), ("script", scripted.value_gradient(x, mult))):
            err = float((got - want).abs().max())
            assert err < 1e-5, f"{name} value_gradient differs from autograd by {err} (extreme_hours {extreme_hours})"
        with torch.no_grad():
            err = float((scripted.value_gradient(x, mult) - want).abs().max())
        assert err < 1e-5, f"value_gradient under no_grad differs by {err}"
    print("closed-form value gradient = autograd's (3 window settings, ties, unobserved channels)")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(1)
    check_value_gradient()
    check_module()
    for d in argv:
        check_model(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
