"""DAW adapters: scripts that run inside (or next to) a DAW and drive `msldm-bridge`."""
