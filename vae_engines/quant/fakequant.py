"""INT8 on the float graph without rewriting it: the executor hooks range search,
sensitivity and auto use to try many ranges quickly.

For a set of layers and ranges, `FakeQuant` gives the GraphExecutor a hook per quantized
input that rounds it exactly as the Q/DQ graph's QuantizeLinear -> DequantizeLinear pair
does, and each quantized layer's weight as its int8 DequantizeLinear yields it
(qdq.activation_scale and qdq.int8_weight are the functions insert_qdq uses). Residual
skip inputs (the fused placement) are rounded the same way. So a score measured here is the
score of the graph quant.qdq would write; a test holds the two equal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vae_engines.core.lazy import lazy_import
from vae_engines.graph.execute import GraphExecutor, fake_quantize
from vae_engines.quant.qdq import Layer, QdqPlan, activation_scale, int8_weight

torch = lazy_import("torch")


class FakeQuant:
    """Dequantized int8 weights of `layers` (computed once) and hooks for any ranges."""

    def __init__(self, executor: GraphExecutor, layers: list[Layer]) -> None:
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

    def activation_hook(self, amax: float) -> Any:
        scale = torch.tensor(float(activation_scale(amax)), dtype=torch.float32, device=self.executor.device)

        def hook(x: Any) -> Any:
            return fake_quantize(x, scale).to(x.dtype)
        return hook

    def overrides(self, amax_by_layer: dict[str, float], skip_amax: dict[str, float] | None = None) -> dict:
        """Executor keyword arguments quantizing the named layers' inputs and weights with
        the given input ranges, and (skip_amax: layer name -> range) their residual skips."""
        hooks, weights = {}, {}
        for name, amax in amax_by_layer.items():
            layer = self.layers[name]
            hooks[(layer.node, 0)] = self.activation_hook(amax)
            weights[layer.node] = self.weights[name]
        for name, amax in (skip_amax or {}).items():
            skip = self.layers[name].skip
            hooks[(skip.node, skip.index)] = self.activation_hook(amax)
        return {"input_hooks": hooks, "weights": weights}

    def plan_overrides(self, plan: QdqPlan, amax: dict[str, float]) -> dict:
        """overrides() for a placement's plan and per-tensor ranges."""
        return self.overrides({l.name: amax[l.activation] for l in plan.layers},
                              {l.name: amax[l.skip.tensor] for l in plan.skips})
