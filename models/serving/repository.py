"""Model repositories for inference engines that are not bedside, written from the manifests.

    python -m models.serving.repository --models models --mlserver serving/mlserver [--http-port 8080]
    python -m models.serving.repository --models models --triton serving/triton

MLServer (run here, `tests/models/mlserver.rs`): `settings.json` and, per model version, a folder with
`model-settings.json` naming `models.serving.mlserver_runtime.TorchScriptRuntime`, the version's `model.pt`
(by absolute path), its input `INPUT__0` FP32 `[-1, steps, channels]` and output `OUTPUT__0` FP32 `[-1, 1]`.
Start it from the repository root (`PYTHONPATH=. mlserver start serving/mlserver`); a manifest's `[remote]
url` then points at it (`model` = the folder name, `<name>-<version>`).

Triton (NOT run here -- no Triton server can be installed on this machine; the files follow Triton's
model-configuration documentation): per model version a Triton model `<name>-<version>` (versions of one
model may differ in input shape, which one Triton model cannot) with `config.pbtxt` (`platform:
"pytorch_libtorch"`, `INPUT__0` / `OUTPUT__0` with the manifest's dims, `max_batch_size`,
`dynamic_batching`) and its `model.pt` in version folder `1`.
Retired versions are left out of both.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tomllib

#: Largest batch a Triton model accepts (bedside batches at most this many calls).
MAX_BATCH = 64


def manifests(root: str):
    """(model, version, folder, manifest) of every non-retired local version, sorted."""
    out = []
    for model in sorted(os.listdir(root)):
        for version in sorted(os.listdir(os.path.join(root, model)) if os.path.isdir(os.path.join(root, model)) else []):
            folder = os.path.join(root, model, version)
            path = os.path.join(folder, "manifest.toml")
            if not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                m = tomllib.load(f)
            if m.get("status") == "retired" or "remote" in m:
                continue
            out.append((model, version, os.path.abspath(folder), m))
    return out


def mlserver(root: str, out: str, http_port: int, grpc_port: int, metrics_port: int) -> list[str]:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "settings.json"), "w") as f:
        json.dump({"debug": False, "host": "127.0.0.1", "parallel_workers": 0, "http_port": http_port, "grpc_port": grpc_port,
                   "metrics_port": metrics_port, "load_models_at_startup": True}, f, indent=2)
    names = []
    for model, version, folder, m in manifests(root):
        steps, channels = m["input"]["shape"]
        name = f"{model}-{version}"
        os.makedirs(os.path.join(out, name), exist_ok=True)
        settings = {
            "name": name,
            "implementation": "models.serving.mlserver_runtime.TorchScriptRuntime",
            "parameters": {"uri": os.path.join(folder, m.get("file", "model.pt")), "version": version},
            "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, steps, channels]}],
            "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 1]}],
        }
        with open(os.path.join(out, name, "model-settings.json"), "w") as f:
            json.dump(settings, f, indent=2)
        names.append(name)
    return names


def triton(root: str, out: str) -> list[str]:
    names = []
    for model, version, folder, m in manifests(root):
        steps, channels = m["input"]["shape"]
        name = f"{model}-{version}"
        target = os.path.join(out, name)
        os.makedirs(os.path.join(target, "1"), exist_ok=True)
        shutil.copyfile(os.path.join(folder, m.get("file", "model.pt")), os.path.join(target, "1", "model.pt"))
        config = f'''# bedside {model} {version} ({m.get("arch", "model")}), written by models/serving/repository.py
name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: {MAX_BATCH}
input [
  {{
    name: "INPUT__0"
    data_type: TYPE_FP32
    dims: [ {steps}, {channels} ]
  }}
]
output [
  {{
    name: "OUTPUT__0"
    data_type: TYPE_FP32
    dims: [ 1 ]
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: 2000
}}
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
'''
        with open(os.path.join(target, "config.pbtxt"), "w") as f:
            f.write(config)
        names.append(name)
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="models")
    ap.add_argument("--mlserver", help="write an MLServer model repository here")
    ap.add_argument("--triton", help="write a Triton model repository here")
    ap.add_argument("--http-port", type=int, default=8080)
    ap.add_argument("--grpc-port", type=int, default=8081)
    ap.add_argument("--metrics-port", type=int, default=8082)
    args = ap.parse_args(argv)
    if not (args.mlserver or args.triton):
        raise SystemExit("give --mlserver DIR and/or --triton DIR")
    if args.mlserver:
        names = mlserver(args.models, args.mlserver, args.http_port, args.grpc_port, args.metrics_port)
        print(f"MLServer repository {args.mlserver}: {', '.join(names)}")
    if args.triton:
        names = triton(args.models, args.triton)
        print(f"Triton repository {args.triton} (not run here): {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
