# MSLDM: generate accompaniment stems for the time selection of the selected tracks.
#
# REAPER: Actions > Show action list > New action > Load ReaScript... > pick this file.
# Needs Python enabled in REAPER (Preferences > Plug-ins > ReaScript) and the msldm
# package importable by that Python: either installed in it, or MSLDM_PATH set to the
# folder that holds `plugin_bridge/` (set it below or in the environment).
# Settings live in REAPER's ExtState, section "MSLDM": `server` (default
# tcp://127.0.0.1:5555) and `bridge` (the command that runs msldm-bridge, default
# "msldm-bridge"; e.g. "/path/to/venv/bin/msldm-bridge").
import os
import sys

MSLDM_PATH = os.environ.get("MSLDM_PATH", "")
if MSLDM_PATH and MSLDM_PATH not in sys.path:
    sys.path.insert(0, MSLDM_PATH)

import reaper_python  # noqa: E402  (REAPER's module with the RPR_* functions)

from plugin_bridge.adapters.reaper.logic import main  # noqa: E402

main(reaper_python)
