"""Cross-layer equalization through Snake: per-channel scales moved, exactly, from one
convolution's output channels into the next one's input channels, folded into the fp32
graph before Q/DQ.

Why: activations are quantized per tensor, weights per output channel. A channel whose
range is a few times smaller than its tensor's largest uses a few of int8's levels; scaling
that channel up (and the weights that read it down by the same factor) spends the levels
evenly, and the per-channel weight scales absorb the difference (Nagel et al. 2019,
"Data-Free Quantization", cross-layer equalization; SmoothQuant's migration for the choice).
Toolkits stop at the activation between two convolutions (AIMET's CLE changed no weight
here); in this decoder that activation is Snake, which is scale-equivariant per channel:

    snake(x) = x + inv_beta * sin(alpha * x)^2,  alpha' = alpha * s, inv_beta' = inv_beta / s
    => snake'(x / s) = snake(x) / s

So dividing a channel by s where it is made (a convolution's output row and bias) passes
through every Snake and residual Add on the way, and multiplying the input channel of each
convolution that reads it restores the output: in float the decode is the same (to
rounding), and only quantization sees the difference. A *scale group* is the set of
tensors that must share one s per channel: a residual unit's inner activation (k=7 output
-> Snake -> k=1 input), and a block's residual stream (the upsampler's output, every unit's
k=1 output and skip, the Adds, the Snakes after them, the next upsampler's or the last
convolution's input). A group touched by anything else -- the graph's input (the latent),
its output, another kind of node -- is left alone.

Scales come from the per-channel ranges the `stats` stage collects (quant.stats) and the
weights: for a group with per-channel activation ranges a_i (the largest over the tensors
the group quantizes, each relative to its tensor's largest) and weight ranges w_i (the
largest |weight| reading channel i, relative likewise),

    s_i = a_i ** migration / w_i ** (1 - migration)

normalised so that the largest equalized range is the largest range before (no activation
grows, so fp16 parts keep their headroom), with s bounded to MAX_SPREAD. migration 1 evens
the activations' ranges, 0 the weights' columns, between them (SmoothQuant's alpha) both.

Which migration, if any, is chosen by cross-validation on the calibration latents
(quant.crossval.least_error): per-channel maxima from a few windows underestimate the channels'
true peaks (on the embedded default, held-out maxima exceed calibration's by up to 2x in
one channel), and an equalized channel sits at the edge of its tensor's range, where such
a peak clips. So each candidate is fitted on one half of the latents (statistics and
ranges) and scored on the other, both ways, through the fake-quantized graph; "none" is a
candidate, so a variant that equalizes is never worse than its plain twin on that test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from vae_engines.core.choices import QuantFormat
from vae_engines.core.errors import UserError
from vae_engines.core.lazy import lazy_import
from vae_engines.graph.execute import GraphExecutor
from vae_engines.quant.crossval import halves
from vae_engines.quant.fakequant import FakeQuant
from vae_engines.quant.qdq import QdqPlan

onnx = lazy_import("onnx")
torch = lazy_import("torch")

log = logging.getLogger(__name__)

MIGRATIONS = (None, 0.25, 0.5, 0.75, 1.0)  # the migration candidates; None: no equalization
MAX_SPREAD = 1e3  # largest s_i / smallest s_i in one group
FLOOR = 1e-4  # relative range below which a channel counts as dead (its s is floored)


@dataclass(frozen=True)
class Conv:
    """A convolution at a group's edge: `node`, its `weight` and `bias` initializers, the
    weight axis along the group's channels (output channels for a producer, input channels
    for a consumer)."""

    node: str
    weight: str
    bias: str | None
    axis: int


@dataclass(frozen=True)
class Snake:
    """A folded Snake (model.oobleck.FoldedSnake): its input and output tensors and the
    initializers of alpha and inv_beta."""

    x: str
    y: str
    alpha: str
    inv_beta: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class ScaleGroup:
    """Tensors sharing one per-channel scale: `tensors` become tensor / s; `producers`
    make them (output rows / s), `consumers` read them (input channels * s), `snakes` pass
    them on (alpha * s, inv_beta / s)."""

    name: str
    channels: int
    tensors: tuple[str, ...]
    producers: tuple[Conv, ...]
    consumers: tuple[tuple[Conv, str], ...]  # (convolution, the tensor it reads)
    snakes: tuple[Snake, ...]


def _inits(model: Any) -> dict[str, Any]:
    return {i.name: i for i in model.graph.initializer}


def _array(inits: dict, name: str) -> np.ndarray:
    return onnx.numpy_helper.to_array(inits[name])


def _group_attr(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def find_snakes(model: Any) -> list[Snake]:
    """Every Snake of the graph as the exporter writes FoldedSnake: Mul(alpha, x) -> Sin ->
    Mul(s, s) -> Mul(inv_beta, .) -> Add(x, .), alpha and inv_beta per-channel initializers,
    the inner tensors used by nothing else."""
    inits = _inits(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1

    def made_by(tensor: str, op: str) -> Any:
        node = producers.get(tensor)
        return node if node is not None and node.op_type == op and uses.get(tensor, 0) == (
            2 if op == "Sin" else 1) else None

    def split(node: Any) -> tuple[str, str] | None:
        """(initializer, other input) of a Mul with one per-channel initializer input."""
        a, b = node.input
        if (a in inits) == (b in inits):
            return None
        const, other = (a, b) if a in inits else (b, a)
        shape = tuple(inits[const].dims)
        if len(shape) < 2 or int(np.prod(shape)) != shape[-2] or shape[-1] != 1:  # [.., C, 1]
            return None
        return const, other

    snakes = []
    for add in model.graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        for x, m in (add.input, add.input[::-1]):
            mul_beta = made_by(m, "Mul")
            if mul_beta is None or split(mul_beta) is None:
                continue
            inv_beta, square = split(mul_beta)
            sq = made_by(square, "Mul")
            if sq is None or sq.input[0] != sq.input[1]:
                continue
            sin = made_by(sq.input[0], "Sin")
            if sin is None:
                continue
            mul_alpha = made_by(sin.input[0], "Mul")
            if mul_alpha is None or split(mul_alpha) is None or split(mul_alpha)[1] != x:
                continue
            alpha = split(mul_alpha)[0]
            if inits[alpha].dims != inits[inv_beta].dims:
                continue
            snakes.append(Snake(x, add.output[0], alpha, inv_beta,
                                (mul_alpha.name, sin.name, sq.name, mul_beta.name, add.name)))
            break
    return snakes


def private_snake_constants(model: Any) -> Any:
    """`model`, or a copy of it in which every Snake has its own alpha and inv_beta. The
    exporter deduplicates equal initializers: in a seeded decoder every Snake's constants are
    1, so all Snakes share one initializer (alpha and inv_beta alike), which a per-channel
    scale must not change for all of them. A shared one is copied per use, named
    `<initializer>@<node>`."""
    inits = _inits(model)
    snakes = find_snakes(model)
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for i in node.input:
            if i in inits:
                uses[i] = uses.get(i, 0) + 1
    shared = {name for s in snakes for name in (s.alpha, s.inv_beta) if uses[name] > 1}
    if not shared:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = _inits(out)
    mul_nodes = {name for s in snakes for name in (s.nodes[0], s.nodes[3])}
    added = []
    for node in out.graph.node:
        if node.name not in mul_nodes:
            continue
        for index, name in enumerate(node.input):
            if name in shared:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}@{node.name}"
                added.append(copy)
                node.input[index] = copy.name
    out.graph.initializer.extend(added)
    used = {i for n in out.graph.node for i in n.input}
    kept = [i for i in out.graph.initializer if i.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out


def _connect(model: Any, inits: dict, snakes: list) -> tuple[dict[str, list[str]], set[str], dict[str, Conv],
                                                              list[tuple[Conv, str]]]:
    """Tensors joined into sets by Snakes (x and y) and Adds, with the convolutions that produce
    and read them: (each set's tensors by its root, the tensors any other node reads or writes --
    blocked --, producer convolution by output tensor, (reading convolution, its input))."""
    snake_nodes = {name for s in snakes for name in s.nodes}
    snake_of_add = {s.nodes[-1]: s for s in snakes}
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent.setdefault(t, t) != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    blocked: set[str] = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    producers: dict[str, Conv] = {}
    consumers: list[tuple[Conv, str]] = []
    for node in model.graph.node:
        if node.name in snake_nodes:
            if node.name in snake_of_add:
                s = snake_of_add[node.name]
                union(s.x, s.y)
            continue
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in inits \
                and (len(node.input) < 3 or not node.input[2] or node.input[2] in inits) and _group_attr(node) == 1:
            conv_t = node.op_type == "ConvTranspose"
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
            producers[node.output[0]] = Conv(node.name, node.input[1], bias, 1 if conv_t else 0)
            consumers.append((Conv(node.name, node.input[1], bias, 0 if conv_t else 1), node.input[0]))
            find(node.output[0])
            find(node.input[0])
            continue
        if node.op_type == "Add" and len(node.input) == 2 and not any(i in inits for i in node.input):
            union(node.input[0], node.output[0])
            union(node.input[1], node.output[0])
            continue
        blocked.update(i for i in node.input if i not in inits)  # anything else pins its tensors
        blocked.update(node.output)
    members: dict[str, list[str]] = {}
    for t in list(parent):
        members.setdefault(find(t), []).append(t)
    return members, blocked, producers, consumers


def scale_groups(model: Any) -> list[ScaleGroup]:
    """The graph's scale groups (module docstring), in graph order; groups that reach the
    graph's input or output or any other node are left out. Snake constants shared between
    Snakes are taken as private_snake_constants makes them (equalized_graph does the same)."""
    model = private_snake_constants(model)
    inits = _inits(model)
    snakes = find_snakes(model)
    members, blocked, producers, consumers = _connect(model, inits, snakes)
    owned_inits: dict[str, int] = {}
    order: dict[str, int] = {}
    for i, node in enumerate(model.graph.node):
        for name in node.input:
            if name in inits:
                owned_inits[name] = owned_inits.get(name, 0) + 1
        for t in (*node.input, *node.output):
            order.setdefault(t, i)
    # a weight or Snake constant shared with another node cannot be scaled for one group alone
    shared = {name for name, n in owned_inits.items() if n > 1}
    groups = []
    for tensors in members.values():
        tensors = sorted(tensors, key=lambda t: order.get(t, -1))
        if any(t in blocked for t in tensors):
            continue
        made = [producers[t] for t in tensors if t in producers]
        read = [(c, t) for c, t in consumers if t in tensors]
        passed = [s for s in snakes if s.x in tensors]
        if not made or not read or any(c.weight in shared or (c.bias in shared) for c in made) \
                or any(c.weight in shared for c, _ in read) \
                or any(s.alpha in shared or s.inv_beta in shared for s in passed):
            continue
        # every tensor of the group must come from a producer, a Snake or an Add (checked above: anything else
        # blocked it), so the group is closed
        channels = {int(inits[c.weight].dims[c.axis]) for c in made} | {
            int(inits[c.weight].dims[c.axis]) for c, _ in read} | {int(np.prod(inits[s.alpha].dims)) for s in passed}
        if len(channels) != 1:
            continue
        groups.append(ScaleGroup(tensors[0], channels.pop(), tuple(tensors), tuple(made), tuple(read),
                                 tuple(passed)))
    groups.sort(key=lambda g: order.get(g.tensors[0], -1))
    return groups


def _channel_max(weight: np.ndarray, axis: int) -> np.ndarray:
    return np.abs(weight.astype(np.float64)).max(axis=tuple(d for d in range(weight.ndim) if d != axis))


def group_scales(group: ScaleGroup, channel_amax: dict[str, np.ndarray], weights: dict[str, np.ndarray],
                 migration: float) -> np.ndarray:
    """s (float64, one per channel) of `group` at `migration` (module docstring).

    channel_amax: per-channel |x| maxima of the group's quantized tensors (any tensor not
    there is not quantized and does not count); weights: initializer arrays by name."""
    relative = [a / a.max() for t in group.tensors if (a := channel_amax.get(t)) is not None and a.max() > 0]
    act = np.max(relative, axis=0) if relative else np.ones(group.channels)
    columns = [w / w.max() for c, _ in group.consumers if (w := _channel_max(weights[c.weight], c.axis)).max() > 0]
    wgt = np.max(columns, axis=0) if columns else np.ones(group.channels)
    act, wgt = np.maximum(act, FLOOR), np.maximum(wgt, FLOOR)
    s = act ** migration / wgt ** (1.0 - migration)
    s = np.clip(s, s.max() / MAX_SPREAD, None)
    return s / np.max(act / s)  # the largest equalized range is the largest range before


def equalization_scales(groups: list[ScaleGroup], channel_amax: dict[str, np.ndarray], model: Any,
                        migration: float | None) -> dict[str, np.ndarray]:
    """Per group name, its s at `migration`; an empty dict at migration None."""
    if migration is None:
        return {}
    inits = _inits(model)
    weights = {c.weight: _array(inits, c.weight) for g in groups for c, _ in g.consumers}
    return {g.name: group_scales(g, channel_amax, weights, migration) for g in groups}


def _shape(ndim: int, axis: int) -> list[int]:
    shape = [1] * ndim
    shape[axis] = -1
    return shape


def equalized_graph(model: Any, groups: list[ScaleGroup], scales: dict[str, np.ndarray]) -> Any:
    """A copy of fp32 `model` with each group's scale folded in: producers' output rows and
    biases / s, Snakes' alpha * s and inv_beta / s, consumers' input channels * s. The same
    function in float (to rounding)."""
    out = onnx.ModelProto()
    out.CopyFrom(private_snake_constants(model))
    inits = _inits(out)
    record = scales_record(groups, scales)
    names = {name for g in record for name, _ in g["divide"] + g["multiply"]}
    for name, value in apply_record({n: _array(inits, n) for n in names}, record).items():
        inits[name].CopyFrom(onnx.numpy_helper.from_array(value, name))
    return out


def equalized_channel_amax(groups: list[ScaleGroup], scales: dict[str, np.ndarray],
                           channel_amax: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-channel ranges of the equalized graph: exactly the old ones / s (Snake is
    equivariant), for every tensor of a scaled group."""
    out = dict(channel_amax)
    for group in groups:
        s = scales.get(group.name)
        if s is None:
            continue
        s = np.asarray(s, dtype=np.float32).astype(np.float64)  # as folded
        for t in group.tensors:
            if t in out:
                out[t] = out[t] / s
    return out


