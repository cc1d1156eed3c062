"""Data: the synthetic Slakh-like corpus (`msldm.data.synth`), loaders and latent caches.

Importing this package imports nothing heavy (no torch, no numpy).
"""
