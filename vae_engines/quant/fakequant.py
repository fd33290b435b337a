"""INT8 (or FP8) on the float graph without rewriting it: the executor hooks range search,
sensitivity and auto use to try many ranges quickly.

For a set of layers and ranges, `FakeQuant` gives the GraphExecutor a hook per quantized
input that rounds it exactly as the Q/DQ graph's QuantizeLinear -> DequantizeLinear pair
does, and each quantized layer's weight as its DequantizeLinear yields it
(qdq.activation_scale and qdq.quantized_weight are the functions insert_qdq uses), in the
variant's format (qdq.FORMATS). Residual
skip inputs (the fused placement) are rounded the same way. So a score measured here is the
score of the graph quant.qdq would write; a test holds the two equal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vae_engines.core.choices import QuantFormat
from vae_engines.core.lazy import lazy_import
from vae_engines.graph.execute import GraphExecutor, fake_quantize, fake_quantize_fp8
from vae_engines.quant.qdq import Layer, QdqPlan, activation_scale, quantized_weight

torch = lazy_import("torch")


class FakeQuant:
    """Dequantized `fmt` weights of `layers` (computed once) and hooks for any ranges."""

    def __init__(self, executor: GraphExecutor, layers: list[Layer], fmt: QuantFormat = QuantFormat.INT8) -> None:
        self.executor = executor
        self.fmt = QuantFormat(fmt)
        self.layers = {layer.name: layer for layer in layers}
        self.weights: dict[str, Any] = {}
        for layer in layers:
            w = executor.values[layer.weight].float().cpu().numpy()
            q, scale = quantized_weight(w, layer.axis, fmt=self.fmt)
            shape = [1] * w.ndim
            shape[layer.axis] = -1
            deq = torch.from_numpy(q.astype(np.float32)) * torch.from_numpy(scale.astype(np.float32)).reshape(shape)
            self.weights[layer.name] = deq.to(executor.device)

    def activation_hook(self, amax: float) -> Any:
        scale = torch.tensor(float(activation_scale(amax, fmt=self.fmt)), dtype=torch.float32,
                             device=self.executor.device)
        rounding = fake_quantize_fp8 if self.fmt == QuantFormat.FP8 else fake_quantize

        def hook(x: Any) -> Any:
            return rounding(x, scale).to(x.dtype)
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
