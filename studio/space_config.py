"""``models.yaml``: the models a deployment (a Hugging Face Space) serves.

The file is small and has five keys, all optional::

    pair:                      # the default fusion pair (the pickers start on it)
      general: assets/models/toy-general
      expert: assets/models/toy-cartoon
    models: []                 # more diffusion models to offer in the pickers
    loras: {}                  # name -> LoRA file or folder (for LoRA experts)
    mccstn: null               # folder with the MccSTN weights (null: <models-dir>/mccstn)
    public: {}                 # public-mode caps (studio.public.PublicLimits fields), e.g. {max_steps: 30}

Every model entry is either a local path (relative to the file's folder, or absolute) or a Hub
reference ``{repo: owner/name, revision: main, subfolder: unet, file: x.safetensors}``
(``revision``, ``subfolder`` and ``file`` optional). Hub references are resolved once, at
start-up (:func:`resolve_space_models`): downloaded when the network is allowed, else taken from
the local Hugging Face cache; a reference that is in neither gives one error naming the entry.
Nothing is downloaded when ``HF_HUB_OFFLINE`` is set (the tests always set it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SpaceModels", "SpaceConfigError", "load_space_models", "resolve_space_models", "network_allowed",
           "configure"]

_KEYS = ("pair", "models", "loras", "mccstn", "public")
_HUB_KEYS = ("repo", "revision", "subfolder", "file")


class SpaceConfigError(ValueError):
    """models.yaml names something that is not there, or is not well formed (message names the entry)."""


@dataclass(frozen=True)
class SpaceModels:
    """Resolved local paths (Hub entries already fetched)."""

    general: Path | None = None
    expert: Path | None = None
    models: tuple = ()
    loras: dict = field(default_factory=dict)
    mccstn: Path | None = None
    public: dict = field(default_factory=dict)  # public-mode caps, checked by studio.public.PublicLimits
    source: Path | None = None       # the models.yaml they came from

    def diffusion_models(self) -> list[Path]:
        """The pair first, then the extra models (no duplicates)."""
        out: list[Path] = []
        for p in (self.general, self.expert, *self.models):
            if p is not None and p not in out:
                out.append(p)
        return out


def network_allowed(environ=None) -> bool:
    env = os.environ if environ is None else environ
    return str(env.get("HF_HUB_OFFLINE", "")).strip().lower() not in ("1", "true", "yes", "on")


def _read(path: Path) -> dict:
    import yaml
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpaceConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as e:
        raise SpaceConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0][:120]})") from None
    data = data or {}
    if not isinstance(data, dict):
        raise SpaceConfigError(f"{path}: expected a mapping with keys {', '.join(_KEYS)}")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise SpaceConfigError(f"{path}: unknown key(s) {', '.join(map(str, unknown))}; "
                               f"known keys: {', '.join(_KEYS)}")
    return data


def _fetch_hub(ref: dict, where: str, allow_network: bool) -> Path:
    unknown = sorted(set(ref) - set(_HUB_KEYS))
    if unknown or not isinstance(ref.get("repo"), str) or ref["repo"].count("/") != 1:
        raise SpaceConfigError(f"{where}: a Hub entry is {{repo: owner/name[, revision, subfolder, file]}}, "
                               f"got {str(ref)[:120]}")
    from huggingface_hub import hf_hub_download, snapshot_download
    repo, rev, sub, file = ref["repo"], ref.get("revision"), ref.get("subfolder"), ref.get("file")
    try:
        if file:
            return Path(hf_hub_download(repo, file, subfolder=sub, revision=rev,
                                        local_files_only=not allow_network))
        patterns = [f"{sub.strip('/')}/*"] if sub else None
        root = Path(snapshot_download(repo, revision=rev, allow_patterns=patterns,
                                      local_files_only=not allow_network))
        return root / sub if sub else root
    except Exception as e:  # noqa: BLE001 - huggingface_hub raises several kinds here
        how = ("could not be downloaded" if allow_network else
               "is not in the local Hugging Face cache and the network is off (HF_HUB_OFFLINE)")
        raise SpaceConfigError(f"{where}: Hub model {repo}{'/' + sub if sub else ''}"
                               f"{' file ' + file if file else ''} {how} "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None


def _entry(value, where: str, base: Path, allow_network: bool) -> Path:
    if isinstance(value, dict):
        return _fetch_hub(value, where, allow_network)
    if not isinstance(value, str) or not value.strip():
        raise SpaceConfigError(f"{where}: expected a path or {{repo: owner/name}}, got {str(value)[:80]!r}")
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise SpaceConfigError(f"{where}: no such file or folder: {value} (looked at {p})")
    return p


def resolve_space_models(path: Path | str, allow_network: bool | None = None) -> SpaceModels:
    """Read ``path`` and resolve every entry to a local path (Hub entries fetched now)."""
    path = Path(path)
    allow = network_allowed() if allow_network is None else allow_network
    data = _read(path)
    base = path.resolve().parent
    name = path.name
    pair = data.get("pair") or {}
    if not isinstance(pair, dict) or set(pair) - {"general", "expert"}:
        raise SpaceConfigError(f"{name}: pair: expected {{general: ..., expert: ...}}")
    general = _entry(pair["general"], f"{name}: pair.general", base, allow) if pair.get("general") else None
    expert = _entry(pair["expert"], f"{name}: pair.expert", base, allow) if pair.get("expert") else None
    if (general is None) != (expert is None):
        raise SpaceConfigError(f"{name}: pair: give both general and expert, or neither")
    models = data.get("models") or []
    if not isinstance(models, list):
        raise SpaceConfigError(f"{name}: models: expected a list")
    loras = data.get("loras") or {}
    if not isinstance(loras, dict):
        raise SpaceConfigError(f"{name}: loras: expected a mapping name -> path or Hub entry")
    mccstn = data.get("mccstn")
    public = data.get("public") or {}
    if not isinstance(public, dict):
        raise SpaceConfigError(f"{name}: public: expected a mapping of caps, e.g. {{max_steps: 30}}")
    return SpaceModels(
        general=general, expert=expert,
        models=tuple(_entry(m, f"{name}: models[{i}]", base, allow) for i, m in enumerate(models)),
        loras={str(k): _entry(v, f"{name}: loras.{k}", base, allow) for k, v in loras.items()},
        mccstn=_entry(mccstn, f"{name}: mccstn", base, allow) if mccstn else None,
        public=dict(public), source=path)


def load_space_models(path: Path | str | None, allow_network: bool | None = None) -> SpaceModels | None:
    """``resolve_space_models`` when ``path`` is given, else None."""
    return None if path is None else resolve_space_models(path, allow_network)


def configure(cfg) -> object:
    """Start-up: read ``cfg.models_config`` once (Hub entries fetched now) into ``cfg.space``; its
    MccSTN folder becomes the weights folder unless one was given; in public mode its ``public:``
    caps become ``cfg.public_limits``. Returns ``cfg``."""
    from .public import PublicLimits
    space = load_space_models(cfg.models_config)
    cfg.space = space
    if space is not None and space.mccstn is not None and cfg.mccstn_weights is None:
        cfg.mccstn_weights = space.mccstn
    if cfg.public and cfg.public_limits is None:
        try:
            cfg.public_limits = PublicLimits.from_mapping(space.public if space else None,
                                                          f"{space.source.name}: public" if space else "public")
        except ValueError as e:
            raise SpaceConfigError(str(e)) from None
    return cfg
