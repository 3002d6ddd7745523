"""Encoded transform (issue 7) against the official ``sora_sdk``: VP9, AV1 and Opus.

One channel per video codec on the dev server, four clients: an official
sender and ours, both appending ``b"sora"`` to every encoded audio (Opus) and
video frame, and an official receiver and ours, both checking and stripping it
per sending connection (``tests/transform_official_peer.py`` is the official
side). Each receiver must see every frame of both senders marked and decode
the video; and the frame facts each side's transformer sees must agree with
the official ones (which properties are None, array dtypes, enum values).
(VP8 runs through ``examples/compat/encoded_transform.py`` in
tests/test_compat_examples.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sora_async import AudioFrameTransformer, Connection, VideoFrameTransformer
from sora_async.devserver import DevServer
from tests.rtc_support import PatternTrack, ToneTrack, Tracks, frames

pytestmark = [pytest.mark.official, pytest.mark.slow]

PEER = Path(__file__).with_name("transform_official_peer.py")
TRAILER = b"sora"
#: The properties the official reference documents, per kind.
COMMON = ["payload_type", "ssrc", "rtp_timestamp", "direction", "mine_type"]
AUDIO = [
    *COMMON,
    "contributing_sources",
    "sequence_number",
    "absolute_capture_timestamp",
    "type",
    "audio_level",
    "receive_time",
]
VIDEO = [
    *COMMON,
    "is_key_frame",
    "frame_id",
    "frame_dependencies",
    "width",
    "height",
    "spatial_index",
    "temporal_index",
    "contributing_sources",
]


class OfficialPeer:
    """``transform_official_peer.py`` in a subprocess; its JSON lines as events."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self._changed = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> OfficialPeer:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PEER),
            json.dumps(self.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        assert self._proc.stderr is not None
        errors = asyncio.create_task(self._proc.stderr.read())
        try:
            async for line in self._proc.stdout:
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))
                    self._changed.set()
        finally:
            self.stderr = await errors

    async def wait(self, name: str, within: float = 20) -> dict[str, Any]:
        try:
            async with asyncio.timeout(within):
                while True:
                    found = [e for e in self.events if e.get("event") == name]
                    if found:
                        return found[0]
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            state = "running" if self._proc is None else f"returncode {self._proc.returncode}"
            stderr = self.stderr.decode(errors="replace")[-2000:]
            raise AssertionError(f"official {self.config['role']} ({state}): no {name!r} event\n"
                                 f"{self.events[-5:]}\nstderr: {stderr}") from None  # fmt: skip

    def fields(self, kind: str) -> dict[str, Any]:
        (found,) = [e for e in self.events if e.get("event") == "fields" and e["kind"] == kind]
        return found

    async def finish(self, within: float = 30) -> dict[str, Any]:
        """Its final counts; a crash in sora_sdk 2025.4.0's teardown (after them) is known.

        sora_sdk 2025.4.0 calls the transformers' ``on_transform`` without taking
        the GIL (its issue 0019, fixed in 2026): Python then runs on two threads at
        once, and under load the official process can hang for good (twice in ~10
        full runs on a loaded 2-core machine, each time right after its first
        transformed frame; never without transformers). Its main thread emits the
        counts after a timed wait (``seconds``, shorter than ``within``) whatever the
        media did, so a process still alive without them is that hang: reported as
        an expected failure of the referee, with its events, not as ours.
        """
        try:
            counts = await self.wait("counts", within)
        except AssertionError as exc:
            if (
                self._proc is not None
                and self._proc.returncode is None
                and self.config.get("transform", True)
            ):
                await self.kill()
                pytest.xfail(f"sora_sdk 2025.4.0 hung (GIL-less on_transform, issue 0019): {exc}")
            raise
        assert self._proc is not None and self._reader is not None
        try:
            await asyncio.wait_for(self._proc.wait(), 15)
        except TimeoutError:
            self._proc.kill()
        await asyncio.wait_for(self._reader, 5)
        assert b"Traceback" not in self.stderr, self.stderr.decode(errors="replace")[-3000:]
        return dict(counts["counts"])

    async def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._proc.wait(), 10)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


@contextlib.asynccontextmanager
async def official(**config: Any) -> AsyncIterator[OfficialPeer]:
    peer = await OfficialPeer(**config).start()
    try:
        yield peer
    finally:
        await peer.kill()


def describe(frame: Any) -> dict[str, Any]:
    names = AUDIO if frame.kind == "audio" else VIDEO
    return {name: getattr(frame, name) for name in names}


