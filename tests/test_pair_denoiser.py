"""scripts/pair_denoiser.py: a denoiser's weights, untouched, paired with another SourceVAE."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from msldm.checkpoint import load_diffusion, read_checkpoint, save_checkpoint
from msldm.config import get_preset
from msldm.edm import EDMDenoiser
from msldm.hashing import sha256_file
from msldm.pipeline import TorchPipeline
from msldm.spectral_vae import SpectralVAE
from tests.script_loader import load_script


def test_the_pair_keeps_every_tensor_and_takes_the_vaes_latent_config(tmp_path: Path) -> None:
    base = get_preset("tiny_spectral")
    wide = dataclasses.replace(base, vae=dataclasses.replace(base.vae, low_n_fft=1280, encoder_low=True))
    assert not base.vae.same_latents(wide.vae)
    torch.manual_seed(0)
    C = base.diffusion.latent_dim
    stats = {"latent_mean": torch.randn(C), "latent_std": torch.rand(C) + 0.5}
    den = save_checkpoint(tmp_path / "den.safetensors", "diffusion", base, EDMDenoiser(base.diffusion).half(),
                          extra=stats, meta={"step": 7, "provenance": "a test"})
    vae = save_checkpoint(tmp_path / "vae.safetensors", "vae", wide, SpectralVAE(wide.vae))
    with pytest.raises(ValueError, match="does not match"):
        TorchPipeline.from_checkpoints(vae, den)

    out = load_script("pair_denoiser").pair(den, vae, tmp_path / "out" / "paired.safetensors", note="why")
    TorchPipeline.from_checkpoints(vae, out)  # the pair loads (and so exports)
    cfg, state, extra, meta = read_checkpoint(out, "diffusion")
    assert cfg.vae == wide.vae and cfg.diffusion == base.diffusion
    with safe_open(str(den), framework="pt") as a, safe_open(str(out), framework="pt") as b:
        assert set(a.keys()) == set(b.keys())
        for k in a.keys():  # the same values and dtypes (float16 stays float16)
            ta, tb = a.get_tensor(k), b.get_tensor(k)
            assert ta.dtype == tb.dtype and torch.equal(ta, tb), k
    assert all(t.dtype == torch.float16 for t in state.values())
    torch.testing.assert_close(load_diffusion(out)[3]["latent_std"], stats["latent_std"])
    assert meta["step"] == 7 and meta["provenance"] == "a test"
    assert meta["paired_vae"] == {"file": "vae.safetensors", "sha256": sha256_file(vae),
                                  "denoiser": "den.safetensors", "note": "why"}
    with safe_open(str(out), framework="pt") as f:
        assert json.loads(f.metadata()["config"])["vae"]["encoder_low"] is True


def test_pairing_refuses_a_vae_for_a_denoiser(tmp_path: Path) -> None:
    base = get_preset("tiny_spectral")
    vae = save_checkpoint(tmp_path / "vae.safetensors", "vae", base, SpectralVAE(base.vae))
    with pytest.raises(Exception, match="holds a vae model"):
        load_script("pair_denoiser").pair(vae, vae, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_pairing_refuses_latents_of_another_shape_clearly(tmp_path: Path, capsys) -> None:
    base = get_preset("tiny_spectral")
    C = base.diffusion.latent_dim
    stats = {"latent_mean": torch.zeros(C), "latent_std": torch.ones(C)}
    den = save_checkpoint(tmp_path / "den.safetensors", "diffusion", base, EDMDenoiser(base.diffusion), extra=stats)
    other = dataclasses.replace(base, vae=dataclasses.replace(base.vae, latent_dim=C + 8),
                                diffusion=dataclasses.replace(
                                    base.diffusion, latent_dim=C + 8,
                                    unet=dataclasses.replace(base.diffusion.unet,
                                                             in_channels=len(base.diffusion.stems) * (C + 8))))
    vae = save_checkpoint(tmp_path / "vae.safetensors", "vae", other, SpectralVAE(other.vae))
    script = load_script("pair_denoiser")
    with pytest.raises(SystemExit) as exc:
        script.main([str(den), str(vae), str(tmp_path / "out.safetensors")])
    assert "latent_dim" in str(exc.value) and "Traceback" not in str(exc.value)
    with pytest.raises(SystemExit, match="no checkpoint"):
        script.main([str(tmp_path / "missing.safetensors"), str(vae), str(tmp_path / "out.safetensors")])
    assert not list(tmp_path.glob("out*"))
