"""TensorBoard media: audio clips and log-magnitude spectrogram images."""

from __future__ import annotations

from typing import Any

import torch


def spectrogram_image(audio: torch.Tensor, n_fft: int = 1024, floor_db: float = -80.0) -> torch.Tensor:
    """Log-magnitude STFT of `audio` `[N]` as an image `[1, n_fft/2+1, F]` in [0, 1], low
    frequencies at the bottom."""
    x = audio.detach().float().cpu()
    spec = torch.stft(x, n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True)
    db = 20 * torch.log10(spec.abs().clamp_min(1e-5))
    db = (db - db.max()).clamp_min(floor_db)
    return ((db - floor_db) / -floor_db).flip(0)[None]


def log_audio(writer: Any, tag: str, audio: torch.Tensor, sample_rate: int, step: int,
              spectrogram: bool = True) -> None:
    """Log `audio` `[N]` (clipped to [-1, 1]) and, if `spectrogram`, its spectrogram image."""
    x = audio.detach().float().cpu().clamp(-1.0, 1.0)
    writer.add_audio(tag, x[None], step, sample_rate=sample_rate)
    if spectrogram and x.numel() > 1024:
        writer.add_image(f"{tag}/spectrogram", spectrogram_image(x), step)
