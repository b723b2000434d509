"""Toy-world judge scores for sweep cells (optional: only for the toy models' 64x64 images).

The judge (:mod:`toyworld.judge`, trained on ground-truth renders only) reads every sample of a
cell; as in ``bench/fusion_quality.py`` a sample is *prompt-right* when every attribute the
expert's prompt names (colour, shape, size) is judged so, *cartoon* when its style is judged
cartoon, and *joint* when both. A cell's scores are the rates over its samples; ``judge`` is the
joint rate.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["JUDGE_SIZE", "CellJudge"]

#: the judge reads 64x64 images (the toy world's size)
JUDGE_SIZE = 64


class CellJudge:
    """Loads the judge once; ``score(images)`` -> {"judge", "judge_prompt", "judge_cartoon"}."""

    def __init__(self, prompt: str, path: str | Path | None = None):
        from toyworld.grammar import parse
        from toyworld.judge import load_judge
        from toyworld.models import JUDGE_PATH

        path = Path(path) if path is not None else JUDGE_PATH
        if not path.is_file():
            raise ValueError(f"--judge: the toy-world judge is missing: {path}")
        self.judge = load_judge(path)
        self.want = {k: v for k, v in parse(prompt).items() if v is not None and k != "style"}

    def score(self, images: np.ndarray) -> dict[str, float]:
        from toyworld.judge import predict

        if images.shape[1:3] != (JUDGE_SIZE, JUDGE_SIZE):
            raise ValueError(f"--judge reads {JUDGE_SIZE}x{JUDGE_SIZE} images (the toy world's); the cells are "
                             f"{images.shape[1]}x{images.shape[2]}")
        pred = predict(self.judge, np.array(images))  # a writable copy (Ray hands out read-only arrays)
        ok = np.array([all(pred[k][i] == v for k, v in self.want.items()) for i in range(len(images))])
        cartoon = np.array([pred["style"][i] == "cartoon" for i in range(len(images))])
        return {"judge": float((ok & cartoon).mean()), "judge_prompt": float(ok.mean()),
                "judge_cartoon": float(cartoon.mean())}
