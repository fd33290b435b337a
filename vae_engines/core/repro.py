"""`dvc repro` with independent stages side by side (`vae-engines repro --jobs N`).

DVC runs a pipeline's stages one at a time. This runs every stage of the pipeline through
its own `dvc --wait-for-lock repro --single-item <stage>` as soon as the stages it depends on
have finished, up to `jobs` at a time. DVC still decides whether a stage's inputs changed,
runs it or skips it, and records it in dvc.lock; while a stage's command runs DVC releases
its repository lock and holds a read lock on the stage's dependencies and a write lock on its
outputs -- what it provides for several repro processes in one workspace -- and
`--wait-for-lock` (DVC >= 3.61) makes each process wait for the repository lock instead of
failing. So the result is the result of `dvc repro`, sooner where stages are independent: the
INT8 variants' quantize, build, evaluate and compile stages, the data stages beside export.

Which stages to hand to DVC at all: the always-changed ones (the check stage) run first;
then one `dvc status` names the stages whose inputs changed, and those and every stage
downstream of them are run (each still skipped by DVC if its inputs turn out unchanged once
the stages before it have run); the rest are unchanged by construction and start no process.
So a one-variant change costs the stages it touches, not a DVC start-up per stage.

A stage whose dvc.yaml entry has `meta: {alone: <why>}` -- a stage that times something --
never runs beside another: it starts only when no other stage is running or ready to run, and
nothing starts until it ends. A stage that ran out of GPU memory while other stages ran beside
it (each stage is its own process with its own CUDA context and cached memory: eight
full-size stages overfilled an 80 GB H100) runs again once, alone: what it needs is known
only once it runs, so the driver does not guess it ahead. Any other failure stops the run:
nothing new starts, the stages running finish, and the command exits 1 naming it (its output
above says why).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from vae_engines.core.errors import UserError
from vae_engines.core.fileio import write_json

log = logging.getLogger(__name__)


@dataclass
class Stage:
    name: str  # DVC's address of the stage: "quantize@minmax", "check/dvc.yaml:check"
    needs: set[str]  # the stages it depends on
    alone: str | None = None  # why it runs alone (meta.alone), None: it may run beside others
    always: bool = False  # always_changed: DVC runs it every time
    users: set[str] = field(default_factory=set)  # the stages that depend on it, directly or not
    priority: int = 0  # len(users): the stage more depend on starts first


@dataclass
class Result:
    stage: str
    outcome: str = "pending"  # ran | unchanged | failed
    started_s: float = 0.0
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)


def pipeline_stages(root: str | Path = ".") -> dict[str, Stage]:
    """The stages of the DVC project at `root` and what each depends on (DVC's own graph)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
        graph = repo.index.graph
    except DvcException as exc:
        raise UserError(f"DVC cannot read the pipeline at {root}: {exc}") from None
    stages = {}
    for stage in graph.nodes:
        meta = stage.meta if isinstance(getattr(stage, "meta", None), dict) else {}
        stages[stage.addressing] = Stage(stage.addressing, {dep.addressing for dep in graph.successors(stage)},
                                         str(meta["alone"]) if meta.get("alone") else None,
                                         bool(stage.always_changed))
    users: dict[str, set[str]] = {name: set() for name in stages}
    for name, stage in stages.items():
        for dep in stage.needs:
            users[dep].add(name)

    def downstream(name: str, seen: set[str]) -> set[str]:
        for user in users[name] - seen:
            seen.add(user)
            downstream(user, seen)
        return seen
    for name, stage in stages.items():
        stage.users = downstream(name, set())
        stage.priority = len(stage.users)
    return stages


def changed_stages(root: Path) -> set[str]:
    """The stages `dvc status` finds changed (their own inputs differ from dvc.lock)."""
    done = subprocess.run([sys.executable, "-m", "dvc", "--wait-for-lock", "status", "--json"], cwd=root,
                          capture_output=True, text=True)
    if done.returncode:
        raise UserError(f"dvc status failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return set(json.loads(done.stdout or "{}"))


def _next(stages: dict[str, Stage], done: set[str], running: set[str], started: set[str]) -> list[str]:
    """The stages to start now, given what finished, what runs and what already started."""
    ready = sorted((s for s in stages.values() if s.name not in started and s.needs <= done),
                   key=lambda s: (-s.priority, s.name))
    if any(stages[name].alone for name in running):
        return []
    together = [s.name for s in ready if not s.alone]
    if together:
        return together
    if ready and not running:  # quiet: the first stage that runs alone
        return [ready[0].name]
    return []


# How a stage says it ran out of GPU memory: the entry points' one line (core/entry.py), or
# PyTorch's own messages where the error escaped them.
OUT_OF_GPU_MEMORY = ("error: out of GPU memory", "CUDA out of memory", "CUDA error: out of memory")


def _out_of_gpu_memory(lines: list[str]) -> bool:
    return any(marker in line for line in lines for marker in OUT_OF_GPU_MEMORY)


def _run_stage(name: str, root: Path, out: queue.Queue, procs: dict) -> None:
    """One `dvc repro --single-item` of stage `name`; its lines, then its exit code, to `out`."""
    cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", name]
    # stages side by side share the cores: OpenMP threads that wait sleep rather than spin (how
    # they wait only; every stage keeps its compute.threads, so its results do not change)
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=env)
    procs[name] = proc
    for line in proc.stdout:
        out.put((name, "line", line.rstrip("\n")))
    out.put((name, "exit", proc.wait()))


def reproduce(root: str | Path = ".", jobs: int = 2, record: str | Path | None = None) -> list[Result]:
    """Reproduce the pipeline at `root` with up to `jobs` stages side by side (module
    docstring); returns each stage's outcome (and writes them to `record`, JSON)."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: give 1 or more stages to run at a time")
    root = Path(root)
    stages = pipeline_stages(root)
    results = {name: Result(name) for name in stages}
    done: set[str] = set()
    running: set[str] = set()
    started: set[str] = set()
    failed: list[str] = []
    crowded: set[str] = set()  # stages that had another stage running beside them
    retried: set[str] = set()  # stages run again alone after running out of GPU memory
    events: queue.Queue = queue.Queue()
    procs: dict[str, subprocess.Popen] = {}
    begin = time.perf_counter()

    def write_record() -> None:  # after every stage, so a run cut short still says what it did
        if record is not None:
            order = sorted(results.values(), key=lambda r: (r.outcome == "pending", r.started_s))
            write_json(record, {"jobs": jobs, "total_seconds": round(time.perf_counter() - begin, 1),
                                "finished": len(done) + len(failed) == len(stages), "stages": [
                                    {"stage": r.stage, "outcome": r.outcome, "started_s": r.started_s,
                                     "seconds": r.seconds, "alone": stages[r.stage].alone} for r in order]})
    candidates: set[str] | None = None  # what may have changed: known once the always-changed stages ran
    while len(done) + len(failed) < len(stages):
        if candidates is None and not running and not failed:
            pending_always = [n for n, st in stages.items() if st.always and n not in started]
            startable = [n for n in pending_always if stages[n].needs <= done]
            if not startable:
                changed = changed_stages(root) - {n for n, st in stages.items() if st.always and n in done}
                candidates = changed.union(*(stages[n].users for n in changed if n in stages))
                for name in stages:
                    if name not in started and name not in candidates:
                        started.add(name)
                        done.add(name)
                        results[name].outcome = "unchanged"
                continue
        if not failed:
            allowed = _next(stages, done, running, started)
            if candidates is None:
                allowed = [n for n in allowed if stages[n].always]
            for name in allowed[: jobs - len(running)]:
                if running:
                    crowded.update(running | {name})
                running.add(name)
                started.add(name)
                results[name].started_s = round(time.perf_counter() - begin, 2)
                threading.Thread(target=_run_stage, args=(name, root, events, procs), daemon=True).start()
        if not running:
            break
        try:
            name, kind, value = events.get()
        except BaseException:  # interrupted or terminated: stop the stages still running, as dvc repro would
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
            raise
        result = results[name]
        if kind == "line":
            result.lines.append(value)
            if value.startswith("Running stage"):
                result.outcome = "ran"
            print(f"[{name}] {value}", flush=True)
            continue
        running.discard(name)
        result.seconds = round(time.perf_counter() - begin - result.started_s, 2)
        if value and name in crowded and name not in retried and _out_of_gpu_memory(result.lines):
            log.warning("%s ran out of GPU memory beside other stages: it runs again, alone", name)
            retried.add(name)
            stages[name].alone = "ran out of GPU memory beside other stages"
            started.discard(name)
            crowded.discard(name)
            result.outcome, result.lines = "pending", []
        elif value:
            result.outcome = "failed"
            failed.append(name)
        else:
            result.outcome = "ran" if result.outcome == "ran" else "unchanged"
            done.add(name)
        write_record()
    write_record()
    total = round(time.perf_counter() - begin, 1)
    order = sorted(results.values(), key=lambda r: (r.outcome == "pending", r.started_s))
    ran = [r for r in order if r.outcome == "ran"]
    log.info("%d stages ran, %d unchanged, %s s in all (%d at a time)", len(ran),
             sum(r.outcome == "unchanged" for r in order), total, jobs)
    if failed:
        waiting = sum(r.outcome == "pending" for r in order)
        raise UserError(f"stage {failed[0]} failed (its output is above); {waiting} stage(s) after it did not run. "
                        "Fix it and run the command again: what finished is recorded")
    return order