def scales_record(groups: list[ScaleGroup], scales: dict[str, np.ndarray]) -> list[dict]:
    """What the ranges record keeps of the folding: per group its scales (float32, as folded)
    and the initializers they divide or multiply along which axis -- enough for any engine
    built from the model's own weights (compiled.int8) to fold the same (`apply_record`)."""
    out = []
    for g in groups:
        if g.name not in scales:
            continue
        divide = [[c.weight, c.axis] for c in g.producers] + [[c.bias, 0] for c in g.producers if c.bias]
        divide += [[sn.inv_beta, -2] for sn in g.snakes]
        multiply = [[c.weight, c.axis] for c, _ in g.consumers] + [[sn.alpha, -2] for sn in g.snakes]
        out.append({"group": g.name, "channels": g.channels, "divide": divide, "multiply": multiply,
                    "scales": [float(v) for v in np.asarray(scales[g.name], dtype=np.float32)]})
    return out


def apply_record(arrays: dict[str, np.ndarray], record: list[dict]) -> dict[str, np.ndarray]:
    """`arrays` (initializer or state-dict name -> array) with a scales_record folded in: the
    same arithmetic as equalized_graph (float64, then the array's own type)."""
    changed: dict[str, np.ndarray] = {}
    for group in record:
        s = np.asarray(group["scales"], dtype=np.float32).astype(np.float64)
        for names, factor in ((group["divide"], 1.0 / s), (group["multiply"], s)):
            for name, axis in names:
                value = changed.get(name, np.asarray(arrays[name]).astype(np.float64))
                changed[name] = value * factor.reshape(_shape(value.ndim, axis))
    return {name: value.astype(np.asarray(arrays[name]).dtype) for name, value in changed.items()}


