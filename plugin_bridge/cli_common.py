"""What `msldm` and `msldm-bridge` share (the seed policy, old option names, the progress
bar) now lives in `msldm.cli_common`, which imports the standard library only; re-exported
here so code importing `plugin_bridge.cli_common` keeps working."""

from __future__ import annotations

from msldm.cli_common import (SEED_HELP, SEED_LIMIT, ProgressBar, add_alias, fresh_seed,  # noqa: F401
                              seed_or_fresh)
