"""Training-free diffusion style transfer on fusion's models (plain functions, settings dataclasses).

* :mod:`styleid.injection` - StyleID (Chung et al., CVPR 2024): DDIM inversion of content and
  style, attention injection while sampling; ``style_transfer(model, content, style,
  InjectionSettings(...))``.
* :mod:`styleid.attention` - the attention side: decoder layer numbering, the feature store, the
  injection processors.
* :mod:`styleid.expert` - subject-keeping transfer: invert with the general model, sample with a
  style expert; ``expert_transfer(general, expert, content, style, ExpertTransferSettings(...))``.
* :mod:`styleid.colour` - region-wise colour transfer of the subject (``match_subject_colour``).
* :mod:`styleid.masks` - the content's subject as a latent-grid mask and the silhouette lock
  (``subject_mask``, ``lock_silhouette``).
* :mod:`styleid.images` - image loading and sizing on the model grid, VAE encode/decode.
* :mod:`styleid.denoise` - the shared UNet side: schedule, one eps prediction, cancel check.

The models are :class:`fusion.loading.DiffusionModel` objects; the DDIM pieces are
:mod:`fusion.ddim`'s. No UI metadata here: the app's adapters (controls, lazy loading) are in
:mod:`studio.style_engines`. ``import styleid`` alone imports nothing heavy.

    from styleid.injection import InjectionSettings, style_transfer
    out, stats = style_transfer(model, content_pil, style_pil, InjectionSettings(steps=50))
"""