def channel_maxima(executor: GraphExecutor, tensors: list[str], latents: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel |x| maxima of `tensors` over `latents`, one latent at a time."""
    wanted, out = set(tensors), {}

    def observe(name: str, x: Any) -> None:
        if name in wanted:
            m = x.detach().abs().amax(dim=[d for d in range(x.dim()) if d != 1]).double().cpu().numpy()
            out[name] = np.maximum(out[name], m) if name in out else m
    for i in range(len(latents)):
        executor.run(latents[i:i + 1], observe=observe)
    return out


def _minmax(plan: QdqPlan, channel_amax: dict[str, np.ndarray]) -> dict[str, float]:
    return {t: max(float(channel_amax[t].max()), 1e-8) for t in plan.tensors()}


def cross_validated_error(model: Any, groups: list[ScaleGroup], plan: QdqPlan, latents: np.ndarray, device: Any,
                          candidates: tuple[float | None, ...] = MIGRATIONS,
                          fmt: QuantFormat = QuantFormat.INT8) -> dict[float | None, float]:
    """Per candidate migration, the squared error of the fake-quantized equalized graph
    (minmax ranges) on each half of `latents` when scales and ranges come from the other
    half, summed over both halves, against the fp32 decode."""
    executor = GraphExecutor(model, device)
    parts = halves(latents)
    fitted = [channel_maxima(executor, plan.tensors(), h) for h in parts]
    references = [executor.decode(h) for h in parts]
    errors = {}
    for migration in candidates:
        total = 0.0
        for fit, (held, reference) in zip(fitted, zip(parts[::-1], references[::-1])):
            scales = equalization_scales(groups, fit, model, migration)
            graph = equalized_graph(model, groups, scales)
            quantized = GraphExecutor(graph, device)
            overrides = FakeQuant(quantized, plan.layers, fmt).plan_overrides(
                plan, _minmax(plan, equalized_channel_amax(groups, scales, fit)))
            total += float(np.sum((quantized.decode(held, **overrides).astype(np.float64) - reference) ** 2))
        errors[migration] = total
    return errors


def equalize_module(module: Any, record: list[dict] | None) -> Any:
    """Fold a ranges record's equalization (`scales_record`) into a torch module whose
    state-dict names are the graph's initializer names (model.oobleck.fold_decoder's
    decoder), in place, with the arithmetic of equalized_graph; None or [] changes nothing.
    For engines built from the model's own weights (compiled.int8)."""
    if not record:
        return module
    state = module.state_dict()
    unknown = [name for g in record for name, _ in g["divide"] + g["multiply"] if name not in state]
    if unknown:
        raise UserError(f"the equalization names {unknown[0]!r}, which this module lacks (the exporter shared one "
                        "Snake constant between Snakes, or the record belongs to another model); re-run the quantize "
                        "stage of this model")
    arrays = {name: state[name].detach().cpu().numpy() for g in record for name, _ in g["divide"] + g["multiply"]}
    with torch.no_grad():
        for name, value in apply_record(arrays, record).items():
            state[name].copy_(torch.from_numpy(value))
    return module
