"""Shape lock of a fused image to the general image's silhouette, then a short re-draw by the expert
(an option beyond MagicFusion, ``BlendOptions.shape_lock``).

Why (bench/results/fusion_quality_options.md): on the prompts whose shape the expert never saw (toy
world: triangles), the fused image's subject often takes a shape the expert knows, while the general
model's image of the same prompt has the right silhouette. The lock keeps the general image's
silhouette and the fused image's look:

1. :func:`lock_to_silhouette`: every pixel of the fused image more than ``grow`` px outside the
   general image's subject (its saturated pixels: in the toy world the object and nothing else)
   becomes the fused image's own background colour (the median of its plain pixels there: neither
   saturated nor dark);
2. :func:`redraw`: the expert re-draws the last ``fraction`` of the DDIM schedule on that image
   (DDIM inversion with the empty prompt from the clean image to that level, then DDIM sampling back,
   SDEdit-style: Meng et al., "SDEdit", ICLR 2022), so outline and fill follow the kept silhouette
   (mask-aware editing in the spirit of Blended Latent Diffusion, Avrahami et al., SIGGRAPH 2023).

The same rule as the expert style engine's lock (:func:`styleid.masks.lock_silhouette`, PIL images,
0..255), here on (n, 3, H, W) tensors in [0, 1], batched. The subject rule is the toy world's: on real
photos with colourful backgrounds a segmentation mask would be needed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .ddim import check_cancel, ddim_inverse_step, ddim_step, previous_alpha, schedule_for
from .recolor import check_image_pair, saturation

__all__ = ["lock_to_silhouette", "redraw"]

#: a plain (background) pixel is brighter than this mean (0..1); darker ones are outlines
_PLAIN_MIN_MEAN = 100 / 255


def lock_to_silhouette(out: torch.Tensor, source: torch.Tensor, grow: int = 1,
                       threshold: float = 70 / 255) -> torch.Tensor:
    """``out`` with its pixels more than ``grow`` px outside ``source``'s saturated subject set to
    ``out``'s background colour, sample by sample; a sample where ``source`` has fewer than 4 subject
    pixels, or ``out`` fewer than 4 plain pixels outside it, is returned unchanged."""
    check_image_pair("lock_to_silhouette", out, source)
    res = out.clone()
    for i in range(out.shape[0]):
        o, c = out[i].float(), source[i].float()
        subject = (saturation(c) > threshold).float()
        if int(subject.sum()) < 4:
            continue
        near = F.max_pool2d(subject[None, None], 2 * grow + 1, stride=1, padding=grow)[0, 0] > 0.5
        outside = ~near
        plain = outside & (saturation(o) <= threshold) & (o.mean(0) > _PLAIN_MIN_MEAN)
        if int(plain.sum()) < 4:
            continue
        background = o[:, plain].median(dim=1).values
        res[i] = torch.where(outside[None], background[:, None, None], o).to(out.dtype)
    return res


@torch.no_grad()
def redraw(model, images: torch.Tensor, fraction: float, steps: int, prompt: str | None = None,
           guidance: float = 1.0, cancel=None, denoiser=None) -> tuple[torch.Tensor, int]:
    """``images`` ((n, 3, H, W) in [0, 1]) re-drawn by ``model`` over the last ``fraction`` of a
    ``steps``-step DDIM schedule: VAE-encode (posterior mode), DDIM-invert with the empty prompt to that
    level, DDIM-sample back, decode. The sampling is unconditional (``prompt`` None), or conditioned
    on ``prompt`` with classifier-free ``guidance`` (Ho & Salimans 2022; 1 = the condition alone).
    ``denoiser``: the model's side as the pipeline runs it (``eps(x, t, context)``; a shared UNet's
    LoRA adapter is switched by it, :func:`fusion.lora.denoiser_for`); None: made here the same way.
    Returns (images, UNet batch rows used); with fewer than one step to re-draw, the images unchanged
    and 0."""
    from .lora import denoiser_for

    timesteps, alphas = schedule_for(model.scheduler_config, steps)
    n = round(len(timesteps) * float(fraction))
    if n < 1:
        return images, 0
    unet = denoiser if denoiser is not None else denoiser_for(model, alphas, "expert_unet")

    def predict(x: torch.Tensor, t: int, context: torch.Tensor) -> torch.Tensor:
        return unet(x.to(model.dtype), int(t), context.to(model.dtype)).float()

    part = list(timesteps)[-n:]
    x = (images.to(model.device, model.dtype) * 2 - 1)
    z = model.vae.encode(x).latent_dist.mode().float() * model.scaling_factor
    empty = model.encode_prompts([""]).expand(z.shape[0], -1, -1)
    asc = part[::-1]
    for k, t in enumerate(asc):
        check_cancel(cancel)
        a_from = float(alphas[0]) if k == 0 else float(alphas[asc[k - 1]])
        z = ddim_inverse_step(z, predict(z, t, empty), a_from, float(alphas[t]))
    b = z.shape[0]
    guided = prompt is not None and float(guidance) != 1.0
    if prompt is None:
        context = empty
    else:
        cond = model.encode_prompts([prompt]).expand(b, -1, -1)
        context = torch.cat([empty, cond]) if guided else cond
    for i, t in enumerate(part):
        check_cancel(cancel)
        e = predict(torch.cat([z, z]) if guided else z, t, context)
        eps = e[:b] + float(guidance) * (e[b:] - e[:b]) if guided else e
        z, _ = ddim_step(z, eps, float(alphas[t]), previous_alpha(alphas, part, i))
    y = model.vae.decode((z / model.scaling_factor).to(model.vae.dtype), return_dict=False)[0]
    return ((y.float() + 1) / 2).clamp(0, 1).cpu().to(images.dtype), n * b * (3 if guided else 2)
