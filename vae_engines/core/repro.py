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
nothing starts until it ends. Stages side by side share the GPU (each is its own process with
its own CUDA context and cached memory: eight full-size stages overfilled an 80 GB H100): each
stage reports its peak GPU memory when it ends, the driver keeps it from the stage's last run
(core/gpu_memory.py), and a stage starts only when its figure and those of the stages running
fit the GPU's memory less a margin. What a stage never run here needs is known only once it
runs, so the driver does not guess it: such a stage starts as before, and if it runs out of GPU
memory beside other stages it runs again -- beside others as soon as a foreach sibling's figure
says it fits, alone where there is none (a run from scratch on an H100: five `evaluate@*`
started together beside the 30 GB quantize searches and ran out; alone at the end they cost
38 s). A stage that times what this machine cannot run (`meta: {times: plans}` -- the
TensorRT benches on a GPU no TensorRT here accepts, measure.plans.nothing_to_time) has
nothing to keep quiet for and runs beside others. Any other failure stops the run:
nothing new starts, the stages running finish, and the command exits 1 naming it (its output
above says why).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vae_engines.core.errors import UserError
from vae_engines.core.fileio import read_json, write_json
from vae_engines.core.gpu_memory import MEMORY_RECORD_ENV, Budget, device_budget, peak_of, read_peaks, record_peak

log = logging.getLogger(__name__)


@dataclass
class Stage:
    name: str  # DVC's address of the stage: "quantize@minmax", "check/dvc.yaml:check"
    needs: set[str]  # the stages it depends on
    alone: str | None = None  # why it runs alone (meta.alone), None: it may run beside others
    times: str | None = None  # what it times (meta.times: "plans"), where the driver can tell it times nothing
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
    command_s: float | None = None  # when DVC printed the stage's command (its "> cmd" line), from the start
    locking_s: float | None = None  # when DVC began recording it ("Updating lock file"), from the start

    def split(self) -> dict:
        """Where a stage that ran spent its seconds: DVC before the command (start-up, checking
        what changed), the command itself, DVC after it (hashing and caching the outputs, the
        lock file); empty where DVC did not print both marks (a skipped stage)."""
        if self.command_s is None or self.locking_s is None:
            return {}
        return {"dvc_before_s": self.command_s, "command_s": round(self.locking_s - self.command_s, 2),
                "dvc_after_s": round(self.seconds - self.locking_s, 2)}


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
                                         meta.get("times"), bool(stage.always_changed))
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


def _next(stages: dict[str, Stage], done: set[str], running: set[str], started: set[str], slots: int,
          budget: Budget | None = None, peaks: dict[str, int] | None = None) -> list[str]:
    """The stages to start now (at most `slots`), given what finished, what runs, what already
    started, and -- where `budget` is given -- the GPU memory the stages' recorded `peaks` need."""
    ready = sorted((s for s in stages.values() if s.name not in started and s.needs <= done),
                   key=lambda s: (-s.priority, s.name))
    if any(stages[name].alone for name in running):
        return []
    together = [s.name for s in ready if not s.alone]
    if not together:
        return [ready[0].name] if ready and not running else []  # quiet: the first stage that runs alone
    chosen: list[str] = []
    for name in together:  # in priority order; a stage that does not fit lets a smaller one by
        if len(chosen) < slots and (budget is None or budget.fits(name, running | set(chosen), peaks or {})):
            chosen.append(name)
    return chosen


# How a stage says it ran out of GPU memory: the entry points' one line (core/entry.py), or
# PyTorch's own messages where the error escaped them.
OUT_OF_GPU_MEMORY = ("error: out of GPU memory", "CUDA out of memory", "CUDA error: out of memory")
OUT_OF_MEMORY_ALONE = "ran out of GPU memory beside other stages"


def _out_of_gpu_memory(lines: list[str]) -> bool:
    return any(marker in line for line in lines for marker in OUT_OF_GPU_MEMORY)


def _run_stage(name: str, root: Path, out: queue.Queue, procs: dict, report: Path) -> None:
    """One `dvc repro --single-item` of stage `name`; its lines, then its exit code and where
    it reports its peak GPU memory, to `out`."""
    cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", name]
    # stages side by side share the cores: OpenMP threads that wait sleep rather than spin (how
    # they wait only; every stage keeps its compute.threads, so its results do not change)
    # unbuffered: each line reaches the driver when it is printed (the record's DVC / command split reads their times)
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
           MEMORY_RECORD_ENV: str(report), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=env)
    procs[name] = proc
    for line in proc.stdout:
        out.put((name, "line", line.rstrip("\n")))
    out.put((name, "exit", (proc.wait(), report)))


