"""models.yaml: the Space's models by local path or Hub repo id; never a download in tests.

The Hub cache used in the cached-repo test is laid out as the huggingface_hub docs describe it
("Understand caching", guides/manage-cache): ``models--{owner}--{name}/refs/{revision}`` holds
the commit hash, ``snapshots/{commit}/`` the files.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from studio.space_config import SpaceConfigError, network_allowed, resolve_space_models

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "models.yaml"
    p.write_text(text)
    return p


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as c
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_tests_run_offline():
    assert not network_allowed()


def test_shipped_file_names_the_toy_models():
    m = resolve_space_models(ROOT / "models.yaml")
    assert m.general == ROOT / "assets/models/toy-general" and m.expert == ROOT / "assets/models/toy-cartoon"
    assert m.diffusion_models() == [m.general, m.expert] and m.mccstn is None


def test_local_paths_relative_to_the_file(tmp_path):
    for d in ("g", "e", "more/x", "weights", "loras/a.safetensors"):
        (tmp_path / d).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / d).mkdir() if not d.endswith(".safetensors") else (tmp_path / d).write_bytes(b"")
    p = write(tmp_path, "pair: {general: g, expert: e}\nmodels: [more/x]\nloras: {cartoon: loras/a.safetensors}\n"
                        "mccstn: weights\n")
    m = resolve_space_models(p)
    assert (m.general, m.expert, m.models) == (tmp_path / "g", tmp_path / "e", (tmp_path / "more/x",))
    assert m.loras == {"cartoon": tmp_path / "loras/a.safetensors"} and m.mccstn == tmp_path / "weights"


def test_missing_local_model_names_the_entry(tmp_path):
    (tmp_path / "g").mkdir()
    p = write(tmp_path, "pair: {general: g, expert: not-there}\n")
    with pytest.raises(SpaceConfigError, match=r"models.yaml: pair.expert: no such file or folder: not-there"):
        resolve_space_models(p)


def test_hub_model_missing_offline_is_a_clear_error(tmp_path, empty_hub_cache):
    (tmp_path / "g").mkdir()
    p = write(tmp_path, "pair:\n  general: g\n  expert: {repo: someone/cartoon-expert}\n")
    with pytest.raises(SpaceConfigError) as e:
        resolve_space_models(p)
    msg = str(e.value)
    assert "pair.expert" in msg and "someone/cartoon-expert" in msg and "network is off" in msg


def test_hub_model_in_the_local_cache_resolves_offline(tmp_path, empty_hub_cache):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hub_cache / "models--someone--cartoon-expert"
    snap = repo / "snapshots" / commit
    (snap / "unet").mkdir(parents=True)
    (snap / "model_index.json").write_text("{}")
    (snap / "unet" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (tmp_path / "g").mkdir()
    p = write(tmp_path, "pair:\n  general: g\n  expert: {repo: someone/cartoon-expert}\n"
                        "models:\n  - {repo: someone/cartoon-expert, subfolder: unet}\n")
    m = resolve_space_models(p)
    assert m.expert == snap and (m.expert / "model_index.json").is_file()
    assert m.models == (snap / "unet",)


@pytest.mark.parametrize("text, message", [
    ("pairs: {}\n", "unknown key"),
    ("pair: {general: g}\n", "give both general and expert"),
    ("models: {a: b}\n", "models: expected a list"),
    ("models: [{repo: no-slash}]\n", "a Hub entry is"),
    ("pair: [1, 2\n", "not valid YAML"),
])
def test_malformed_files_are_named(tmp_path, text, message):
    (tmp_path / "g").mkdir()
    with pytest.raises(SpaceConfigError, match=message):
        resolve_space_models(write(tmp_path, text))
