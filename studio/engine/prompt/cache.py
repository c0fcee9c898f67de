"""The loaded Stable Diffusion pipelines, kept between generations, and their release."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Generator
from pathlib import Path
from typing import Any

import torch

from studio.core.jobs import CancelToken, Progress
from studio.engine.device import free_memory
from studio.engine.prompt import memory as mem


class PipelineCache:
    """Loaded pipelines, kept between generations; use it from one thread (the engine's).

    Keyed by (model path, task, device, dtype, offload). Pipelines of one model for other tasks
    (img2img after txt2img) are derived with ``from_pipe`` and share its weights. At most
    ``max_models`` models stay loaded: loading another evicts the oldest (a Stable Diffusion
    model is gigabytes).
    """

    def __init__(self, max_models: int = 1) -> None:
        self.max_models = max_models
        self._pipes: OrderedDict[tuple, Any] = OrderedDict()

    @staticmethod
    def key_for(
        path: str | Path, task: str, device: torch.device, dtype: torch.dtype, offload: bool = False
    ) -> tuple:
        """The cache key of a model's pipeline for ``task`` (``path`` as given, resolved)."""
        return (
            str(Path(path).expanduser().resolve()),
            task,
            str(device),
            mem.dtype_name(dtype),
            offload,
        )

    @staticmethod
    def _model_key(key: tuple) -> tuple:
        path, _task, *rest = key
        return (path, *rest)

    def get(self, key: tuple) -> Any | None:
        pipe = self._pipes.get(key)
        if pipe is not None:
            self._pipes.move_to_end(key)
        return pipe

    def sibling(self, key: tuple) -> Any | None:
        """A loaded pipeline of the same model, device, dtype and offload, for another task."""
        want = self._model_key(key)
        return next((p for k, p in self._pipes.items() if self._model_key(k) == want), None)

    def put(self, key: tuple, pipe: Any) -> None:
        self._pipes[key] = pipe
        self._pipes.move_to_end(key)
        models = list(OrderedDict.fromkeys(self._model_key(k) for k in self._pipes))
        for old in models[: max(0, len(models) - self.max_models)]:
            self.evict(old)

    def evict(self, model_key: tuple) -> None:
        for k in [k for k in self._pipes if self._model_key(k) == model_key]:
            del self._pipes[k]

    def evict_other(self, key: tuple) -> None:
        """Drop every model but ``key``'s (before loading it in another configuration)."""
        keep = self._model_key(key)
        for model_key in {self._model_key(k) for k in self._pipes} - {keep}:
            self.evict(model_key)

    def clear(self) -> None:
        self._pipes.clear()

    def models(self) -> list[str]:
        """The paths of the models loaded now, oldest first."""
        return list(OrderedDict.fromkeys(k[0] for k in self._pipes))

    def on_gpu(self) -> bool:
        """Whether a loaded pipeline holds GPU memory (offloaded ones included)."""
        return any(k[2].startswith(("cuda", "mps")) or k[4] for k in self._pipes)

    def release(self) -> str:
        """Drop every loaded pipeline and hand its memory back (to the GPU driver too); a line
        saying what was freed. The next generation loads its model again."""
        names = [Path(p).name for p in self.models()]
        before = _gpu_bytes()
        self._pipes.clear()
        free_memory()
        if not names:
            return "No model was loaded."
        freed = before - _gpu_bytes()
        what = ", ".join(names)
        gpu = f"; {freed / 1024**3:.1f} GB of GPU memory freed" if freed > 0 else ""
        return f"Unloaded {what}{gpu}. It loads again on the next Generate."

    def __len__(self) -> int:
        return len(self._pipes)


def _gpu_bytes() -> int:
    """What the CUDA caching allocator holds now, 0 without CUDA (torch never initialised)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.memory_reserved())
    return 0


def make_room_for_training(device: str | None) -> str | None:
    """Before training on a GPU (``device`` not "cpu"): unload the pipelines the Prompt
    workspace left on the GPU, which hold gigabytes that training needs. A line for the log, or
    None when nothing was unloaded."""
    cache = default_cache()
    if (device or "auto").lower() == "cpu" or not cache.on_gpu():
        return None
    return "Making room for training. " + cache.release()


def release_models_job(
    token: CancelToken, cache: PipelineCache | None = None
) -> Generator[Progress, None, str]:
    """A job that unloads every Stable Diffusion pipeline (the process's cache by default)."""
    yield Progress("models", message="Unloading models")
    return (cache if cache is not None else default_cache()).release()


_default_cache: PipelineCache | None = None


def default_cache() -> PipelineCache:
    """The process's cache (the engine thread is the only one that runs generation jobs)."""
    global _default_cache
    if _default_cache is None:
        _default_cache = PipelineCache()
    return _default_cache
