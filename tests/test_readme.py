"""Every shell block the README shows works exactly as written: each block says how it is
tested, and the ones marked `run` run here, in a reproduced project of the tiny model."""

import importlib.util
import re
import shutil
import subprocess

import pytest

from conftest import ROOT

README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"<!-- readme-test: (?P<how>[^>]*?) -->\n```(?P<lang>bash|yaml|python)\n(?P<code>.*?)```", re.S)
BLOCKS = [(m["how"].strip(), m["code"]) for m in BLOCK.finditer(README) if m["lang"] == "bash"]
PARAMS = [m["code"] for m in BLOCK.finditer(README) if m["lang"] == "yaml"]
PYTHON = [m["code"] for m in BLOCK.finditer(README) if m["lang"] == "python"]
RUN = [(how, code) for how, code in BLOCKS if how.startswith("run")]


def test_every_shell_block_says_how_it_is_tested():
    assert README.count("```bash") == len(BLOCKS)
    for how, code in BLOCKS:
        assert how.startswith(("run", "covered by")), (how, code)
        if how.startswith("covered by .ci/run"):
            ci = (ROOT / ".ci" / "run").read_text()
            assert code.strip() in ci, f".ci/run does not run the README line: {code.strip()}"
        elif how.startswith("covered by tests/"):
            test_file, _, name = how.removeprefix("covered by ").partition("::")
            assert f"def {name}(" in (ROOT / test_file).read_text(), how


@pytest.mark.parametrize("index", range(len(PARAMS)))
def test_readme_params_are_valid(index):
    """The params the README suggests pass validation merged into the shipped params.yaml."""
    import yaml

    from vae_engines.core.params import Params, from_mapping

    def merge(base: dict, over: dict) -> dict:
        return {**base, **{k: merge(base.get(k, {}), v) if isinstance(v, dict) else v for k, v in over.items()}}

    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    from_mapping(Params, merge(shipped, yaml.safe_load(PARAMS[index])), "")


def test_every_python_block_is_tested():
    assert README.count("```python") == len(PYTHON) >= 1


def test_the_two_commands_come_first():
    head = README.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    assert head.count("```bash") == 2


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="TensorRT-RTX not installed")
@pytest.mark.parametrize("index", range(len(RUN)))
def test_readme_block_runs(built, tmp_path, isolated_env, index):
    how, code = RUN[index]
    project, _ = built
    work = tmp_path / "work"
    shutil.copytree(project, work, symlinks=True)
    env = dict(isolated_env)
    server = None
    if "S3" in how:
        import boto3
        from moto.server import ThreadedMotoServer

        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        server.start()
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                   AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
        bucket = re.search(r"s3://([^/]+)/", code).group(1)
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=bucket)
    try:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env, capture_output=True,
                                text=True, timeout=900)
    finally:
        if server is not None:
            server.stop()
    assert result.returncode == 0, f"{code}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="TensorRT-RTX not installed")
@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_readme_python_runs(built, tmp_path, isolated_env, index):
    """The README's Python, as written, in a reproduced project."""
    import sys

    project, _ = built
    result = subprocess.run([sys.executable, "-c", PYTHON[index]], cwd=project, env=isolated_env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{PYTHON[index]}\n{result.stderr[-3000:]}"


def test_the_cpu_compiled_engine_figures_are_the_committed_measurement():
    """Why the CPU default builds no compiled engine is said with the measured figures
    (benchmarks/results/cpu_compiled.json), not with a claim that it is no faster."""
    import json

    record = json.loads((ROOT / "benchmarks" / "results" / "cpu_compiled.json").read_text())
    medians = {(t["series"], t["frames"]): t["median_ms"] for t in record["timings"]}
    for frames in (32, 125):
        compiled, eager = medians[("compiled fp32", frames)], medians[("eager fp32", frames)]
        assert f"{compiled:.0f} against {eager:.0f} ms at {frames}" in " ".join(README.split())
    assert "not faster" not in (ROOT / "params.yaml").read_text()


def test_every_benchmark_script_is_in_the_benchmarks_index():
    """benchmarks/README.md names every script there, as a lasting tool or as an experiment's
    record, so a reader knows which ones are kept working with the code."""
    index = (ROOT / "benchmarks" / "README.md").read_text()
    scripts = [p for p in (ROOT / "benchmarks").glob("*") if p.suffix in (".py", ".sh")]
    scripts += [p for p in (ROOT / "benchmarks" / "experiments").glob("*")
                if p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__")]
    names = [p.relative_to(ROOT / "benchmarks").as_posix() + ("/" if p.is_dir() else "") for p in scripts]
    assert len(names) > 20
    assert [n for n in names if f"`{n}`" not in index] == []
