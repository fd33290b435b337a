"""INT8 on the float graph without rewriting it: the executor hooks range search and
sensitivity use to try many ranges quickly.

For a set of layers and ranges, `FakeQuant` gives the GraphExecutor a hook per layer that
quantizes the convolution's input exactly as the Q/DQ graph's QuantizeLinear ->
DequantizeLinear pair does, and the layer's weight as its int8 DequantizeLinear yields it
(qdq.activation_scale and qdq.int8_weight are the same functions insert_qdq uses). So a
score measured here is the score of the graph quant.qdq would write; a test holds the two
equal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vae_engines.graph.execute import fake_quantize
from vae_engines.quant.qdq import Layer, activation_scale, int8_weight


class FakeQuant:
    """Dequantized int8 weights of `layers` (computed once) and hooks for any ranges."""

    def __init__(self, executor: Any, layers: list[Layer]) -> None:
        import torch
        from onnx import numpy_helper  # noqa: F401  (weights come from the executor's initializers)

        self.executor = executor
        self.layers = {layer.name: layer for layer in layers}
        self.weights: dict[str, Any] = {}
        for layer in layers:
            w = executor.values[layer.weight].float().cpu().numpy()
            q, scale = int8_weight(w, layer.axis)
            shape = [1] * w.ndim
            shape[layer.axis] = -1
            deq = torch.from_numpy(q.astype(np.float32)) * torch.from_numpy(scale.astype(np.float32)).reshape(shape)
            self.weights[layer.name] = deq.to(executor.device)

    def activation_hook(self, amax: float):
        import torch

        scale = torch.tensor(float(activation_scale(amax)), dtype=torch.float32, device=self.executor.device)

        def hook(x):
            return fake_quantize(x, scale).to(x.dtype)
        return hook

    def overrides(self, amax_by_layer: dict[str, float]) -> dict[str, dict]:
        """Executor keyword arguments quantizing the named layers with the given input ranges."""
        hooks, weights = {}, {}
        for name, amax in amax_by_layer.items():
            layer = self.layers[name]
            hooks[layer.node] = self.activation_hook(amax)
            weights[layer.node] = self.weights[name]
        return {"conv_hooks": hooks, "conv_weights": weights}
