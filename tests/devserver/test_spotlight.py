"""Spotlight: the most recent senders are focused; receivers get focus/unfocus layers."""

from __future__ import annotations

from typing import Any

from sora_async.devserver import DevServer

from .support import FakePeerFactory, answer_reoffers, join


async def test_focus_follows_the_latest_sender(server: DevServer, peers: FakePeerFactory) -> None:
    spotlight: dict[str, Any] = {"spotlight": True, "spotlight_number": 1}
    viewer = await join(server, role="recvonly", spotlight_focus_rid="r1", **spotlight)
    assert viewer.offer["spotlight"] is True and viewer.offer["simulcast"] is True
    viewer_peer = peers.peers[viewer.connection_id]

    first = await join(server, role="sendonly", **spotlight)
    assert "encodings" in first.offer, "spotlight senders use simulcast"
    focused = await viewer.wait_notify("spotlight.focused")
    assert focused["connection_id"] == first.connection_id and focused["fixed"] is False
    changed = await viewer.wait_notify("spotlight.changed")
    assert changed["connection_id"] == first.connection_id
    await answer_reoffers(viewer)
    await viewer_peer.wait(lambda: (first.connection_id, "r1") in viewer_peer.rid_calls)

    second = await join(server, role="sendonly", **spotlight)
    unfocused = await viewer.wait_notify("spotlight.unfocused")
    assert unfocused["connection_id"] == first.connection_id
    focused = await viewer.wait_notify("spotlight.focused")
    assert focused["connection_id"] == second.connection_id
    await answer_reoffers(viewer)
    await viewer_peer.wait(lambda: (second.connection_id, "r1") in viewer_peer.rid_calls)
    # The unfocused sender falls back to the unfocus rid (default r0).
    assert set(viewer_peer.rid_calls[-2:]) == {
        (first.connection_id, "r0"),
        (second.connection_id, "r1"),
    }

    # When the focused sender leaves, focus goes back to the remaining one.
    await second.send({"type": "disconnect", "reason": "NO-ERROR"})
    await second.wait_closed()
    focused = await viewer.wait_notify("spotlight.focused")
    assert focused["connection_id"] == first.connection_id
