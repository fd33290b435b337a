"""The DVC pipeline end to end in scratch git repositories, on a tiny model: outputs, a
no-op, exactly which stages a change re-runs, inputs named in params as dependencies, and
failures (bad params, a failing stage, SIGTERM, SIGKILL) that keep the last good outputs.
Needs TensorRT-RTX for the build stages."""

import importlib.util
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import BIN, CHECK_STAGE, dvc, edit_params, ran_stages, snapshot

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                                                   reason="TensorRT-RTX not installed (build stages need it)")]
OUTPUT_TOPS = ("data", "engines", "reports")


@pytest.fixture
def copy(built, tmp_path):
    project, _ = built
    dst = tmp_path / "project"
    shutil.copytree(project, dst, symlinks=True)
    return dst


def outputs(project: Path) -> dict:
    return {k: v for k, v in snapshot(project, OUTPUT_TOPS).items() if "/.tmp-" not in f"/{k}"}


def stale(project: Path, env: dict) -> set[str]:
    """Stages `dvc status` reports out of date (the always-changed check excluded)."""
    status = json.loads(dvc(project, env, "status", "--json").stdout or "{}")
    return set(status) - {CHECK_STAGE}


def test_outputs_and_noop(built, copy, isolated_env):
    _, first = built
    variants = ["fp16", "entropy", "minmax", "minmax_fp8"]
    assert {"check", "corpus", "calibrate", "holdout", "export", "stats", "reference", "report", "build_fp16@fp16",
            "quantize@entropy", "build@minmax", "evaluate@minmax", "bench@entropy", "sensitivity", "bench_torch",
            "evaluate_fp16@fp16", "bench_fp16@fp16"} <= first
    for v in variants:
        plan = copy / "engines" / "tensorrt_rtx" / f"{v}.plan"
        assert plan.stat().st_size > 0 and plan.with_suffix(".json").is_file()
        quality = json.loads((copy / "reports" / "variants" / v / "quality.json").read_text())
        # a graph that decodes: 8-bit quantization noise sits ~48 dB under the range (6 dB a bit); 20 dB
        # fails a broken graph, not a calibrator's choice
        assert quality["heldout"]["vs_fp32"]["peak_psnr_db"] > 20
        provenance = json.loads((copy / "reports" / "variants" / v / "quality.provenance.json").read_text())
        assert provenance["tensorrt"].startswith(("measured", "not measured"))
        assert (copy / "reports" / "variants" / v / "clips" / "difference_x10.wav").is_file()
        bench = json.loads((copy / "reports" / "variants" / v / "bench.json").read_text())
        assert all(len(t["ms"]) == 3 for t in bench["timings"])
    # the fp8 variant end to end: a float8 Q/DQ graph, a plan whose convolutions read fp8, the report saying so
    fp8 = json.loads((copy / "reports" / "variants" / "minmax_fp8" / "quality.provenance.json").read_text())
    assert fp8["precision"] == "fp8+fp16" and "fp8+fp16" in fp8["runtime"]["executed"]
    convolutions = json.loads((copy / "engines" / "tensorrt_rtx" / "minmax_fp8.json").read_text())["precisions"][
        "convolutions"]
    assert convolutions["fp8"] > 0 and convolutions["int8"] == 0
    toolchain = json.loads((copy / "engines" / "toolchain.json").read_text())
    assert set(toolchain) == {"backend", "version"}  # nothing about the machine: no rebuild on another kernel
    report = (copy / "reports" / "report.md").read_text()
    assert "Decision guide" in report and "not measured" in report and "split by file" in report
    assert "| `minmax_fp8` | fp8+fp16 |" in report and "**What FP8 buys with tensorrt_rtx" in report
    speed = report.split("## Speed\n", 1)[1].split("\n## ", 1)[0]
    assert speed.strip(), "the Speed section says what was timed or why nothing was"
    sweep = report.split("## Cost by length\n", 1)[1].split("\n## ", 1)[0]  # the length sweep (bench.sweep)
    assert "ms per s of audio" in sweep and "a first call at a new length" in sweep
    assert (copy / "reports" / "plots" / "latency.png").is_file()
    # nothing changed: only the always-changed check runs, nothing after it
    assert ran_stages(dvc(copy, isolated_env, "repro").stdout) == {"check"}


