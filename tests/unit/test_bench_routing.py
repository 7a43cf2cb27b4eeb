"""The in-process routing benchmark (`python -m bench.routing`) keeps working as the
router grows: it drives the real sessions and router over stand-in transports."""

from __future__ import annotations

import pytest

from bench import routing


@pytest.mark.parametrize("front", ["text", "irc"])
async def test_direct_messages_are_timed(front: str) -> None:
    assert await routing.measure(pairs=3, rounds=1, passes=2, front=front) > 0


@pytest.mark.parametrize("front", ["text", "irc"])
async def test_a_rooms_fan_out_is_timed(front: str) -> None:
    assert await routing.measure_room(members=5, rounds=1, passes=2, front=front) > 0
