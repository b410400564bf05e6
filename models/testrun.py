"""The runner of the Python self-test modules (`python -m models.<...>.test_*`), one copy.

Why: the Rust test suite runs these modules and looks for their "ok: <label>" line; every module
runs its `test_*` functions the same way, in name order, on one torch thread.
"""
from __future__ import annotations


def run(namespace: dict, label: str) -> int:
    """Runs every callable `test_*` in `namespace` (a module's globals()) in name order, printing
    "<name>: ok" for each and "ok: <label>" at the end; an assertion stops the run."""
    import torch

    torch.set_num_threads(1)
    for name, fn in sorted(namespace.items()):
        if name.startswith("test_") and callable(fn):
            fn()
            print(f"{name}: ok")
    print(f"ok: {label}")
    return 0
