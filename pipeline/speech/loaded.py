"""What the speech models share: one loaded model per process, and the ONNX Runtime session they run in.

Loading is slow and a model takes tens to hundreds of MB, so each is loaded once per process and shared by
every call (each runs on its own single worker thread, so calls queue there instead of thrashing the cores).
`Loaded` is that process-wide registry, keyed by whatever tells models apart (a path, a name and a
directory); `onnx_session` is the CPU session the ONNX models (Silero, Smart Turn, Piper) are built on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Generic, TypeVar

Model = TypeVar("Model")


class Loaded(Generic[Model]):
    """Models of one kind, loaded on first use by `load`, once per key, whichever thread asks first."""

    def __init__(self, load: Callable[..., Model]) -> None:
        self._load = load
        self._models: dict[Hashable, Model] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, *args: Any) -> Model:
        """The model for `key`, made by `load(*args)` the first time."""
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = self._models[key] = self._load(*args)
            return model


def onnx_session(path: Path, cpu_threads: int) -> Any:
    """An ONNX Runtime CPU session: `cpu_threads` inside an operator, operators one at a time."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = cpu_threads
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
