#!/usr/bin/env bash
# The reference's two recipes (MagicFusion's magicfusion.sh), on the embedded toy models.
# Swap in real SD 1.x models with MODEL0=... MODEL1=... (diffusers folders, .safetensors or .ckpt).
set -euo pipefail
MODEL0=${MODEL0:-assets/models/toy-general}   # general model
MODEL1=${MODEL1:-assets/models/toy-cartoon}   # expert model
OUT=${OUT:-outputs/magicfusion}

# 1. composition and realism from the general model, style from the expert:
#    SNB from t=1000 down to 600, then the general model alone
python -m fusion --model0 "$MODEL0" --model1 "$MODEL1" --outdir "$OUT/recipe1" \
  --prompt "a cartoon of a big green triangle" --prompt1 "a big green triangle" \
  --fusion_selection 600,1,1 --mode 2 "$@"

# 2. the expert sets the composition first (expert alone while t > 850), then SNB
python -m fusion --model0 "$MODEL0" --model1 "$MODEL1" --outdir "$OUT/recipe2" \
  --prompt "a cartoon of a big purple square" --prompt1 "a cartoon of a big purple square" \
  --fusion_selection 850,1,1 --mode 1 --expert_primary "$@"
