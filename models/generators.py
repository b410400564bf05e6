"""Named synthetic-patient generators, imported lazily.

    from models import generators
    patients = generators.load("cohort", n=300, seed=1)          # models/cohort/generate.py
    patients = generators.load("ward", n=300, seed=1, site="b")  # models/ward/ (second, independent)

Every generator returns the same patient dicts as ``models.cohort.generate.generate``: id, bundle
(FHIR R4 Bundle), admit, discharge (aware UTC datetimes), age, sex, ckd, copd, hypercapnic,
beta_blocker, unit, onsets {deterioration, sepsis, aki: datetime | None}, split (train/valid/test).
Training on one generator and testing on another is the cheapest check that a model learned the
disease rather than one simulator's habits (``python -m models.evaluate <model> --test-gen ward``).
"""
from __future__ import annotations

import importlib

# name -> modules tried in order; the first that imports and has a callable `generate` is used.
GENERATORS = {
    "cohort": ("models.cohort.generate",),
    "ward": ("models.ward.generate", "models.ward"),
}

REQUIRED_KEYS = ("id", "bundle", "admit", "discharge", "age", "sex", "ckd", "copd", "hypercapnic",
                 "beta_blocker", "unit", "onsets", "split")


class GeneratorUnavailable(RuntimeError):
    pass


def generate_fn(name: str):
    """The generator's ``generate(n, seed, site=None)`` function (imported on first use)."""
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; known: {', '.join(sorted(GENERATORS))}")
    errors = []
    for mod in GENERATORS[name]:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and (mod == e.name or mod.startswith(e.name + ".")):
                errors.append(f"{mod}: not in this checkout")
                continue
            raise
        fn = getattr(m, "generate", None)
        if callable(fn):
            return fn
        errors.append(f"{mod}: has no generate(n, seed, site=None)")
    raise GeneratorUnavailable(
        f"generator {name!r} is not available ({'; '.join(errors)}). "
        f"It must provide generate(n, seed, site=None) returning the patient dicts of models.cohort.generate.")


def load(name: str, n: int, seed: int, site=None, notes: bool | dict = False) -> list[dict]:
    """n patients from generator ``name`` with ``seed`` (and ``site`` where the generator has sites);
    ``notes`` adds nursing notes (DocumentReference) where the generator can write them (a dict: options
    of models.notes.writer.write_notes)."""
    fn = generate_fn(name)
    kw = {"notes": notes} if notes else {}
    patients = fn(n, seed, **kw) if site is None else fn(n, seed, site=site, **kw)
    for p in patients[:1]:
        missing = [k for k in REQUIRED_KEYS if k not in p]
        if missing:
            raise ValueError(f"generator {name!r} returned patients without {', '.join(missing)}")
    return patients
