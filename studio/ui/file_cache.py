"""Race-free writes into Gradio's file cache.

Gradio 6 stores every output image under ``<cache>/<sha of its bytes>/image.<fmt>`` and writes it
with ``Path.write_bytes`` each time, even when the file is already there
(``gradio.processing_utils.save_pil_to_cache`` / ``save_bytes_to_cache``, checked on 6.31.0). Two
users whose outputs are the same image (the same example, the same seed) therefore share one file,
and the second write truncates it while the first user's download is being served: that download
ends with ``Too little data for declared Content-Length`` (seen in tests/test_load.py under load).

:func:`install` replaces those two functions with versions that keep the same paths and names but
never rewrite a file in place: a file already in its content-addressed folder with the right size
is left alone, and a new one is written to a temporary name and moved into place with
``os.replace`` (atomic on POSIX and Windows), so a reader sees either no file or the whole file.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

_installed = False
_lock = threading.Lock()


def write_once(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (a content-addressed cache file) without ever truncating it."""
    try:
        if path.stat().st_size == len(data):
            return  # same folder = same content hash: the file already holds these bytes
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def install() -> None:
    """Patch gradio.processing_utils once per process (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        from gradio import processing_utils as pu

        def save_pil_to_cache(img, cache_dir, name: str = "image", format: str = "webp") -> str:
            data = pu.encode_pil_to_bytes(img, format)
            folder = Path(cache_dir) / pu.hash_bytes(data)
            folder.mkdir(exist_ok=True, parents=True)
            path = (folder / f"{name}.{format}").resolve()
            write_once(path, data)
            return str(path)

        def save_bytes_to_cache(data: bytes, file_name: str, cache_dir: str) -> str:
            folder = Path(cache_dir) / pu.hash_bytes(data)
            folder.mkdir(exist_ok=True, parents=True)
            if not Path(file_name).suffix:
                file_name += pu.detect_audio_format(data)
            path = folder / Path(file_name).name
            write_once(path, data)
            return str(path.resolve())

        pu.save_pil_to_cache = save_pil_to_cache
        pu.save_bytes_to_cache = save_bytes_to_cache
        _installed = True
