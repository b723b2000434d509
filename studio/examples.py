"""Example recipes for the app.

The fusion examples are the reference's two recipes (MagicFusion README, ``magicfusion.sh``)
in the toy world, where the cartoon expert has blind spots (it never saw green, purple or
triangles) and the general model has only seen photos:

1. Composition from the general model, style from the expert: the general model is primary,
   ``600,1,1`` and mode 2 - SNB on the early steps (t > 600) lets the expert's style in while
   the general model lays out what the expert cannot draw; the general model alone finishes.
   (Reference: "A lion with a crown on his head", fusion_selection 600,1,1, merge_mode 2.)
2. Expert composition first, then SNB: the expert is primary, ``850,1,1`` and mode 1 - the
   expert alone sets the composition on the first steps (t > 850), SNB for the rest.
   (Reference: "A bee is making honey", fusion_selection 850,1,1, merge_mode 1.)

Like the reference, each recipe gives both models the same prompt.

Before them comes the **demo** (the first example; its caption is shown under the Fuse button and
above the examples): a blind-spot prompt with the settings the fusion-quality benchmark recommends
for its family, read from the benchmark's prompt file (``assets/toyworld/fusion_prompts.json``:
defaults + family settings, options beyond the paper included), with a one-line caption saying what
to look at. The Fusion tab's widgets start from it (:func:`studio.ui.fusion_tab.start_values`) and
the app's defaults are its settings (:data:`studio.requests.APP`), so the first Fuse click, and a
``/fuse`` call that leaves a parameter out, run the demo.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import ASSETS_DIR


@dataclass(frozen=True)
class FusionExample:
    title: str
    prompt: str           # expert
    prompt1: str          # general
    fusion_selection: str
    mode: int
    primary: str
    seed: int = 6854
    steps: int = 50
    guidance: float = 7.5
    negative_prompt: str = ""
    blend: str = ""       # options beyond the paper, JSON (fusion.blend_options); "" = the faithful SNB
    caption: str = ""     # one line: what to look at

    def as_dict(self) -> dict:
        return asdict(self)


FUSION_PROMPTS = ASSETS_DIR / "toyworld" / "fusion_prompts.json"

#: the demo: a prompt of the expert's blind spots (it never saw purple or triangles) and its family
DEMO = dict(family="blind_both", prompt="a cartoon of a big purple triangle", prompt1="a big purple triangle",
            seed=6854,
            caption="Look at *Fused*: a cartoon (outline, eyes, cream background) of a **purple triangle**; "
                    "the expert alone never saw purple or triangles and draws something else.")


def recommended_settings(family: str, path: Path = FUSION_PROMPTS) -> dict:
    """The benchmark's settings for a prompt family: the prompt file's defaults + the family's settings."""
    spec = json.loads(Path(path).read_text())
    return {**spec["defaults"], **spec["families"][family]["settings"]}


def demo_example(path: Path = FUSION_PROMPTS) -> FusionExample:
    """The first example: :data:`DEMO` with the benchmark's recommended settings for its family."""
    s = recommended_settings(DEMO["family"], path)
    blend = json.dumps(s["blend"], separators=(",", ":")) if s.get("blend") else ""
    # (no "fuse" in the title: the browser tests find the Fuse button by its accessible name)
    return FusionExample(f"Demo: the expert's blind spot with the benchmark's best settings ({DEMO['family']})",
                         prompt=DEMO["prompt"], prompt1=DEMO["prompt1"], fusion_selection=s["fusion_selection"],
                         mode=int(s["mode"]), primary=s["primary"], seed=DEMO["seed"], steps=int(s["steps"]),
                         guidance=float(s["guidance_scale"]), blend=blend, caption=DEMO["caption"])


#: the reference's two recipes, one click away as the second and third examples (the Fusion tab's widgets and
#: the app's defaults are the demo's)
REFERENCE_RECIPES = [
    FusionExample("Recipe 1: composition from the general model, style from the expert",
                  prompt="a big green triangle", prompt1="a big green triangle",
                  fusion_selection="600,1,1", mode=2, primary="general"),
    FusionExample("Recipe 2: expert composition first, then SNB",
                  prompt="a small blue square", prompt1="a small blue square",
                  fusion_selection="850,1,1", mode=1, primary="expert"),
]

FUSION_EXAMPLES = [demo_example(), *REFERENCE_RECIPES]

EXAMPLES_DIR = ASSETS_DIR / "examples"


def style_examples(limit: int = 4) -> list[tuple[str, str]]:
    """(content, style) image pairs from assets/examples: toy photo renders as content, toy
    cartoon renders as style (paired with a different scene); [] when the images are absent."""
    def pick(kind: str) -> list[Path]:
        big = sorted(EXAMPLES_DIR.glob(f"toy_{kind}_*_256.png"))
        return big or sorted(EXAMPLES_DIR.glob(f"toy_{kind}_*.png"))

    contents, styles = pick("photo"), pick("cartoon")
    if not contents or not styles:
        files = sorted(p for p in EXAMPLES_DIR.glob("*.png"))
        if len(files) < 2:
            return []
        half = len(files) // 2
        contents, styles = files[:half], files[half:]
    pairs = []
    for i, c in enumerate(contents[:limit]):
        s = styles[(i + 1) % len(styles)]
        pairs.append((str(c), str(s)))
    return pairs
