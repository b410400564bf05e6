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
import os
import subprocess
import sys
import tempfile
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=3000, help="training patients")
    ap.add_argument("--test-n", type=int, default=1500, help="test patients of the other generator")
    ap.add_argument("--reps", type=int, default=100, help="bootstrap resamples")
    args = ap.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
