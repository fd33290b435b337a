"""A fork server for tests that run one stage script at a time (conftest.run_stage): the
libraries every stage imports (PyTorch, ONNX, ONNX Runtime: ~2.5 s of CPU a process on the
2-core CI machines) are imported once here, and each request forks a child that runs the
stage script as `python stages/<stage>.py ARGS` would -- its own process, its working
directory, environment and argv, `__main__` as its name, stdout and stderr to files, its exit
status the status -- without paying the imports again. Nothing here touches CUDA before the
fork, so a child can still use a GPU (and sees the CUDA_VISIBLE_DEVICES it was given).

Protocol: one JSON request a line on stdin {"script", "args", "cwd", "env", "stdout",
"stderr"}; one JSON line back {"returncode"} once the child has ended."""

from __future__ import annotations

import importlib
import json
import os
import sys

PRELOAD = ("numpy", "yaml", "torch", "torch.export", "onnx", "onnxruntime", "soundfile", "safetensors.torch")


def _child(request: dict) -> int:
    import runpy
    import traceback

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    sys.argv = [request["script"], *request["args"]]
    sys.path[0] = os.path.dirname(request["script"])  # what `python <script>` puts first
    try:
        runpy.run_path(request["script"], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def main() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
        sys.stdout.write(json.dumps({"returncode": returncode}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
