"""An MLServer custom runtime that serves a bedside TorchScript model over the Open Inference Protocol.

MLServer (Seldon, PyPI `mlserver`) is an inference engine a hospital may already run; with this runtime it
serves the same `model.pt` files the gateway loads, and bedside's `[remote]` backend scores through it
(`tests/models/mlserver.rs`). `python -m models.serving.repository --mlserver DIR` writes the model
repository (`settings.json`, one `model-settings.json` per model version) that points here.

One input `INPUT__0` FP32 `[batch, steps, channels]` (the manifest's `[input] shape`), one output
`OUTPUT__0` FP32 `[batch, 1]`: the calibrated probability, exactly what `forward` returns in the gateway.

For fault tests only, `parameters.extra` may ask the runtime to misbehave: `delay_s` (answer late),
`fail` (raise: MLServer answers 500), `wrong_shape` (answer `[batch, 2]`).
"""
from __future__ import annotations

import asyncio

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

INPUT_NAME = "INPUT__0"
OUTPUT_NAME = "OUTPUT__0"


class TorchScriptRuntime(MLModel):
    """Loads `parameters.uri` with `torch.jit.load` on CPU, one thread, and runs its `forward`."""

    async def load(self) -> bool:
        torch.set_num_threads(1)
        self._model = torch.jit.load(self.settings.parameters.uri, map_location="cpu")
        self._model.eval()
        extra = self.settings.parameters.extra or {}
        self._delay_s = float(extra.get("delay_s", 0))
        self._fail = bool(extra.get("fail", False))
        self._wrong_shape = bool(extra.get("wrong_shape", False))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        if self._fail:
            raise RuntimeError("fault injected (parameters.extra.fail)")
        [tensor] = [i for i in payload.inputs if i.name == INPUT_NAME]
        x = NumpyCodec.decode_input(tensor).astype(np.float32, copy=False)
        with torch.inference_mode():
            y = self._model(torch.from_numpy(np.ascontiguousarray(x))).reshape(-1, 1).numpy()
        if self._wrong_shape:
            y = np.concatenate([y, y], axis=1)
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output(OUTPUT_NAME, y)])
