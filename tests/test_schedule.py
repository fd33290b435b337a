"""Stages side by side that fit the GPU (core/gpu_memory.py, core/repro.py), on the CPU with a
fake GPU budget: a stage starts only where its last recorded peak and those of the stages
running fit; a stage with no record starts as before; each stage's own report replaces its
figure; a stage that used no GPU reports 0."""

import json
import subprocess
import sys

from vae_engines.core.gpu_memory import Budget, read_peaks, record_peak, stage_peak
from vae_engines.core.repro import Stage, _next

GIB = 2**30


def _stages(*names: str, alone: str = "") -> dict[str, Stage]:
    return {n: Stage(n, set(), alone=alone or None) for n in names}


def test_a_stage_starts_only_where_its_peak_fits_beside_the_running_ones():
    stages = _stages("a", "b", "c")
    budget = Budget("fake GPU", 10 * GIB)
    peaks = {"a": 6 * GIB, "b": 6 * GIB, "c": 3 * GIB}
    # a first (name order at equal priority); b does not fit beside it, c does
    assert _next(stages, set(), set(), set(), 3, budget, peaks) == ["a", "c"]
    # b alone would fit, but a runs: b waits
    assert _next(stages, set(), {"a"}, {"a"}, 2, budget, peaks) == ["c"]
    assert _next(stages, set(), {"a", "c"}, {"a", "c"}, 1, budget, peaks) == []
    # a stage larger than the whole budget still runs, alone, when nothing else does
    big = {"a": 20 * GIB}
    assert _next(_stages("a"), set(), set(), set(), 2, budget, big) == ["a"]
    assert _next(stages, set(), {"b"}, {"b"}, 2, budget, {**big, "b": GIB, "c": GIB}) == ["c"]


def test_no_record_or_no_gpu_schedules_as_before():
    stages = _stages("a", "b", "c")
    # no record for b: it starts (running out of memory is its fallback); c has one and fits
    assert _next(stages, set(), set(), set(), 3, Budget("fake GPU", 10 * GIB), {"a": 6 * GIB, "c": 3 * GIB}) \
        == ["a", "b", "c"]
    # no GPU here: nothing to fit, the slots alone decide
    assert _next(stages, set(), set(), set(), 2, Budget("cpu", None), {"a": 9 * GIB, "b": 9 * GIB}) == ["a", "b"]
    # a stage that runs alone still runs alone, whatever its peak
    timed = {**_stages("x"), **_stages("t", alone="times")}
    assert _next(timed, set(), {"x"}, {"x"}, 2, Budget("g", 10 * GIB), {"t": 0}) == []


def test_a_stage_out_of_memory_is_fitted_by_its_siblings_figure():
    """evaluate@mse ran out of memory beside others and has no figure; evaluate@minmax has one:
    the same code on like inputs, so it stands in for the retry (an H100 run from scratch: five
    evaluate@* ran out beside the 30 GB quantize searches). Before a stage ran out, no figure
    stands in for it: the figures are momentary peaks, their sum pessimistic (fitting first
    runs by siblings' figures put an H100's seven compile_int8 stages in waves, 60 -> 174 s)."""
    from vae_engines.core.gpu_memory import peak_of

    peaks = {"evaluate@minmax": 6 * GIB, "evaluate@entropy": 5 * GIB, "quantize@auto": 5 * GIB, "x": 1}
    assert peak_of("evaluate@mse", peaks) == 6 * GIB and peak_of("evaluate@minmax", peaks) == 6 * GIB
    assert peak_of("evaluate_fp16@fp16", peaks) is None and peak_of("y", peaks) is None
    stages = _stages("evaluate@mse", "y", "quantize@auto", "x")
    budget = Budget("fake GPU", 10 * GIB)
    started = {"quantize@auto", "x"}
    # no figure of its own: it starts as before
    assert _next(stages, set(), {"quantize@auto"}, started, 2, budget, peaks) == ["evaluate@mse", "y"]
    # fitted by the sibling's 6 GiB (what Driver.fitted hands _next for a stage that ran out)
    fitted = {**peaks, "evaluate@mse": peak_of("evaluate@mse", peaks)}
    assert _next(stages, set(), {"quantize@auto"}, started, 2, budget, fitted) == ["y"]
    assert _next(stages, set(), {"x"}, started, 2, budget, fitted) == ["evaluate@mse", "y"]