# A one-variant change re-running exactly its variant's stages: asserted on the change
# .ci/pr-check reproduces (tests/test_team.py), one pipeline run for both.


def test_inputs_named_in_params_are_dependencies(copy, isolated_env):
    from conftest import make_vae, save_diffusers_folder
    from vae_engines.data.corpus import write_corpus

    # Each change is accepted with `dvc commit` (what `dvc repro` would record, without the
    # minutes of re-running everything): the point is what the next change makes stale.
    # a folder of the user's audio: adding a file re-runs what reads it
    write_corpus(copy / "music", clips=6, seconds=0.5, sr=48000, seed=9)
    edit_params(copy, lambda p: (p["calibration"].update(path="music"), p["holdout"].update(path="music")))
    dvc(copy, isolated_env, "commit", "--force")
    shutil.copy(copy / "music" / "clip_000.flac", copy / "music" / "extra.flac")
    assert {"calibrate", "holdout"} <= stale(copy, isolated_env)
    assert "export" not in stale(copy, isolated_env)
    dvc(copy, isolated_env, "commit", "--force")
    # replaced weights at the same checkpoint path
    checkpoint = Path(yaml.safe_load((copy / "params.yaml").read_text())["model"]["checkpoint"])
    local = copy / "weights"
    shutil.copytree(checkpoint, local)
    edit_params(copy, lambda p: p["model"].update(checkpoint="weights"))
    dvc(copy, isolated_env, "commit", "--force")
    save_diffusers_folder(make_vae(seed=42), local)
    # (tune and bench_torch read the folded decoder export writes: they follow once it changes)
    assert {"calibrate", "holdout", "export"} == stale(copy, isolated_env)
    dvc(copy, isolated_env, "commit", "--force")
    # a TensorRT cache: the quantize stages re-run (byte-identical for variants that do not
    # read it), no engine is rebuilt
    (copy / "data" / "trt_caches" / "calib.cache").write_text("TRT-100700-EntropyCalibration2\n")
    assert stale(copy, isolated_env) == {"quantize@entropy", "quantize@minmax", "quantize@minmax_fp8"}
    ran = ran_stages(dvc(copy, isolated_env, "repro").stdout)
    assert not any(s.startswith("build") for s in ran)


def test_bad_params_stop_before_any_stage_and_keep_outputs(copy, isolated_env):
    before = outputs(copy)
    edit_params(copy, lambda p: p["int8"].update({"my variant": {"calibrator": "minmax"}}))
    result = dvc(copy, isolated_env, "repro", check=False)
    assert result.returncode != 0
    assert "'my variant' is not usable" in result.stderr + result.stdout
    assert "usage:" not in result.stderr + result.stdout
    assert ran_stages(result.stdout) == {"check"}
    assert outputs(copy) == before


def test_a_failing_stage_keeps_the_last_good_outputs(copy, isolated_env):
    before = outputs(copy)
    edit_params(copy, lambda p: p["int8"]["minmax"].update(exclude_nodes=["no.such.layer"]))
    result = dvc(copy, isolated_env, "repro", check=False)
    assert result.returncode != 0 and "'no.such.layer' is not a convolution layer" in result.stderr
    assert outputs(copy) == before  # engines/onnx/minmax.onnx and its ranges are still there
    assert "quantize@minmax" in stale(copy, isolated_env)


