"""Two users receiving the same output image must never see a truncated file (tests/test_load.py
once failed with 'Too little data for declared Content-Length': Gradio rewrote the shared
content-addressed file in place while serving it)."""
import threading

import numpy as np
from PIL import Image

from studio.ui import file_cache


def _hammer(save, tmp_path, rounds=300):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    path = save(img, str(tmp_path))
    full = len(open(path, "rb").read())
    stop, short = threading.Event(), []

    def writer():
        while not stop.is_set():
            save(img, str(tmp_path))

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(rounds):  # what the server does: open the path and read it to the end
            with open(path, "rb") as f:
                n = len(f.read())
            if n != full:
                short.append(n)
    finally:
        stop.set()
        t.join()
    return short, path


def test_gradio_cache_writes_never_truncate_a_file_being_read(tmp_path):
    file_cache.install()
    from gradio import processing_utils as pu
    short, path = _hammer(pu.save_pil_to_cache, tmp_path)
    assert short == []
    assert path.endswith("image.webp")  # Gradio's own naming kept


def test_same_bytes_are_written_once_and_new_files_appear_whole(tmp_path):
    p = tmp_path / "x.bin"
    file_cache.write_once(p, b"abc")
    ino = p.stat().st_ino
    file_cache.write_once(p, b"abc")
    assert p.stat().st_ino == ino and p.read_bytes() == b"abc"
    assert not list(tmp_path.glob(".*.part"))
