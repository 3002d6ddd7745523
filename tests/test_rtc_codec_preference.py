"""``video_codec_preference`` through the dev server: a recvonly client whose
preference cannot decode the channel's codec gets a clear error, not a hang."""

from __future__ import annotations

import asyncio
import time

import pytest

from sora_async import Connection, SoraConnectionError
from sora_async.devserver import DevServer
from sora_async.hwaccel import VideoCodecPreference


async def test_a_recvonly_lacking_the_channel_codec_fails_connect_naming_it(
    sora_devserver: DevServer,
) -> None:
    vp8_only = VideoCodecPreference([VideoCodecPreference.Codec("VP8", None, "INTERNAL")])
    # No video_codec_type: the channel's codec is VP9 (Sora's default).
    receiver = Connection(
        sora_devserver.signaling_url, "recvonly", "pref", video_codec_preference=vp8_only
    )
    started = time.monotonic()
    async with asyncio.timeout(15):
        with pytest.raises(SoraConnectionError) as failure:
            await receiver.connect()
        await receiver.wait_closed()
    assert "no decoder for VP9" in failure.value.message
    assert time.monotonic() - started < 10
