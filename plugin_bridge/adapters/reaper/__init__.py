"""REAPER adapter: `msldm_reaper.py` (the ReaScript, thin) and `logic` (what it does)."""

from pathlib import Path

REASCRIPT = Path(__file__).with_name("msldm_reaper.py")
