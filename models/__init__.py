"""bedside's Python side: training, evaluation and the reference halves of the Rust/Python parity tests.

Why a package: two training pipelines used to share their helpers by copying them (and importing one
another through ``sys.path`` edits), and the copies had drifted. Each shared piece now exists once:

* ``models.calibration`` -- temperature scaling (fit on the validation split, NLL)
* ``models.torchscript`` -- the deterministic TorchScript save (and the fixed hash seed it needs)
* ``models.fhir_time``   -- FHIR ``instant`` / ``dateTime`` -> point in time, as ``src/fhir/time.rs``
* ``models.evaluation``  -- every metric on the model cards (AUROC, AUPRC, ECE, Brier, ...)
* ``models.baselines``   -- NEWS2, qSOFA, SIRS, KDIGO, as ``src/features/`` scores them
* ``models.featurize``   -- a model's ``features.toml`` -> tensors, as ``src/features/`` builds them
* ``models.dataset``, ``models.train``, ``models.evaluate`` -- the training pipeline (v2)
* ``models.cohort``      -- the synthetic cohort generator
* ``models.legacy.deterioration_v1`` -- the frozen pipeline of ``deterioration`` 1.0.0

Run from the repository root: ``python -m models.evaluate sepsis``. The scripts the Rust tests run by
path (``models/train.py``, ``models/featurize.py``, ``models/baselines.py``,
``models/test_evaluation.py``, ``models/cohort/{generate,selftest}.py``) also work as files.
"""
