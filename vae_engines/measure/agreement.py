"""Where an INT8 engine and its variant's Q/DQ graph part, layer by layer, on the same latents.

Three decodes of each latent set: the fp32 graph (the reference), the variant's Q/DQ graph
(what TensorRT would build; the variant's simulated figure comes from it) and the variant's
INT8 engine module (model.fused.FusedDecoder with compiled.int8's layers: what
compile_int8 packages, with the tune stage's tiles on a GPU). At every convolution's input:

- the calibrated range of that input (its int8 scale's amax), the largest |x| the fp32
  decode put there (range_ratio: against 127.5 steps of the scale, where rounding turns
  into saturation; an fp8 variant's, 464: half of e4m3's top step beyond 448), and the share
  of values beyond that: saturation clips them, in the graph and the engine alike;
- the peak PSNR of the graph's and of the engine's input against fp32's, and of the
  engine's against the graph's.

`parted_at` is the first layer where the engine is further from the graph than the graph is
from fp32 by more than PART_DB: a defect of the engine (its scales, kernels or placement)
shows there. `clipped_at` is the first int8 layer whose input saturates beyond CLIP_SHARE
of its values: a latent outside what the variant was calibrated for shows there, in both.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.compiled.int8 import variant_quant
from vae_engines.core.choices import FP8_MAX
from vae_engines.core.lazy import lazy_import
from vae_engines.graph.execute import GraphExecutor
from vae_engines.graph.io import load_onnx
from vae_engines.metrics import peak_psnr
from vae_engines.model.fused import FusedDecoder
from vae_engines.quant.qdq import Layer, quantizable_layers

torch = lazy_import("torch")
log = logging.getLogger(__name__)

PART_DB = 6.0  # the engine "parts" from the graph where it is this much further from it than the graph is from fp32
CLIP_SHARE = 1e-3  # an int8 input "clips" where more than this share of its fp32 values lies beyond its range


def _capture(executor: GraphExecutor, latents: np.ndarray, names: dict[str, str]) -> tuple[dict[str, Any], Any]:
    """(layer -> that layer's input [B, C, T] as float32, the output) of one graph decode;
    names: tensor name -> layer."""
    seen: dict[str, Any] = {}

    def observe(name: str, tensor: Any) -> None:
        if name in names:
            seen[names[name]] = tensor.float().clone()
    with torch.inference_mode():
        out = executor.run_from(executor.feed(latents), 0, observe=observe)[executor.output_name]
    return seen, out.float()


def _db(ref: Any, out: Any) -> float:
    return round(peak_psnr(ref, out), 2)


def compare_latents(fp32: GraphExecutor, layers: list[Layer], variant: GraphExecutor, engine: Any, record: dict,
                    latents: np.ndarray) -> dict:
    """The per-layer comparison (module docstring) of one latent set [N, C, T]; layers: the
    fp32 graph's (quant.qdq.quantizable_layers)."""
    by_node = {n.name: n for n in variant.nodes}
    amax = record["amax"]
    int8 = {layer["name"]: layer for layer in record["layers"] if layer["int8"]}
    ref, ref_out = _capture(fp32, latents, {layer.activation: layer.name for layer in layers})
    graph, graph_out = _capture(variant, latents, {by_node[layer.node].inputs[0]: layer.name for layer in layers})
    rows: dict[str, dict] = {}

    def observe(module: Any, args: tuple) -> None:
        x = args[0]
        x = x.float() * module.x_scale if x.dtype in (torch.int8, torch.float8_e4m3fn) else x.float()
        name = module.spec.name
        mine, a, g = x.transpose(1, 2).to(ref[name].device), ref[name], graph[name]
        row = {"layer": name, "int8": name in int8, "fp32_absmax": round(float(a.abs().max()), 6)}
        if name in int8:  # saturated: half a step beyond the largest code, 127.5 scales for int8, 464 for
            # fp8 (e4m3's top steps are 32 apart): beyond that the saturation, not the rounding, sets the error
            limit = (FP8_MAX + 16 if module.weight.dtype == torch.float8_e4m3fn else 127.5) * module.x_scale
            row.update(amax=round(float(amax[int8[name]["input"]]), 6), range_ratio=round(row["fp32_absmax"] / limit, 3),
                       clipped_share=float((a.abs() > limit).float().mean()))
        row.update(graph_vs_fp32_db=_db(a, g), engine_vs_fp32_db=_db(a, mine), engine_vs_graph_db=_db(g, mine))
        rows[name] = row
    hooks = [layer.register_forward_pre_hook(observe) for layer in engine.layers]
    try:
        with torch.inference_mode():
            latent = torch.from_numpy(np.ascontiguousarray(latents)).to(next(engine.buffers()).device)
            engine_out = engine(latent).float()
    finally:
        for hook in hooks:
            hook.remove()
    ordered = [rows[layer.spec.name] for layer in engine.layers]
    ref_out, graph_out, engine_out = (t.to(ref_out.device) for t in (ref_out, graph_out, engine_out))
    parted = next((r["layer"] for r in ordered if r["engine_vs_graph_db"] < r["graph_vs_fp32_db"] - PART_DB), None)
    clipped = next((r["layer"] for r in ordered if r.get("clipped_share", 0.0) > CLIP_SHARE), None)
    return {"latents": list(latents.shape), "latent_absmax": round(float(np.abs(latents).max()), 6),
            "latent_std": round(float(latents.std()), 6),
            "output": {"graph_vs_fp32_db": _db(ref_out, graph_out), "engine_vs_fp32_db": _db(ref_out, engine_out),
                       "engine_vs_graph_db": _db(graph_out, engine_out)},
            "parted_at": parted, "clipped_at": clipped, "layers": ordered}


def fp32_graph(fp32_onnx: str | Path, device: Any) -> tuple[GraphExecutor, list[Layer]]:
    """The fp32 graph's executor and its quantizable layers (once for several variants)."""
    model = load_onnx(fp32_onnx)
    return GraphExecutor(model, device), quantizable_layers(model)


def int8_agreement(decoder: Any, fp32: tuple[GraphExecutor, list[Layer]], variant_onnx: str | Path, record: dict,
                   latent_sets: dict[str, np.ndarray], *, device: Any, tiles: dict[str, list[int]] | None = None
                   ) -> dict:
    """compare_latents for each named latent set, for the INT8 variant whose ranges record is
    `record` (engines/onnx/<variant>.ranges.json) and whose Q/DQ graph is `variant_onnx`.

    decoder: the folded decoder (model.oobleck.fold_decoder); fp32: fp32_graph's; tiles: each
    layer's fused kernel tile (compiled.tune.tiles_for; None: the torch reference, as on a CPU)."""
    fp32, layers = fp32
    variant = GraphExecutor(load_onnx(variant_onnx), device)
    engine = FusedDecoder(decoder, variant_quant(decoder, record), tiles).to(device).eval()
    out = {"variant": record.get("variant"), "device": str(device), "part_db": PART_DB, "clip_share": CLIP_SHARE,
           "executed": {"graph": variant.describe(), "engine": "model.fused.FusedDecoder (eager) with the variant's "
                        f"{record.get('format', 'int8')} layers; "
                        + ("Triton kernels, the tune stage's tiles" if tiles else "the fused op's torch reference")},
           "sets": {}}
    for name, latents in latent_sets.items():
        log.info("agreement of %s on %s %s", record.get("variant"), name, latents.shape)
        out["sets"][name] = compare_latents(fp32, layers, variant, engine, record, latents)
    return out


def agreement_markdown(result: dict) -> list[str]:
    """The comparison as Markdown: one summary line per latent set, then its layers."""
    out = [f"### `{result['variant']}` on {result['device']}", "",
           f"Engine: {result['executed']['engine']}. Graph: {result['executed']['graph'].get('runtime')} "
           f"({result['executed']['graph'].get('fp16')}).", ""]
    for name, s in result["sets"].items():
        o = s["output"]
        out += [f"**{name}** ({s['latents'][0]} x {s['latents'][2]} frames, latent std {s['latent_std']:.4f}, "
                f"max |x| {s['latent_absmax']:.4f}): output graph vs fp32 {o['graph_vs_fp32_db']:.1f} dB, engine vs "
                f"fp32 {o['engine_vs_fp32_db']:.1f} dB, engine vs graph {o['engine_vs_graph_db']:.1f} dB; "
                f"first clipped int8 input: {s['clipped_at'] or 'none'}; engine parts from the graph at: "
                f"{s['parted_at'] or 'no layer'}.", "",
                "| layer | int8 | range (amax) | fp32 max abs x | beyond range | graph vs fp32 dB | engine vs fp32 dB "
                "| engine vs graph dB |", "|---|---|---|---|---|---|---|---|"]
        for r in s["layers"]:
            beyond = "-" if "clipped_share" not in r else f"{r['clipped_share']:.2%} ({r['range_ratio']:.2f}x)"
            out.append(f"| {r['layer']} | {'yes' if r['int8'] else 'no'} | {r.get('amax', '-')} | {r['fp32_absmax']} | "
                       f"{beyond} | {r['graph_vs_fp32_db']:.1f} | {r['engine_vs_fp32_db']:.1f} | "
                       f"{r['engine_vs_graph_db']:.1f} |")
        out.append("")
    return out
