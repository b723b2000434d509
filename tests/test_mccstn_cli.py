"""The ``python -m mccstn`` command line: naming, no silent overwrite, bad inputs."""
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from mccstn.cli import main
from tests.test_mccstn_common import PARITY_DIR, parity_weights, single_thread
from tests.test_mccstn_common import weights  # noqa: F401  (shared fixture)


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


@pytest.fixture()
def inputs(tmp_path):
    cdir, sdir = tmp_path / "content", tmp_path / "style"
    cdir.mkdir()
    sdir.mkdir()
    shutil.copy(PARITY_DIR / "content_a.png", cdir / "photo.png")
    Image.open(PARITY_DIR / "content_a.png").transpose(Image.FLIP_LEFT_RIGHT).save(cdir / "photo2.jpg")
    shutil.copy(PARITY_DIR / "style_a.png", sdir / "paint.png")
    (cdir / "readme.txt").write_text("not an image; skipped when listing the folder")
    return cdir, sdir


def test_single_pair_naming_and_no_overwrite(weights, inputs, tmp_path, capsys):
    cdir, sdir = inputs
    out = tmp_path / "out"
    args = ["--content", str(cdir / "photo.png"), "--style", str(sdir / "paint.png"),
            "--weights", str(weights), "--output", str(out), "--device", "cpu"]
    assert main(args) == 0
    target = out / "photo_stylized_paint.jpg"
    assert target.is_file() and Image.open(target).size == (128, 128)
    stamp = target.stat().st_mtime_ns
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert target.stat().st_mtime_ns == stamp
    assert main(args + ["--overwrite", "--save_ext", "png", "--alpha", "0.5", "--preserve_color"]) == 0
    assert (out / "photo_stylized_paint.png").is_file()


def test_folders_and_interpolation_naming(weights, inputs, tmp_path):
    cdir, sdir = inputs
    out = tmp_path / "out"
    assert main(["--content_dir", str(cdir), "--style_dir", str(sdir), "--weights", str(weights),
                 "--output", str(out), "--save_ext", ".png", "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["photo2_stylized_paint.png", "photo_stylized_paint.png"]
    two = f"{sdir / 'paint.png'},{cdir / 'photo2.jpg'}"
    assert main(["--content", str(cdir / "photo.png"), "--style", two, "--style_interpolation_weights",
                 "1,1", "--weights", str(weights), "--output", str(out), "--device", "cpu"]) == 0
    assert (out / "photo_interpolation.jpg").is_file()


def test_bad_inputs(weights, inputs, tmp_path, capsys):
    cdir, sdir = inputs
    out = tmp_path / "out"
    base = ["--weights", str(weights), "--output", str(out), "--device", "cpu"]
    assert main(["--content", str(cdir / "readme.txt"), "--style", str(sdir / "paint.png")] + base) == 1
    assert "not a readable image" in capsys.readouterr().err
    assert main(["--content", str(cdir / "photo.png"), "--style", str(sdir / "paint.png"),
                 "--alpha", "1.2"] + base) == 2
    assert "alpha" in capsys.readouterr().err
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    assert main(["--content", str(tmp_path / "dot.png"), "--style", str(sdir / "paint.png")] + base) == 1
    assert "1x1" in capsys.readouterr().err
    assert main(["--content", str(cdir / "photo.png"), "--style", str(sdir / "paint.png"),
                 "--weights", str(tmp_path / "nowhere"), "--output", str(out)]) == 2
    assert "vgg_normalised.pth" in capsys.readouterr().err
    assert main(["--content", str(cdir / "photo.png"), "--style", "a.png,b.png"] + base) == 2


def test_module_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "mccstn", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "--preserve_color" in proc.stdout and "--content_size" in proc.stdout
