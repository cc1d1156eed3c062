"""Ardour 7 adapter: Lua scripts (`msldm_generate.lua` headless, `msldm_editor_action.lua`
in the GUI) plus the Python helpers they call (`render`, `session_xml`).

`LUA_SCRIPT` is the headless script's path; `python -m plugin_bridge.adapters.ardour --help`
lists the helper commands.
"""

from pathlib import Path

LUA_SCRIPT = Path(__file__).with_name("msldm_generate.lua")
EDITOR_ACTION = Path(__file__).with_name("msldm_editor_action.lua")
