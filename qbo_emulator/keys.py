"""Typed application keys (aiohttp ``web.AppKey``)."""

from __future__ import annotations

from aiohttp import web

from qbo_emulator.state import EmulatorState

STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("qbo_emulator_state", EmulatorState)

# On a request: how many entities its answer carries (the latency model's per-row cost).
ROWS_KEY: web.RequestKey[int] = web.RequestKey("qbo_emulator_rows", int)
