"""One shared pool of slots for model work, and one-line messages for what goes wrong.

Every job that runs a model (a fusion, a style transfer) takes a slot from :class:`WorkSlots`
first; with ``concurrency=1`` jobs run one after another in arrival order, whichever tab sent
them. (The Gradio events also share one ``concurrency_id``; the slots additionally cover a
worker thread that is still winding down after its request was cancelled, and callers that
are not Gradio.)
"""
from __future__ import annotations

import contextlib
import threading

__all__ = ["WorkSlots", "StudioError", "is_oom", "friendly_error"]


class StudioError(RuntimeError):
    """A failure with a message meant for the user (shown as is)."""


class WorkSlots:
    def __init__(self, concurrency: int = 1):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.concurrency = concurrency
        self._cond = threading.Condition()
        self._busy = 0
        self.waiting = 0

    @contextlib.contextmanager
    def slot(self, cancel=None, on_wait=None):
        """Hold one slot. ``cancel``: an object with ``is_set()``; when set while waiting,
        raises :class:`fusion.sampler.Cancelled`. ``on_wait(n_waiting)`` is called while waiting."""
        from fusion.sampler import Cancelled
        with self._cond:
            self.waiting += 1
            try:
                while self._busy >= self.concurrency:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("cancelled while waiting for a free slot")
                    if on_wait is not None:
                        on_wait(self.waiting)
                    self._cond.wait(timeout=0.2)
                self._busy += 1
            finally:
                self.waiting -= 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                idle = self._busy == 0
                self._cond.notify_all()
            if idle:  # the last job ended: hand its freed memory back soon (studio.memory)
                from .memory import release_when_idle
                release_when_idle(lambda: self._busy == 0)

    @property
    def busy(self) -> int:
        return self._busy


def is_oom(exc: BaseException) -> bool:
    try:
        import torch
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except Exception:  # pragma: no cover
        pass
    msg = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in msg or isinstance(exc, MemoryError) or "can't allocate memory" in msg)


def friendly_error(exc: BaseException, what: str = "request") -> str:
    """One or a few lines for the user; the app shows it and stays up."""
    from fusion.loading import IncompatibleModelsError, ModelLoadError
    from fusion.lora import LoraError
    if isinstance(exc, StudioError):
        return str(exc)
    if isinstance(exc, LoraError):
        return f"Could not apply the LoRA: {exc}"
    if isinstance(exc, ModelLoadError):
        return f"Could not load the model: {exc}"
    if isinstance(exc, IncompatibleModelsError):
        return f"These models cannot be fused: {exc}"
    if is_oom(exc):
        return (f"Out of memory during the {what}. Warm models not in use were unloaded; try a smaller "
                f"size, fewer models at once, or --precision fp16. ({str(exc).splitlines()[0][:160]})")
    if isinstance(exc, (ValueError, TypeError, FileNotFoundError)):
        return str(exc)
    return f"The {what} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
