"""`vae-engines repro --jobs N` (core/repro.py) on a small DVC project of sleeping stages:
independent stages overlap, a stage marked `meta: {alone: ...}` overlaps nothing, dependencies
finish before their users start, the result is DVC's own (dvc status clean, a second run skips
everything), and a failing stage stops the run with one line and exit code 1."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Each stage writes its own start and end time; t is alone (it "times something").
STAGE = ("python -c \"import sys, time, pathlib; s = time.time(); time.sleep({sleep}); "
         "pathlib.Path('{name}.txt').write_text(f'{{s}} {{time.time()}}')\"")
DVC_YAML = {
    "stages": {
        # always changed, first, with the same output every time: like the pipeline's check stage
        "s": {"cmd": "python -c \"import pathlib; pathlib.Path('s.txt').write_text('ok')\"", "always_changed": True,
              "outs": [{"s.txt": {"cache": False}}]},
        "a": {"cmd": STAGE.format(name="a", sleep=2), "deps": ["s.txt"], "outs": ["a.txt"]},
        "b": {"cmd": STAGE.format(name="b", sleep=2), "outs": ["b.txt"]},
        "c": {"cmd": STAGE.format(name="c", sleep=1), "deps": ["a.txt", "b.txt"], "outs": ["c.txt"]},
        "t": {"cmd": STAGE.format(name="t", sleep=1), "deps": ["a.txt"], "outs": ["t.txt"],
              "meta": {"alone": "times something"}},
        "d": {"cmd": STAGE.format(name="d", sleep=1), "deps": ["t.txt"], "outs": ["d.txt"]},
    }
}


@pytest.fixture
def sleepers(tmp_path, isolated_env) -> Path:
    import yaml

    project = tmp_path / "p"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, env=isolated_env, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, env=isolated_env, check=True)
    (project / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    return project


def _repro(project: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_engines.cli", "repro", *args], cwd=project, env=env,
                          capture_output=True, text=True)


def _interval(project: Path, name: str) -> tuple[float, float]:
    start, end = (project / f"{name}.txt").read_text().split()
    return float(start), float(end)


def test_independent_stages_run_side_by_side_and_timed_stages_alone(sleepers, isolated_env):
    done = _repro(sleepers, isolated_env, "--jobs", "3", "--record", "record.json")
    assert done.returncode == 0, done.stdout + done.stderr
    spans = {name: _interval(sleepers, name) for name in "abctd"}
    overlap = lambda x, y: spans[x][0] < spans[y][1] and spans[y][0] < spans[x][1]  # noqa: E731
    assert overlap("a", "b")  # independent: side by side
    assert spans["c"][0] >= max(spans["a"][1], spans["b"][1])  # after what it depends on
    assert spans["d"][0] >= spans["t"][1]
    assert not any(overlap("t", other) for other in "abcd")  # alone
    record = json.loads((sleepers / "record.json").read_text())
    assert {s["stage"]: s["outcome"] for s in record["stages"]} == dict.fromkeys("sabctd", "ran")
    assert next(s for s in record["stages"] if s["stage"] == "t")["alone"] == "times something"
    for s in record["stages"]:  # where each stage's seconds went: DVC before its command, the command, DVC after
        assert s["dvc_before_s"] + s["command_s"] + s["dvc_after_s"] == pytest.approx(s["seconds"], abs=0.05)
        assert s["command_s"] >= {"a": 2, "b": 2}.get(s["stage"], 1 if s["stage"] in "ctd" else 0) - 0.05
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=sleepers, env=isolated_env,
                            capture_output=True, text=True)
    # what DVC recorded is what a serial `dvc repro` would have: only the always-changed stage is "changed"
    assert json.loads(status.stdout) == {"s": ["always changed"]}
    again = _repro(sleepers, isolated_env, "--jobs", "3", "--record", "record.json")
    assert again.returncode == 0
    outcomes = {s["stage"]: s["outcome"] for s in json.loads((sleepers / "record.json").read_text())["stages"]}
    assert outcomes == {"s": "ran", **dict.fromkeys("abctd", "unchanged")}
    # one stage changed: it and what depends on it go to DVC, nothing else starts a process
    changed = (sleepers / "dvc.yaml").read_text().replace("time.sleep(1); pathlib.Path('t.txt')",
                                                          "time.sleep(0.5); pathlib.Path('t.txt')")
    (sleepers / "dvc.yaml").write_text(changed)
    assert _repro(sleepers, isolated_env, "--jobs", "3", "--record", "record.json").returncode == 0
    stages = json.loads((sleepers / "record.json").read_text())["stages"]
    # t changed; d depends on t's output (new timestamps), so DVC runs it too
    assert {s["stage"]: s["outcome"] for s in stages} == {"s": "ran", "t": "ran", "d": "ran", "a": "unchanged",
                                                         "b": "unchanged", "c": "unchanged"}
    assert [s["stage"] for s in stages if s["seconds"] > 0] == ["s", "t", "d"]  # no process for a, b, c


def test_a_failing_stage_stops_the_run_with_one_line(sleepers, isolated_env):
    import yaml

    broken = dict(DVC_YAML["stages"], b={"cmd": "python -c \"raise SystemExit(3)\"", "outs": ["b.txt"]})
    (sleepers / "dvc.yaml").write_text(yaml.safe_dump({"stages": broken}, sort_keys=False))
    done = _repro(sleepers, isolated_env, "--jobs", "2")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: stage b failed")
    assert "Traceback" not in done.stderr
    assert not (sleepers / "c.txt").exists()  # it needs b
    bad = _repro(sleepers, isolated_env, "--jobs", "0")
    assert bad.returncode == 1 and bad.stderr.strip() == "error: --jobs 0: give 1 or more stages to run at a time"


def test_a_stage_out_of_gpu_memory_beside_others_runs_again_alone(sleepers, isolated_env):
    """g fails the first time with the entry points' out-of-GPU-memory line (as eight full-size
    stages side by side did on an 80 GB H100); it started beside b, so it runs again, alone."""
    import yaml

    first_fails = ("python -c \"import pathlib, sys, time; s = time.time(); tried = pathlib.Path('g.tried'); "
                   "sys.exit('error: out of GPU memory (simulated)') if not tried.exists() and not tried.touch() "
                   "else pathlib.Path('g.txt').write_text(f'{s} {time.time()}')\"")
    stages = {"b": DVC_YAML["stages"]["b"], "g": {"cmd": first_fails, "outs": ["g.txt"]}}
    (sleepers / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    done = _repro(sleepers, isolated_env, "--jobs", "2", "--record", "record.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "g ran out of GPU memory beside other stages: it runs again, alone" in done.stderr  # no figure: alone
    assert _interval(sleepers, "g")[0] >= _interval(sleepers, "b")[1]  # the second time, after b ended
    record = {s["stage"]: s for s in json.loads((sleepers / "record.json").read_text())["stages"]}
    assert record["g"]["outcome"] == "ran" and record["g"]["alone"] == "ran out of GPU memory beside other stages"
    # alone, it fails as any stage does: once is all
    (sleepers / "g.tried").unlink()
    (sleepers / "g.txt").unlink()
    alone = _repro(sleepers, isolated_env, "--jobs", "1")
    assert alone.returncode == 1 and alone.stderr.strip().splitlines()[-1].startswith("error: stage g failed")


def test_a_bench_with_nothing_to_time_here_runs_beside_others(sleepers, isolated_env):
    """`meta: {alone: ..., times: plans}` (the bench@ stages): on a machine no TensorRT plan can
    run on (this one: no GPU) and no ONNX Runtime timing asked for, the stage times nothing and
    runs beside the others (an H100 from scratch spent 27 s on eight such stages one by one);
    where it times something (bench.runtimes with onnxruntime), alone as before."""
    import shutil

    import yaml

    from vae_engines.core.params import BenchParams
    from vae_engines.measure.plans import nothing_to_time

    assert "cannot run here" in nothing_to_time(BenchParams(runtimes=("tensorrt", "torch")), "auto")
    assert nothing_to_time(BenchParams(runtimes=("tensorrt", "onnxruntime")), "tensorrt_rtx") is None
    stages = {"b": DVC_YAML["stages"]["b"],
              "t": {"cmd": STAGE.format(name="t", sleep=2), "outs": ["t.txt"],
                    "meta": {"alone": "it times the plans", "times": "plans"}}}
    (sleepers / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", sleepers / "params.yaml")
    done = _repro(sleepers, isolated_env, "--jobs", "2", "--record", "record.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "t runs beside other stages: its plans cannot run here" in done.stderr
    (b0, b1), (t0, t1) = _interval(sleepers, "b"), _interval(sleepers, "t")
    assert t0 < b1 and b0 < t1  # side by side
    params = yaml.safe_load((sleepers / "params.yaml").read_text())
    params["bench"]["runtimes"] = ["tensorrt", "onnxruntime"]
    (sleepers / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name in "bt":
        (sleepers / f"{name}.txt").unlink()
    done = _repro(sleepers, isolated_env, "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    (b0, b1), (t0, t1) = _interval(sleepers, "b"), _interval(sleepers, "t")
    assert t0 >= b1 or b0 >= t1  # alone: it times ONNX Runtime here
