"""Keep one int8 wgmma in flight in a Triton K loop on sm_90, as Triton already does for fp16.

On Hopper a tensor-core multiply (wgmma) is asynchronous: a loop can issue iteration i's
while iteration i-1's still runs, and wait only until at most one is pending. Triton's WGMMA
pipeliner does that for a dot whose accumulator is fp32 and refuses it for any other
(lib/Dialect/TritonGPU/Transforms/Pipeliner/WGMMAPipeline.cpp, `dotCanBeProperlyAsync`,
"Rule 2.1"). An int8 dot accumulates in int32, so every int8 wgmma of this project's kernels
is waited for where it is issued (`ttng.warp_group_dot_wait {pendings = 0}`), while the fp16
and fp8 ones overlap (`benchmarks/experiments/wgmma_async.py` reads both from the compiled
kernels). An int32 accumulator takes the same 32-bit registers as an fp32 one and PTX pipelines
wgmma.mma_async on either alike, so the fp16 schedule is valid for int8 as it stands.

`keep_in_flight` rewrites the TTGIR Triton's pipeliner produced into that schedule, nothing
else: in a loop whose only dot accumulates in int32 and is waited for at once, the wait keeps
one pending (`pendings = 1`, as Triton writes for fp16), and a `pendings = 0` wait after the
loop guards the result's first use. The loads of the next stages stay after the in-loop wait,
where the pipeliner put them, so a buffer is refilled only once the wgmma reading it is done.
Anything that does not match that shape exactly is left alone, and so is every warp-specialized
kernel, whose partitions hand a buffer back through a barrier right after its wgmma. Integer
sums are exact in any order and the order does not change, so the outputs are bitwise those of
the unmodified kernel: `benchmarks/experiments/gpu_inflight.py` found every INT8 layer, unit and 60 s decode
bitwise equal on the lent H100, where the shipped INT8 package ran 1.065-1.079x faster for it
(benchmarks/results/README.md, "Runs 17 and 18").

`rewriting()` applies it while a launch compiles: through Triton's stage hook
(`triton.knobs.runtime.add_stages_inspection_hook`), only for sm_90 and only inside the
context. A kernel asks for it with a constexpr (`INFLIGHT`), which also keeps the rewritten
binaries apart from the plain ones in Triton's caches.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from typing import Any

# the env switch for the default: "0" keeps Triton's own schedule everywhere
ENV = "VAE_ENGINES_WGMMA_INFLIGHT"

_DOT = re.compile(r"^\s*(%[\w.$-]+) = ttng\.warp_group_dot (%[\w.$#-]+), (%[\w.$#-]+), (%[\w.$#-]+)"
                  r" \{[^}]*isAsync = true[^}]*\} : .* -> (tensor<[^>]*xi32, #[\w]+>)")
_WAIT = re.compile(r"^(\s*)(%[\w.$-]+)(:\d+)? = ttng\.warp_group_dot_wait (%[\w.$-]+)(.*)\{pendings = 0 : i32\}(.*)$")
_FOR = re.compile(r"^(\s*)(%[\w.$-]+)(?::(\d+))? = scf\.for .* iter_args\((.*?)\) -> ")
_LOC = re.compile(r"loc\((#loc\d*)\)\s*$")


def enabled() -> bool:
    """Whether int8 launches ask for the rewrite (env VAE_ENGINES_WGMMA_INFLIGHT, default on)."""
    return os.environ.get(ENV, "1") != "0"


def _loop_of(lines: list[str], at: int) -> int | None:
    """The index of the `scf.for` line whose body holds line `at` directly (None: another region's)."""
    indent = len(lines[at]) - len(lines[at].lstrip())
    for i in range(at - 1, -1, -1):
        stripped = lines[i].lstrip()
        if stripped and len(lines[i]) - len(stripped) < indent:
            return i if _FOR.match(lines[i]) else None
    return None


def _loop_end(lines: list[str], start: int) -> int | None:
    """The index of the line closing the region opened by line `start` (None: no such line)."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    for i in range(start + 1, len(lines)):
        if lines[i].startswith(" " * indent + "}") and not lines[i].startswith(" " * (indent + 1)):
            return i
    return None


def keep_in_flight(ttgir: str) -> tuple[str, int]:
    """TTGIR with each matching int8 K loop keeping one wgmma in flight, and how many loops changed."""
    if "ttg.warp_specialize" in ttgir:  # partitions hand buffers back through barriers: not this schedule
        return ttgir, 0
    lines = ttgir.split("\n")
    changed = 0
    for at in range(len(lines)):
        dot = _DOT.match(lines[at])
        if not dot or at + 1 >= len(lines):
            continue
        wait = _WAIT.match(lines[at + 1])
        if not wait or wait.group(4) != dot.group(1):
            continue
        start = _loop_of(lines, at)
        end = None if start is None else _loop_end(lines, start)
        if end is None:
            continue
        body = lines[start + 1:end]
        if sum("ttng.warp_group_dot " in ln for ln in body) != 1:
            continue
        if sum("warp_group_dot_wait" in ln for ln in body) != 1 or any("arrive_barrier" in ln for ln in body):
            continue
        loop = _FOR.match(lines[start])
        args = [a.split(" = ")[0].strip() for a in loop.group(4).split(", ")]
        acc_in = dot.group(4)
        if acc_in not in args:
            continue
        index = args.index(acc_in)
        # the wait's accumulator result feeds the loop's yield at the accumulator's place, and nothing else
        result = wait.group(2) + ("#0" if wait.group(3) else "")
        uses = [i for i, ln in enumerate(lines) if re.search(re.escape(result) + r"(?![\w#])", ln) and i != at + 1]
        yield_line = end - 1
        if uses != [yield_line] or "scf.yield" not in lines[yield_line]:
            continue
        yielded = [v.strip() for v in lines[yield_line].split("scf.yield", 1)[1].split(":")[0].split(",")]
        if index >= len(yielded) or yielded[index] != result:
            continue
        if any(re.search(re.escape(wait.group(2)) + r"#[1-9]", ln) for ln in lines):  # its other results unused
            continue
        loop_result = loop.group(2) + (f"#{index}" if loop.group(3) else "")
        guarded = f"{loop.group(2).lstrip('%')}_inflight"
        loc = _LOC.search(lines[end])
        lines[at + 1] = lines[at + 1].replace("{pendings = 0 : i32}", "{pendings = 1 : i32}")
        pattern = re.compile(re.escape(loop_result) + r"(?![\w#])")
        for i in range(end + 1, len(lines)):
            lines[i] = pattern.sub(f"%{guarded}", lines[i])
        guard = f"%{guarded} = ttng.warp_group_dot_wait {loop_result} {{pendings = 0 : i32}} : {dot.group(5)}"
        lines.insert(end + 1, loop.group(1) + guard + (f" loc({loc.group(1)})" if loc else ""))
        changed += 1
    return "\n".join(lines), changed


_state = threading.local()
_installed: list[Any] = []


def _rewrite_module(mod: Any) -> Any:
    from triton._C.libtriton import ir

    text, changed = keep_in_flight(str(mod))
    if not changed:
        return mod
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ttgir")
        with open(path, "w") as f:
            f.write(text)
        new = ir.parse_mlir_module(path, mod.context)
    new.context = mod.context
    return new


def _hook(*args: Any) -> Any:
    """Triton's stage hook. Called with (backend, stages, options, language, capability) it wraps the
    ttgir stage; Triton 3.9 also calls it with nothing to learn a key for its caches."""
    previous = _installed[0]
    on = getattr(_state, "on", False)
    if not args:
        key, digest = previous() if previous is not None else ("", "")
        return (key + "-inflight", f"{digest}inflight") if on else (key, digest)
    if previous is not None:
        previous(*args)
    _backend, stages, _options, _language, capability = args
    if on and capability == 90 and "ttgir" in stages:
        make = stages["ttgir"]
        stages["ttgir"] = lambda src, metadata: _rewrite_module(make(src, metadata))


def _install() -> bool:
    """Chain the hook into Triton's once; False where this Triton has no stage hook."""
    from triton import knobs

    if not hasattr(knobs.runtime, "add_stages_inspection_hook"):
        return False
    if not _installed:
        _installed.append(knobs.runtime.add_stages_inspection_hook)
        knobs.runtime.add_stages_inspection_hook = _hook
    return True


class rewriting:  # noqa: N801 (a context manager read as a phrase: `with rewriting(on):`)
    """Inside: this thread's sm_90 compiles get keep_in_flight (where `on` and Triton has the hook).
    A class, not a generator: it wraps every int8 launch, so it costs a few attribute sets."""

    def __init__(self, on: bool = True) -> None:
        self.on = bool(on)

    def __enter__(self) -> None:
        self.before = getattr(_state, "on", False)
        _state.on = self.on and (bool(_installed) or _install())

    def __exit__(self, *exc: object) -> None:
        _state.on = self.before
