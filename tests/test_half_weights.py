"""scripts/half_weights.py: float16 weights for committing, provenance and sampler defaults set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from script_loader import load_script

from msldm.checkpoint import load_diffusion, save_checkpoint
from msldm.config import get_preset
from msldm.edm import EDMDenoiser


def _script():
    return load_script("half_weights")


def test_half_weights_keeps_the_model_and_sets_provenance_and_sampler(tmp_path: Path) -> None:
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    model = EDMDenoiser(cfg.diffusion)
    stats = {"latent_mean": torch.randn(cfg.vae.latent_dim), "latent_std": torch.rand(cfg.vae.latent_dim) + 0.5}
    src = save_checkpoint(tmp_path / "run.safetensors", "diffusion", cfg, model, extra=stats, meta={"step": 7})
    dst = tmp_path / "half.safetensors"
    meta = _script().half(src, dst, "a test run", {"S_tmin": "0.3", "steps": "12"})
    assert meta == {"step": 7, "provenance": "a test run"}
    loaded, config, _, loaded_stats = load_diffusion(dst)
    assert config.sampler.S_tmin == 0.3 and config.sampler.steps == 12
    assert config.sampler.S_churn == cfg.sampler.S_churn and config.diffusion == cfg.diffusion
    assert torch.equal(loaded_stats["latent_mean"], stats["latent_mean"])  # statistics stay float32
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-3, atol=1e-4), name
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    with safe_open(str(src), framework="pt") as a, safe_open(str(dst), framework="pt") as h:
        for k in a.keys():  # the export's rule: small tensors stay float32, bit for bit
            small = a.get_tensor(k).numel() < 1024 or k.startswith("extra.")
            assert h.get_tensor(k).dtype == (torch.float32 if small else torch.float16), k
            if small:
                assert torch.equal(a.get_tensor(k), h.get_tensor(k)), k
    with pytest.raises(ValueError, match="unknown sampler field"):
        _script().half(src, tmp_path / "bad.safetensors", None, {"S_tmn": "0.3"})
    assert not (tmp_path / "bad.safetensors").exists()


def test_half_weights_cli_refuses_a_bad_sampler_value_clearly(tmp_path: Path, capsys, monkeypatch) -> None:
    cfg = get_preset("tiny")
    stats = {"latent_mean": torch.zeros(cfg.vae.latent_dim), "latent_std": torch.ones(cfg.vae.latent_dim)}
    src = save_checkpoint(tmp_path / "run.safetensors", "diffusion", cfg, EDMDenoiser(cfg.diffusion), extra=stats)
    dst = tmp_path / "half.safetensors"
    script = _script()
    for bad in ("S_tmax_total=inf", "S_churn_total=-1", "S_tmin"):
        monkeypatch.setattr("sys.argv", ["half_weights.py", str(src), str(dst), "--sampler", bad])
        with pytest.raises(SystemExit) as exc:
            script.main()
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err and bad.split("=")[0] in err, err
        assert not dst.exists()
