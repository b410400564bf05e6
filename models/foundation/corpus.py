"""The pretraining corpus as a MEDS 0.4 dataset: every coded event of synthetic patients.

    python -m models.foundation.corpus --generator cohort --n 2000 --seed 7 --out /tmp/meds-cohort

writes ``data/data.parquet`` (``subject_id``, ``time``, ``code``, ``numeric_value``, ``text_value``,
validated against ``meds.DataSchema``), ``metadata/codes.parquet``, ``metadata/subject_splits.parquet``
(``train`` / ``tuning`` / ``held_out`` from the generator's own split) and ``metadata/dataset.json``.
Events come from each patient's FHIR Bundle through ``tokenizer.events_of_bundle`` — the same reading
the gateway applies to an EHR's Bundle — so a site can build the same corpus from its own MEDS export.

Outcomes are events too, ``OUTCOME//<task>`` at the recorded onset (labels read from the chart, as
``models/labels.py`` defines them) and ``OUTCOME//END`` at the end of the stay; pretraining uses them as
time-to-event targets and never as input tokens.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models import generators  # noqa: E402
from models.foundation import tokenizer  # noqa: E402

TASKS = ("deterioration", "sepsis", "aki")
OUTCOME_PREFIX = "OUTCOME//"
END = OUTCOME_PREFIX + "END"
SPLITS = {"train": "train", "valid": "tuning", "test": "held_out"}


def patient_events(spec, p) -> list[dict]:
    """A generated patient's MEDS events, outcomes included."""
    events, _dropped = tokenizer.events_of_bundle(spec, p["bundle"])
    for task in TASKS:
        onset = (p.get("onsets") or {}).get(task)
        if onset is not None:
            events.append(tokenizer.meds_event(onset.timestamp(), OUTCOME_PREFIX + task))
    events.append(tokenizer.meds_event(p["discharge"].timestamp(), END))
    return events


def records(generator: str, n: int, seed: int, site=None) -> list[dict]:
    """[{subject_id, split, events}] for ``n`` patients of ``generator``."""
    spec = tokenizer.load_spec()
    out = []
    for i, p in enumerate(generators.load(generator, n=n, seed=seed, site=site)):
        out.append({"subject_id": i + 1, "split": SPLITS.get(p["split"], "train"), "events": patient_events(spec, p)})
    return out


def _when(seconds):
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)


def write(recs: list[dict], out: str, name: str) -> dict:
    """Writes ``recs`` as a MEDS dataset under ``out``; returns a summary."""
    import meds
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"subject_id": [], "time": [], "code": [], "numeric_value": [], "text_value": []}
    for r in recs:
        events = sorted(r["events"], key=lambda e: (e["time"] is not None, e["time"] or 0.0, e["code"]))
        for e in events:
            rows["subject_id"].append(r["subject_id"])
            rows["time"].append(_when(e["time"]))
            rows["code"].append(e["code"])
            rows["numeric_value"].append(e["numeric_value"])
            rows["text_value"].append(e["text_value"])
    data = pa.Table.from_pydict(rows, schema=meds.DataSchema.schema())
    meds.DataSchema.validate(data)
    os.makedirs(os.path.join(out, meds.data_subdirectory), exist_ok=True)
    os.makedirs(os.path.join(out, "metadata"), exist_ok=True)
    pq.write_table(data, os.path.join(out, meds.data_subdirectory, "data.parquet"))
    codes = sorted(set(rows["code"]))
    code_table = pa.Table.from_pydict(
        {"code": codes, "description": [None] * len(codes), "parent_codes": [[] for _ in codes]},
        schema=meds.CodeMetadataSchema.schema())
    pq.write_table(code_table, os.path.join(out, meds.code_metadata_filepath))
    splits = pa.Table.from_pydict({"subject_id": [r["subject_id"] for r in recs], "split": [r["split"] for r in recs]},
                                  schema=meds.SubjectSplitSchema.schema())
    pq.write_table(splits, os.path.join(out, meds.subject_splits_filepath))
    metadata = {"dataset_name": name, "dataset_version": "1", "etl_name": "bedside models/foundation/corpus.py",
                "etl_version": "1", "meds_version": meds.__version__,
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    meds.DatasetMetadataSchema.validate(metadata)
    with open(os.path.join(out, meds.dataset_metadata_filepath), "w") as f:
        json.dump(metadata, f, indent=1)
    return {"subjects": len(recs), "events": len(rows["code"]), "codes": len(codes)}


def read(root: str) -> list[dict]:
    """A MEDS dataset (this module's or a site's export) as [{subject_id, split, events}]."""
    import meds
    import pyarrow.parquet as pq

    split_of = {}
    path = os.path.join(root, meds.subject_splits_filepath)
    if os.path.exists(path):
        for row in pq.read_table(path).to_pylist():
            split_of[row["subject_id"]] = row["split"]
    by_subject: dict[int, list[dict]] = {}
    data_dir = os.path.join(root, meds.data_subdirectory)
    for name in sorted(os.listdir(data_dir)):
        if not name.endswith(".parquet"):
            continue
        table = pq.read_table(os.path.join(data_dir, name), columns=["subject_id", "time", "code",
                                                                    "numeric_value", "text_value"])
        cols = table.to_pydict()
        for sid, t, code, v, text in zip(cols["subject_id"], cols["time"], cols["code"], cols["numeric_value"],
                                          cols["text_value"]):
            seconds = None if t is None else t.replace(tzinfo=dt.timezone.utc).timestamp()
            by_subject.setdefault(sid, []).append({"time": seconds, "code": code, "numeric_value": v,
                                                   "text_value": text})
    return [{"subject_id": s, "split": split_of.get(s, "train"), "events": ev} for s, ev in sorted(by_subject.items())]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generator", default="cohort")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    summary = write(records(a.generator, a.n, a.seed), a.out, f"bedside synthetic ({a.generator})")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
