"""Train the shipped recipe on one generator and test it on the other, both directions.

    .venv/bin/python -m models.crossgen <model> [--n 3000] [--test-n 1500]

For each direction (cohort -> ward, ward -> cohort) this trains the model's `train.toml` recipe on
the training generator alone (`train.py --train-gen G --no-evaluate`, into a scratch folder) and
evaluates it on every patient of the other generator (`evaluate.py --test-gen`), writing
`evaluation.json`, the plots and `MODEL_CARD.md` of that run to
`models/<model>/<version>/crossgen/<train>-to-<test>/`. The shipped model is trained on both
generators (`train.py --train-gen both`); these two runs are the estimate of how the same recipe
does on a hospital it never saw, and the model card's targets are read from them.
Synthetic data only: third-party hospital simulators are not used here (they are kept for
external validation).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


MARK_BEGIN = "<!-- crossgen: written by models/crossgen.py -->"
MARK_END = "<!-- /crossgen -->"


def _ci(v) -> str:
    return f"{v[0]:+.3f} to {v[1]:+.3f}"


def summary(model: str, version: str) -> str:
    """The model card section: the recipe trained on one generator, tested on the other."""
    dest = os.path.join(HERE, model, version, "crossgen")
    lines = [MARK_BEGIN, "## On the generator it was not trained on (the same recipe, both directions)", "",
             "The shipped model is trained on both synthetic generators (`models/cohort`, `models/ward`: "
             "independent physiology, observation policy, codes and units). How the same recipe does on a "
             "hospital it never saw is estimated by training it on one generator alone and testing it on every "
             "patient of the other (`python -m models.crossgen " + model + "`); full results in `crossgen/`. "
             "Synthetic data only: these say how the recipe transfers between simulators, not to real patients.", "",
             "| train → test | AUROC (95 % CI) | best comparator: AUROC, model − it (paired 95 % CI) | NEWS2: model − it | "
             "abstained | calibration slope / intercept | O/E in the alerting band | cards (service: per caught event, "
             "sensitivity, median lead) |",
             "|---|---|---|---|---|---|---|---|"]
    targets = []
    for direction in ("cohort-to-ward", "ward-to-cohort"):
        path = os.path.join(dest, direction, "evaluation.json")
        if not os.path.exists(path):
            lines.append(f"| {direction} | not run | | | | | | |")
            continue
        with open(path) as f:
            d = json.load(f)
        a = d["all_requests"]
        m = a["scorers"]["model"]
        diffs = {k: v for k, v in a["differences"].items() if k != "ctl_values_only"}
        best = max(diffs, key=lambda k: a["scorers"][k]["auroc"])
        news2 = a["differences"].get("news2")
        cal = d["calibration"]["model"] or {}
        cards = "; ".join(
            f"{c['service']}: {c['cards_per_tp']:.1f}, {c['sensitivity_per_event']:.2f}, "
            f"{(c['median_lead_hours'] or float('nan')):.1f} h"
            for c in d["cards"] if c["scorer"] == "model")
        lines.append(
            f"| {direction.replace('-to-', ' → ')} | {m['auroc']:.3f} ({m['auroc_ci'][0]:.3f}–{m['auroc_ci'][1]:.3f}) | "
            f"{best} {a['scorers'][best]['auroc']:.3f}, {diffs[best]['auroc']:+.3f} ({_ci(diffs[best]['auroc_ci'])}) | "
            + (f"{news2['auroc']:+.3f} ({_ci(news2['auroc_ci'])})" if news2 else "—")
            + f" | {d['abstention']['rate']:.1%} | "
            f"{cal.get('slope', float('nan')):.2f} / {cal.get('intercept', float('nan')):.2f} | "
            f"{(cal.get('oe_alerting_band') or {}).get('o_e') or float('nan'):.2f} | {cards} |")
        for t in d["targets"]:
            targets.append(f"- {direction.replace('-to-', ' → ')}: {'met' if t['met'] else '**missed**'}: "
                           f"{t['target']}: {t['value']}")
    lines += ["", "Targets (issue 21), read from these runs — misses are misses:", ""] + targets + ["", MARK_END]
    return "\n".join(lines)


def write_summary(model: str) -> None:
    with open(os.path.join(HERE, model, "train.toml"), "rb") as f:
        version = tomllib.load(f)["version"]
    card_path = os.path.join(HERE, model, version, "MODEL_CARD.md")
    with open(card_path) as f:
        card = f.read()
    if MARK_BEGIN in card:
        card = (card[:card.index(MARK_BEGIN)].rstrip() + "\n\n"
                + card[card.index(MARK_END) + len(MARK_END):].lstrip("\n"))
    section = summary(model, version)
    marker = "\n## Reproduce"
    if marker in card:  # one blank line on each side of the section, however often it is rewritten
        i = card.index(marker)
        card = card[:i].rstrip() + "\n\n" + section + "\n" + card[i:]
    else:
        card = card.rstrip() + "\n\n" + section + "\n"
    with open(card_path, "w") as f:
        f.write(card)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=3000, help="training patients")
    ap.add_argument("--test-n", type=int, default=1500, help="test patients of the other generator")
    ap.add_argument("--reps", type=int, default=100, help="bootstrap resamples")
    ap.add_argument("--summary-only", action="store_true",
                    help="only (re)write the model card section from the runs already in crossgen/")
    args = ap.parse_args(argv)
    if args.summary_only:
        write_summary(args.model)
        return 0
    with open(os.path.join(HERE, args.model, "train.toml"), "rb") as f:
        version = tomllib.load(f)["version"]
    dest = os.path.join(HERE, args.model, version, "crossgen")
    py = sys.executable
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for train, test in (("cohort", "ward"), ("ward", "cohort")):
        with tempfile.TemporaryDirectory() as scratch:
            model_dir = os.path.join(scratch, "model")
            subprocess.run([py, os.path.join(HERE, "train.py"), args.model, "--train-gen", train, "--n", str(args.n),
                            "--out", model_dir, "--no-evaluate", "--compare"], check=True, cwd=ROOT, env=env)
            out = os.path.join(dest, f"{train}-to-{test}")
            subprocess.run([py, "-m", "models.evaluate", args.model, "--model-dir", model_dir, "--train-gen", train,
                            "--test-gen", test, "--n", str(args.test_n), "--reps", str(args.reps), "--out", out],
                           check=True, cwd=ROOT, env=env)
    write_summary(args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