def test_peaks_are_kept_per_gpu_model(tmp_path):
    record = tmp_path / "stage_memory.json"
    assert read_peaks(record, "H100") == {}
    record_peak(record, "H100", "compile@fp16", {"peak_bytes": 5 * GIB})
    record_peak(record, "H200", "compile@fp16", {"peak_bytes": 7 * GIB})
    record_peak(record, "H100", "compile@fp16", {"peak_bytes": 4 * GIB})  # the last run's figure wins
    assert read_peaks(record, "H100") == {"compile@fp16": 4 * GIB}
    assert read_peaks(record, "H200") == {"compile@fp16": 7 * GIB}


def test_a_stage_that_used_no_gpu_reports_zero(tmp_path):
    """stage_peak never imports torch: in a process without it, the peak is 0."""
    code = ("import sys; from vae_engines.core.gpu_memory import stage_peak; "
            "assert 'torch' not in sys.modules; print(stage_peak()['peak_bytes'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr
    assert stage_peak()["peak_bytes"] >= 0


# Each stage sleeps, writes its start and end, and reports a peak of {gib} GiB where the driver asks.
STAGE = ("python -c \"import json, os, pathlib, time; s = time.time(); time.sleep(2); "
         "pathlib.Path('{name}.txt').write_text(f'{{s}} {{time.time()}}'); "
         "pathlib.Path(os.environ['VAE_ENGINES_MEMORY_RECORD']).write_text(json.dumps({{'peak_bytes': {gib} * 2**30}}))\"")


def test_the_driver_fits_recorded_peaks_into_a_fake_gpu(tmp_path, isolated_env):
    import yaml

    project = tmp_path / "p"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, env=isolated_env, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, env=isolated_env, check=True)
    stages = {name: {"cmd": STAGE.format(name=name, gib=gib), "outs": [f"{name}.txt"]}
              for name, gib in (("a", 7), ("b", 6), ("c", 3))}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    record = project / "memory.json"
    for name, gib in (("a", 6), ("b", 6), ("c", 3)):  # what an earlier run recorded
        record_peak(record, "cpu", name, {"peak_bytes": gib * GIB})
    done = subprocess.run([sys.executable, "-m", "vae_engines.cli", "repro", "--jobs", "3", "--record", "run.json",
                           "--memory-record", str(record), "--gpu-memory-gib", "12"],  # 10.8 GiB usable
                          cwd=project, env=isolated_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    spans = {n: tuple(map(float, (project / f"{n}.txt").read_text().split())) for n in "abc"}
    overlap = lambda x, y: spans[x][0] < spans[y][1] and spans[y][0] < spans[x][1]  # noqa: E731
    assert not overlap("a", "b")  # 6 + 6 GiB do not fit in 10.8
    assert overlap("a", "c") or overlap("b", "c")  # 6 + 3 do
    # each stage's own report is its figure now (a reported 7 GiB this time)
    assert read_peaks(record, "cpu") == {"a": 7 * GIB, "b": 6 * GIB, "c": 3 * GIB}
    run = {s["stage"]: s for s in json.loads((project / "run.json").read_text())["stages"]}
    assert run["a"]["peak_bytes"] == 7 * GIB and run["a"]["outcome"] == "ran"


def test_the_tune_stage_keeps_its_timings_when_nothing_they_depend_on_changed(tmp_path):
    """compiled.build.tuning_key: the GPU, versions, lengths, architecture and kernel code --
    not the weights; a record timed with the same key is kept, any other is timed again."""
    import torch

    from vae_engines.compiled.build import _earlier_tiles, tuning_key
    from vae_engines.core.fileio import write_json

    cpu = torch.device("cpu")
    net = torch.nn.Conv1d(4, 8, 3)
    key = tuning_key(net, cpu, [16, 32])
    torch.nn.init.normal_(net.weight)  # other weights, same shapes: same key
    assert tuning_key(net, cpu, [16, 32]) == key
    assert tuning_key(torch.nn.Conv1d(4, 16, 3), cpu, [16, 32]) != key  # another architecture
    assert tuning_key(net, cpu, [16, 64]) != key  # other lengths
    record = tmp_path / "tiles.json"
    assert _earlier_tiles(record, key) is None
    write_json(record, {"key": key, "fp16": {"conv1": {"tile": [1]}}})
    assert _earlier_tiles(record, key)["fp16"] == {"conv1": {"tile": [1]}}
    assert _earlier_tiles(record, {**key, "code": "changed"}) is None
    record.write_text("{half")
    assert _earlier_tiles(record, key) is None
