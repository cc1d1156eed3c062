"""MSLDM: multi-source latent diffusion for music accompaniment.

Importing this package does not import torch: `msldm.config` and `msldm.sampling` are
used by the torch-free server too.
"""

__version__ = "0.1.0"
