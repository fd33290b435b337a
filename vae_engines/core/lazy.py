"""The one way this project imports a heavy optional module: at the top of a module, loaded
on first use.

torch, onnx, onnxruntime and TensorRT each take from a fraction of a second to a few
seconds to import. A stage with nothing to do for its inputs (a TensorRT timing on a
machine without a GPU that can run the plan, say) must not pay for them, and `--help`
must stay instant. So a module that needs one writes `torch = lazy_import("torch")` at its
top, next to its other imports, and the import happens on the first attribute access.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule(ModuleType):
    """A module proxy that imports `name` on its first attribute access."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = None

    def _load(self) -> ModuleType:
        module = self.__dict__["_lazy_target"]
        if module is None:
            module = importlib.import_module(self.__name__)
            self.__dict__["_lazy_target"] = module
        return module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._load())


def lazy_import(name: str) -> Any:
    """`name` as a module whose import waits for its first use."""
    return LazyModule(name)
