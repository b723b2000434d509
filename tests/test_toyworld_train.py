"""A few-step smoke run of the training command, so it cannot rot."""
import json

from toyworld import train


def test_training_command_smoke(tmp_path):
    out, exp = tmp_path / "run", tmp_path / "export"
    args = ["--stage", "all", "--out", str(out), "--export-dir", str(exp),
            "--n-photo", "48", "--n-cartoon", "32", "--n-expert", "32",
            "--vae-steps", "2", "--vae-batch", "4", "--general-steps", "2", "--expert-steps", "2",
            "--batch", "4", "--ckpt-every", "1", "--bar-interval", "5"]
    train.main(args)
    for stage in ("vae", "general", "expert"):
        done = json.loads((out / stage / "done.json").read_text())
        assert done["steps"] == 2
        assert (out / stage / "log.jsonl").read_text().strip()
    for name in ("toy-general", "toy-cartoon"):
        for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            assert (exp / name / sub).is_dir()
    # the expert shares the general model's text encoder and VAE byte for byte
    for sub, f in (("text_encoder", "model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                   ("text_encoder", "model.fp16.safetensors"), ("vae", "diffusion_pytorch_model.fp16.safetensors")):
        assert (exp / "toy-general" / sub / f).read_bytes() == (exp / "toy-cartoon" / sub / f).read_bytes()
    # rerunning resumes (everything done: nothing to do, no error)
    train.main(args)
