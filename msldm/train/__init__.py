"""Training: the shared loop (`loop.train`), the SourceVAE and diffusion tasks, exact-resume
state, DDP through torchrun, the paper's baselines and the `msldm train` CLI.

Submodules import torch; import them directly (`from msldm.train.runs import train_vae`).
"""