class Driver:
    """One `vae-engines repro`: the stages' state, the processes running them, the record."""

    def __init__(self, root: Path, jobs: int, record: str | Path | None, memory_record: str | Path | None,
                 budget: Budget) -> None:
        self.root, self.jobs, self.record, self.memory_record, self.budget = root, jobs, record, memory_record, budget
        self.stages = pipeline_stages(root)
        self.results = {name: Result(name) for name in self.stages}
        self.peaks = read_peaks(memory_record, budget.device)
        self.done: set[str] = set()
        self.running: set[str] = set()
        self.started: set[str] = set()
        self.failed: list[str] = []
        self.crowded: set[str] = set()  # stages that had another stage running beside them
        self.retried: dict[str, int] = {}  # stage -> times it ran out of GPU memory beside others (at most 2)
        self.oom: set[str] = set()  # stages out of memory once, not started again yet (settle)
        self.candidates: set[str] | None = None  # what may have changed: known once the always-changed stages ran
        self.events: queue.Queue = queue.Queue()
        self.procs: dict[str, subprocess.Popen] = {}
        self.scratch = Path(tempfile.mkdtemp(prefix="vae-engines-repro-"))  # the stages' peak reports
        self.nothing: dict[str, str | None] = {}  # meta.times -> why nothing is timed here (None: something is)
        self.launches = 0
        self.begin = time.perf_counter()

    def finished(self) -> bool:
        return len(self.done) + len(self.failed) == len(self.stages)

    def order(self) -> list[Result]:
        return sorted(self.results.values(), key=lambda r: (r.outcome == "pending", r.started_s))

    def write_record(self) -> None:
        """After every stage, so a run cut short still says what it did."""
        if self.record is not None:
            write_json(self.record, {
                "jobs": self.jobs, "total_seconds": round(time.perf_counter() - self.begin, 1),
                "finished": self.finished(), "gpu": {"device": self.budget.device,
                                                     "usable_bytes": self.budget.usable_bytes},
                "stages": [{"stage": r.stage, "outcome": r.outcome, "started_s": r.started_s, "seconds": r.seconds,
                            "alone": self.stages[r.stage].alone, "peak_bytes": self.peaks.get(r.stage), **r.split()}
                           for r in self.order()]})

    def select_candidates(self) -> bool:
        """Once the always-changed stages ran: mark every stage that cannot have changed as
        unchanged (no process for it). True when it did so now."""
        if self.candidates is not None or self.running or self.failed:
            return False
        pending_always = [n for n, st in self.stages.items() if st.always and n not in self.started]
        if any(self.stages[n].needs <= self.done for n in pending_always):
            return False
        changed = changed_stages(self.root) - {n for n, st in self.stages.items() if st.always and n in self.done}
        self.candidates = changed.union(*(self.stages[n].users for n in changed if n in self.stages))
        for name in self.stages:
            if name not in self.started and name not in self.candidates:
                self.started.add(name)
                self.done.add(name)
                self.results[name].outcome = "unchanged"
        return True

    def settle(self) -> None:
        """Who runs alone now: a stage that ran out of GPU memory beside others, until a sibling's
        figure says where it fits; a stage with nothing to time here (meta.times), never."""
        for name in self.oom:
            self.stages[name].alone = None if peak_of(name, self.peaks) is not None else OUT_OF_MEMORY_ALONE
        for stage in self.stages.values():
            if stage.times and stage.alone and self.nothing_to_time(stage.times):
                log.info("%s runs beside other stages: %s", stage.name, self.nothing_to_time(stage.times))
                stage.alone = None

    def fitted(self) -> dict[str, int]:
        """The figures stages are fitted by: each one's own, and for a stage that ran out of GPU
        memory without one, its foreach siblings' largest (gpu_memory.peak_of)."""
        kin = {name: peak_of(name, self.peaks) for name in self.oom - set(self.peaks)}
        return {**self.peaks, **{name: peak for name, peak in kin.items() if peak is not None}}

    def nothing_to_time(self, times: str) -> str | None:
        """Why a stage that times `times` would time nothing on this machine (None: it times something)."""
        if times not in self.nothing:
            from vae_engines.core import params
            from vae_engines.measure.plans import nothing_to_time

            p = params.load(self.root / "params.yaml")
            self.nothing[times] = nothing_to_time(p.bench, p.build.backend) if times == "plans" else None
        return self.nothing[times]

    def start_ready(self) -> None:
        self.settle()
        slots = self.jobs - len(self.running)
        if self.candidates is None:  # only the always-changed stages until `dvc status` has spoken
            allowed = _next(self.stages, self.done, self.running, self.started, len(self.stages), self.budget,
                            self.peaks)
            allowed = [n for n in allowed if self.stages[n].always][:slots]
        else:
            allowed = _next(self.stages, self.done, self.running, self.started, slots, self.budget, self.fitted())
        self.oom -= set(allowed)
        for name in allowed:
            if self.running:
                self.crowded.update(self.running | {name})
            self.running.add(name)
            self.started.add(name)
            self.results[name].started_s = round(time.perf_counter() - self.begin, 2)
            self.launches += 1
            report = self.scratch / f"{self.launches}.json"  # this process's own (a retry gets another)
            threading.Thread(target=_run_stage, args=(name, self.root, self.events, self.procs, report),
                             daemon=True).start()

    def wait(self) -> tuple[str, str, Any]:
        try:
            return self.events.get()
        except BaseException:  # interrupted or terminated: stop the stages still running, as dvc repro would
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.terminate()
            raise

    def on_line(self, name: str, line: str) -> None:
        result = self.results[name]
        result.lines.append(line)
        if line.startswith("Running stage"):
            result.outcome = "ran"
        since = round(time.perf_counter() - self.begin - result.started_s, 2)
        if line.startswith("> ") and result.command_s is None:
            result.command_s = since
        elif line.startswith("Updating lock file"):
            result.locking_s = since
        print(f"[{name}] {line}", flush=True)

    def on_exit(self, name: str, code: int, report: Path) -> None:
        result = self.results[name]
        self.running.discard(name)
        result.seconds = round(time.perf_counter() - self.begin - result.started_s, 2)
        if code and name in self.crowded and _out_of_gpu_memory(result.lines) and self.retried.get(name, 0) < 2:
            self.requeue(name)
        elif code:
            result.outcome = "failed"
            self.failed.append(name)
        else:
            result.outcome = "ran" if result.outcome == "ran" else "unchanged"
            self.done.add(name)
            self.keep_peak(name, report)
        self.write_record()

    def requeue(self, name: str) -> None:
        """A stage that ran out of GPU memory beside others runs again: the first time beside
        others once a sibling's figure says it fits (settle; alone while there is none), the
        second time alone."""
        self.retried[name] = self.retried.get(name, 0) + 1
        if self.retried[name] == 1:
            self.oom.add(name)
            how = ("beside others where its siblings' figure fits" if peak_of(name, self.peaks) is not None
                   else "alone unless a sibling's figure comes first")
        else:
            self.stages[name].alone, how = OUT_OF_MEMORY_ALONE, "alone"
        log.warning("%s ran out of GPU memory beside other stages: it runs again, %s", name, how)
        self.started.discard(name)
        self.crowded.discard(name)
        self.results[name] = Result(name)

    def keep_peak(self, name: str, report: Path) -> None:
        """The stage's own peak report, where it ran and wrote one (DVC may have skipped it)."""
        if not report.is_file() or self.budget.usable_bytes is None:  # no GPU: nothing to fit
            return
        peak = read_json(report)
        self.peaks[name] = int(peak["peak_bytes"])
        if self.memory_record is not None:
            record_peak(self.memory_record, self.budget.device, name, peak)

    def run(self) -> list[Result]:
        while not self.finished():
            if self.select_candidates():
                continue
            if not self.failed:
                self.start_ready()
            if not self.running:
                break
            name, kind, value = self.wait()
            if kind == "line":
                self.on_line(name, value)
            else:
                self.on_exit(name, *value)
        self.write_record()
        shutil.rmtree(self.scratch, ignore_errors=True)
        return self.order()


def reproduce(root: str | Path = ".", jobs: int = 2, record: str | Path | None = None,
              memory_record: str | Path | None = None, gpu_memory_gib: float | None = None) -> list[Result]:
    """Reproduce the pipeline at `root` with up to `jobs` stages side by side (module
    docstring); returns each stage's outcome (and writes them to `record`, JSON).
    memory_record: each stage's last peak GPU memory (core/gpu_memory.py; None: none kept);
    gpu_memory_gib: the GPU memory stages may share (None: what the GPU has)."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: give 1 or more stages to run at a time")
    driver = Driver(Path(root), jobs, record, memory_record, device_budget(gpu_memory_gib))
    order = driver.run()
    ran = [r for r in order if r.outcome == "ran"]
    log.info("%d stages ran, %d unchanged, %s s in all (%d at a time)", len(ran),
             sum(r.outcome == "unchanged" for r in order), round(time.perf_counter() - driver.begin, 1), jobs)
    if driver.failed:
        waiting = sum(r.outcome == "pending" for r in order)
        raise UserError(f"stage {driver.failed[0]} failed (its output is above); {waiting} stage(s) after it did not "
                        "run. Fix it and run the command again: what finished is recorded")
    return order