def _kill_bench_stage(copy: Path, env: dict, sig: signal.Signals) -> subprocess.Popen:
    """`dvc repro bench@minmax` with its stage's Python process sent `sig` once it is at work."""
    import psutil

    proc = subprocess.Popen([str(BIN / "dvc"), "repro", "bench@minmax"], cwd=copy, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    target = None
    while target is None:
        assert proc.poll() is None and time.time() < deadline, "bench@minmax never started"
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                cmdline = child.cmdline()
            except psutil.NoSuchProcess:
                continue
            if cmdline and "python" in Path(cmdline[0]).name and any(a.endswith("stages/bench.py") for a in cmdline):
                target = child  # the stage's Python process, not the shell DVC starts it with
        time.sleep(0.05)
    time.sleep(1.0)  # let it get into its work
    target.send_signal(sig)
    proc.communicate(timeout=300)
    return proc


def test_a_killed_stage_keeps_the_last_good_outputs(copy, isolated_env):
    """SIGTERM, then SIGKILL, to the same stage of one copy (one project, two kills: the
    second meets whatever the first left), then the re-run that sweeps what they left."""
    before = outputs(copy)
    repeats = yaml.safe_load((copy / "params.yaml").read_text())["bench"]["repeats"]
    edit_params(copy, lambda p: p["bench"].update(repeats=3000))  # bench stages now take a while
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = _kill_bench_stage(copy, isolated_env, sig)
        assert proc.returncode != 0, sig
        assert outputs(copy) == before, sig
        assert "bench@minmax" in stale(copy, isolated_env), sig
    # still stale; the re-run is quick. A bench param re-runs exactly the bench stages and the
    # report (one run checks that and the recovery)
    edit_params(copy, lambda p: p["bench"].update(repeats=repeats + 1))
    assert ran_stages(dvc(copy, isolated_env, "repro").stdout) == {
        "check", "bench_fp16@fp16", "bench@entropy", "bench@minmax", "bench@minmax_fp8", "bench_torch", "bench_int8",
        "report"}
    assert not list(copy.rglob(".tmp-*"))  # the next run swept what the killed ones left


def test_same_params_give_identical_bytes(copy, isolated_env):
    """Forcing every stage to run again reproduces calibration, statistics, ranges, Q/DQ
    graphs and quality metrics byte for byte (timings and machine records aside)."""
    before = outputs(copy)
    dvc(copy, isolated_env, "repro", "--force", "--single-item", "calibrate", "stats", "quantize@entropy",
        "quantize@minmax")
    after = outputs(copy)
    for key in before:
        if key.startswith(("data/calibration", "data/stats/stats.npz", "engines/onnx/")):
            assert after[key] == before[key], key
    quality = json.loads((copy / "reports/variants/minmax/quality.json").read_text())
    assert np.isfinite(quality["heldout"]["vs_fp32"]["peak_psnr_db"])


def test_editing_one_wing_reruns_only_the_stages_that_import_it(copy, isolated_env):
    """For each package folder (and top-level module), a change to one of its files makes
    `dvc status` name exactly the stages whose code dependencies list it (check aside)."""
    import yaml

    params = yaml.safe_load((copy / "params.yaml").read_text())

    def items(foreach) -> list[str]:  # what DVC expands a foreach into: a mapping's keys, a list's items
        if isinstance(foreach, str):  # "${section.key}"
            foreach = params
            for part in stage["foreach"].strip("${}").split("."):
                foreach = foreach[part]
        return list(foreach)

    listed: dict[str, set[str]] = {}
    for name, stage in yaml.safe_load((copy / "dvc.yaml").read_text())["stages"].items():
        body = stage.get("do", stage)
        keys = [name] if "foreach" not in stage else [f"{name}@{k}" for k in items(stage["foreach"])]
        for dep in body["deps"]:
            if isinstance(dep, str) and dep.startswith("vae_engines"):
                listed.setdefault(dep, set()).update(keys)
    for wing, expected in sorted(listed.items()):
        target = copy / wing
        path = target if target.is_file() else sorted(target.glob("*.py"))[0]
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        try:
            assert stale(copy, isolated_env) == expected, wing
        finally:
            path.write_text(original)