class Ours:
    """Our transformers: append on send; check and strip per sending connection on receive."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}
        self.facts: dict[tuple[str, str], dict[str, Any]] = {}

    async def append(self, frame: Any) -> Any:
        self.facts.setdefault(("send", frame.kind), describe(frame))
        frame.set_data(bytes(frame.get_data()) + TRAILER)
        return frame

    def stripper(self, stream: str) -> Any:
        async def strip(frame: Any) -> Any:
            self.facts.setdefault(("receive", frame.kind), describe(frame))
            entry = self.counts.setdefault(stream, {"audio": 0, "video": 0, "unmarked": 0})
            data = bytes(frame.get_data())
            if data.endswith(TRAILER):
                frame.set_data(data[: -len(TRAILER)])
                entry[frame.kind] += 1
            else:
                entry["unmarked"] += 1
            return frame

        return strip


def same_shape(ours: dict[str, Any], theirs: dict[str, Any], what: str) -> None:
    """Ours agrees with the official description: None-ness, array dtypes, enum values."""
    for name, value in ours.items():
        official = theirs[name]
        where = f"{what}.{name}: ours {value!r}, official {official!r}"
        assert (value is None) == (official is None), where
        if isinstance(value, np.ndarray):
            assert str(value.dtype) == official["dtype"], where
        elif name in ("direction", "type"):
            assert official.endswith("." + value.name), where
        elif name == "mine_type":
            assert value == official, where
        elif value is not None:
            assert isinstance(value, int) and isinstance(official, int), where


@pytest.mark.parametrize("codec", ["VP9", "AV1"])
async def test_sora_trailer_both_ways_with_the_official_sdk(
    sora_devserver: DevServer, codec: str
) -> None:
    channel = f"tx-official-{codec}"
    common = {"signaling_url": sora_devserver.signaling_url, "channel_id": channel}
    ours = Ours()
    receiver = Connection(sora_devserver.signaling_url, "recvonly", channel)
    tracks = Tracks(receiver)

    def on_track(track: Any) -> None:
        cls = AudioFrameTransformer if track.kind == "audio" else VideoFrameTransformer
        track.set_frame_transformer(cls(ours.stripper(str(track.stream_id))))

    receiver.on("track", on_track)
    sender = Connection(
        sora_devserver.signaling_url,
        "sendonly",
        channel,
        video_codec_type=codec,
        audio_source=ToneTrack(),
        video_source=PatternTrack(320, 240),
        audio_frame_transformer=AudioFrameTransformer(ours.append),
        video_frame_transformer=VideoFrameTransformer(ours.append),
    )
    plain: OfficialPeer | None = None
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(asyncio.timeout(90))
        their_rx = await stack.enter_async_context(
            official(role="recvonly", video_codec_type=codec, seconds=9, **common)
        )
        if codec == "AV1":  # and one without transformers: the opaque OBU does not hurt
            plain = await stack.enter_async_context(
                official(
                    role="recvonly", video_codec_type=codec, seconds=9, transform=False, **common
                )
            )
            await plain.wait("connected")
        await stack.enter_async_context(receiver)
        await their_rx.wait("connected")
        async with (
            official(role="sendonly", video_codec_type=codec, seconds=6, **common) as their_tx,
            sender,
        ):
            their_id = str((await their_tx.wait("offer"))["connection_id"])
            our_id = str(sender.connection_id)
            videos = [
                await tracks.wait(lambda t, s=s: t.kind == "video" and t.stream_id == s)  # type: ignore[misc]
                for s in (their_id, our_id)
            ]
            for track in videos:  # both senders' video decodes here
                decoded = await frames(track, 10, within=20)
                assert {(f.width, f.height) for f in decoded} == {(320, 240)}
            their_counts = await their_rx.finish()
            plain_counts = await plain.finish() if plain is not None else {}
            await their_tx.finish()
    for stream in (their_id, our_id):
        got = ours.counts[stream]
        assert got["video"] >= 10 and got["audio"] >= 20 and got["unmarked"] == 0, (stream, got)
        got = their_counts[stream]
        assert got["video_marked"] >= 10 and got["audio_marked"] >= 20, (stream, got)
        assert got["unmarked"] == 0 and got["decoded"] >= 10, (stream, got)
    if plain is not None:
        assert plain_counts[our_id]["decoded"] >= 10, plain_counts
    for kind in ("audio", "video"):
        same_shape(ours.facts["send", kind], their_tx.fields(kind), f"send {kind}")
        same_shape(ours.facts["receive", kind], their_rx.fields(kind), f"receive {kind}")
