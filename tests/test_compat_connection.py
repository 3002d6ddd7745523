"""The official semantics of ``sora_async.compat``, as an application on the main thread sees them.

Threads (one event loop and one callback thread per ``Sora``, started lazily,
stopped with the last connection), blocking and bounded ``disconnect()``,
single use, JSON ``get_stats()``, ``SoraAudioSink.read`` timeouts, sources
written from any thread with every official overload, callback exceptions
that are logged, and garbage collection in any order. The dev server runs on
its own thread (``tests/compat_support.py``).
"""

from __future__ import annotations

import _thread
import ctypes
import gc
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import sora_async.compat as compat
from sora_async.compat import (
    Sora,
    SoraAudioSink,
    SoraLoggingSeverity,
    SoraSignalingErrorCode,
    SoraVideoSink,
)
from sora_async.compat import _connection as compat_connection
from tests.compat_support import (
    ServerThread,
    compat_threads,
    server_thread,
    wait_threads_gone,
    wait_until,
)

ALREADY = "Already disconnected. Please create another Sora instance to establish a new connection."
WS_ONLY_CLOSED = "Succeeded to close WebSocket (DC signaling is not enabled)"
_numbers = itertools.count(1)


def channel() -> str:
    return f"compat-{next(_numbers)}"


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with server_thread() as running:
        yield running
    wait_threads_gone()


class Recorder:
    """Installs every callback on a connection and records (name, args, thread)."""

    def __init__(self, conn: compat.SoraConnection) -> None:
        self.conn = conn
        self.calls: list[tuple[str, tuple[Any, ...], str]] = []
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.connection_id: str | None = None
        for name in compat_connection.CALLBACKS:
            setattr(conn, name, self._recorder(name))

    def _recorder(self, name: str) -> Any:
        def record(*args: Any) -> None:
            if name == "on_set_offer":
                self.connection_id = json.loads(args[0])["connection_id"]
            with self.changed:
                self.calls.append((name, args, threading.current_thread().name))
                self.changed.notify_all()

        return record

    def named(self, name: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [args for n, args, _ in self.calls if n == name]

    def wait(self, predicate: Any, timeout: float = 10, what: str = "callback") -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, timeout):
                raise AssertionError(f"{what} not within {timeout} s; got {self.calls!r:.2000}")

    def wait_connected(self, timeout: float = 10) -> None:
        def created() -> bool:
            for name, args, _ in self.calls:
                if name == "on_notify":
                    message = json.loads(args[0])
                    if message.get("event_type") == "connection.created" and message.get(
                        "connection_id"
                    ) == (self.connection_id or object()):
                        return True
            return False

        self.wait(created, timeout, "own connection.created")


# -- threads and blocking -------------------------------------------------------------------------


def test_connect_returns_at_once_and_callbacks_come_from_the_callback_thread(server) -> None:
    sora = Sora()
    conn = sora.create_connection([server.signaling_url], "recvonly", channel())
    assert compat_threads() == []  # nothing runs before connect()
    rec = Recorder(conn)
    returned = threading.Event()
    offer_saw_returned: list[bool] = []
    record_offer = rec._recorder("on_set_offer")

    def on_set_offer(offer: str) -> None:
        offer_saw_returned.append(returned.is_set())
        record_offer(offer)

    conn.on_set_offer = on_set_offer
    started = time.monotonic()
    conn.connect()
    returned.set()
    assert time.monotonic() - started < 0.5
    rec.wait_connected()
    assert offer_saw_returned == [True]

    threads = {thread for _, _, thread in rec.calls}
    assert len(threads) == 1
    (callback_thread,) = threads
    assert callback_thread.startswith("sora-compat-callbacks-")
    assert callback_thread != threading.current_thread().name
    assert [t.name for t in compat_threads("sora-compat-loop-")] == [
        callback_thread.replace("callbacks", "loop")
    ]

    stats = conn.get_stats()
    assert isinstance(stats, str)
    parsed = json.loads(stats)
    assert isinstance(parsed, list) and {"peer-connection", "transport"} <= {
        s["type"] for s in parsed
    }
    assert conn.send_data_channel("#none", b"x") is False

    conn.disconnect()
    # disconnect() returned only after on_disconnect was called.
    assert rec.named("on_disconnect") == [(SoraSignalingErrorCode.CLOSE_SUCCEEDED, WS_ONLY_CLOSED)]
    assert rec.named("on_ws_close") == [(1000, "TYPE-DISCONNECT")]
    code = rec.named("on_disconnect")[0][0]
    assert type(code) is SoraSignalingErrorCode
    conn.disconnect()  # a second call does nothing
    for call in (conn.connect, conn.get_stats, lambda: conn.send_data_channel("#x", b"x")):
        with pytest.raises(RuntimeError) as info:
            call()
        assert str(info.value) == ALREADY
    wait_threads_gone()  # the last connection ended: the runtime stopped


def test_one_loop_per_sora_shared_by_its_connections_and_restarted_lazily(server) -> None:
    sora_a, sora_b = Sora(), Sora()
    conns = [
        sora_a.create_connection([server.signaling_url], "recvonly", channel()),
        sora_a.create_connection([server.signaling_url], "recvonly", channel()),
        sora_b.create_connection([server.signaling_url], "recvonly", channel()),
    ]
    recorders = [Recorder(c) for c in conns]
    for conn in conns:
        conn.connect()
    for rec in recorders:
        rec.wait_connected()
    loop_of = [{t for _, _, t in rec.calls} for rec in recorders]
    assert loop_of[0] == loop_of[1] != loop_of[2]
    assert len(compat_threads("sora-compat-loop-")) == 2
    conns[0].disconnect()
    assert len(compat_threads("sora-compat-loop-")) == 2  # sora_a still has a connection
    conns[1].disconnect()
    conns[2].disconnect()
    wait_threads_gone()
    # A new connection on the same Sora starts a new runtime.
    again = sora_a.create_connection([server.signaling_url], "recvonly", channel())
    rec = Recorder(again)
    again.connect()
    rec.wait_connected()
    assert len(compat_threads("sora-compat-loop-")) == 1
    again.disconnect()


def test_disconnect_is_bounded(server, monkeypatch, caplog) -> None:
    monkeypatch.setattr(compat_connection, "DISCONNECT_TIMEOUT_S", 0.5)
    release = threading.Event()
    conn = Sora().create_connection([server.signaling_url], "recvonly", channel())
    rec = Recorder(conn)
    conn.on_disconnect = lambda code, message: release.wait(10)  # a stuck callback
    conn.connect()
    rec.wait_connected()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "sora_async.compat"):
        conn.disconnect()
    assert 0.4 < time.monotonic() - started < 3
    assert "on_disconnect did not fire within" in caplog.text
    with pytest.raises(RuntimeError, match="Already disconnected"):
        conn.get_stats()
    release.set()


def test_disconnect_wait_is_interrupted_by_ctrl_c(server) -> None:
    release = threading.Event()
    conn = Sora().create_connection([server.signaling_url], "recvonly", channel())
    rec = Recorder(conn)
    conn.on_disconnect = lambda code, message: release.wait(10)
    conn.connect()
    rec.wait_connected()
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            conn.disconnect()
        assert time.monotonic() - started < 2
    finally:
        timer.cancel()
        release.set()
    # The connection still ends in the background.
    wait_threads_gone()


def test_disconnect_from_inside_a_callback(server) -> None:
    conn = Sora().create_connection([server.signaling_url], "recvonly", channel())
    rec = Recorder(conn)
    done = threading.Event()
    order: list[str] = []

    def on_notify(message: str) -> None:
        if json.loads(message).get("event_type") == "connection.created":
            conn.disconnect()  # blocks this callback until on_disconnect ran
            order.append("disconnect returned")
            done.set()

    conn.on_notify = on_notify
    conn.on_disconnect = lambda code, message: order.append(f"on_disconnect {code.name}")
    conn.connect()
    assert done.wait(15)
    assert order == ["on_disconnect CLOSE_SUCCEEDED", "disconnect returned"]
    del rec


def test_disconnect_before_connect_returns_and_makes_the_connection_unusable(server) -> None:
    conn = Sora().create_connection([server.signaling_url], "recvonly", channel())
    assert conn.get_stats() == "[]"
    conn.disconnect()
    with pytest.raises(RuntimeError, match="Already disconnected"):
        conn.connect()
    assert compat_threads() == []


def test_second_connect_raises(server) -> None:
    conn = Sora().create_connection([server.signaling_url], "recvonly", channel())
    rec = Recorder(conn)
    conn.connect()
    with pytest.raises(RuntimeError, match="already been called"):
        conn.connect()
    rec.wait_connected()
    conn.disconnect()


# -- callbacks that misbehave ------------------------------------------------------------------


def test_a_callback_exception_is_logged_with_its_traceback_and_changes_nothing(
    server, caplog
) -> None:
    conn = Sora().create_connection([server.signaling_url], "recvonly", channel())
    rec = Recorder(conn)
    recorded_notify = conn.on_notify

    def broken(message: str) -> None:
        recorded_notify(message)
        raise ValueError("a bug in the application")

    conn.on_notify = broken
    with caplog.at_level(logging.ERROR, "sora_async.compat"):
        conn.connect()
        rec.wait_connected()
        conn.disconnect()
    failures = [r for r in caplog.records if "on_notify" in r.getMessage()]
    assert failures and failures[0].exc_info is not None
    assert "a bug in the application" in caplog.text and "Traceback" in caplog.text
    assert rec.named("on_disconnect")[0][0] is SoraSignalingErrorCode.CLOSE_SUCCEEDED


def test_callbacks_must_be_callable_or_none(server) -> None:
    conn = Sora().create_connection([server.signaling_url], "recvonly", channel())
    with pytest.raises(TypeError):
        conn.on_notify = 5  # type: ignore[assignment]
    conn.on_notify = print
    assert conn.on_notify is print
    conn.on_notify = None
    assert conn.on_notify is None


# -- media: sources from any thread, sinks that block politely ------------------------------------


def _tone(n0: int, count: int, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(n0, n0 + count) / rate
    return np.ascontiguousarray(
        (0.3 * 32767 * np.sin(2 * math.pi * hz * t)).astype(np.int16)[:, None]
    )


def test_sources_from_many_threads_sinks_and_read_timeouts(server) -> None:
    """A sender feeds audio with the raw-pointer + timestamp overload and video with
    the timestamp overloads from three threads; the receiver's SoraAudioSink.read
    gets the tone, waits its timeout without blocking others, and SoraVideoSink
    frames come on the sink's own thread."""
    ch = channel()
    sora = Sora()
    audio = sora.create_audio_source(1, 16000)
    video = sora.create_video_source()
    assert (audio.kind, video.kind) == ("audio", "video")
    tx = sora.create_connection(
        [server.signaling_url],
        "sendonly",
        ch,
        audio_source=audio,
        video_source=video,
        video_codec_type="VP8",
    )
    rx = sora.create_connection([server.signaling_url], "recvonly", ch)
    tx_rec, rx_rec = Recorder(tx), Recorder(rx)
    sinks: dict[str, Any] = {}
    frames: list[tuple[tuple[int, ...], str]] = []
    got_frame = threading.Event()

    def on_track(track: compat.SoraMediaTrack) -> None:
        rx_rec._recorder("on_track")(track)
        if track.kind == "video":
            sink = SoraVideoSink(track)

            def on_frame(frame: compat.SoraVideoFrame) -> None:
                frames.append((frame.data().shape, threading.current_thread().name))
                got_frame.set()

            sink.on_frame = on_frame
            sinks["video"] = sink
        else:
            sinks["audio"] = SoraAudioSink(track, 16000, 1)

    rx.on_track = on_track
    stop = threading.Event()

    def feed_audio() -> None:
        n = 0
        t0 = time.time()
        while not stop.is_set():
            chunk = _tone(n, 160, 16000)
            audio.on_data(chunk.ctypes.data, 160, t0 + n / 16000)
            n += 160
            stop.wait(0.01)

    def feed_video(use_us: bool) -> None:
        n = 0
        while not stop.is_set():
            image = np.full((240, 320, 3), (n * 7) % 256, np.uint8)
            if use_us:
                video.on_captured(image, timestamp_us=int(time.time() * 1e6))
            else:
                video.on_captured(image, time.time())
            n += 1
            stop.wait(1 / 15)

    feeders = [
        threading.Thread(target=feed_audio),
        threading.Thread(target=feed_video, args=(True,)),
        threading.Thread(target=feed_video, args=(False,)),
    ]
    for thread in feeders:
        thread.start()
    try:
        rx.connect()
        rx_rec.wait_connected()
        tx.connect()
        tx_rec.wait_connected()
        assert got_frame.wait(15)
        shape, thread_name = frames[0]
        assert shape == (240, 320, 3)
        assert thread_name.startswith("sora-compat-SoraVideoSink")
        (track_args,) = [a for a in rx_rec.named("on_track") if a[0].kind == "video"]
        assert track_args[0].stream_id == tx_rec.connection_id

        sink = wait_until(lambda: sinks.get("audio"), 10, "audio sink")
        ok, pcm = sink.read(1600, 5)  # 100 ms at 16 kHz
        assert ok and pcm.shape == (1600, 1) and pcm.dtype == np.int16
        wait_until(
            lambda: float(np.sqrt(np.mean((sink.read(1600, 1)[1] / 32768.0) ** 2))) > 0.1,
            10,
            "the tone at the receiver",
        )

        # A read that cannot be satisfied waits its timeout, and holds nothing:
        # get_stats() on another thread completes meanwhile.
        other: list[str] = []
        helper = threading.Thread(target=lambda: other.append(rx.get_stats()))
        started = time.monotonic()
        helper.start()
        assert sink.read(16000 * 60, 0.5) == (False, None)
        assert 0.45 < time.monotonic() - started < 2
        helper.join(5)
        assert other and json.loads(other[0])
        assert sink.read(0, 0)[0] in (True, False)  # frames=0 never waits
    finally:
        stop.set()
        for thread in feeders:
            thread.join(5)
        tx.disconnect()
        rx.disconnect()
    ok, rest = sink.read(0)
    assert (ok, rest is None) in ((True, False), (False, True))


def test_audio_source_overloads_and_errors() -> None:
    source = Sora().create_audio_source(2, 48000)
    stereo = np.arange(960, dtype=np.int16).reshape(480, 2)
    assert np.array_equal(source._from_address(stereo.ctypes.data, 480), stereo)
    now = time.time()
    source.on_data(stereo)
    source.on_data(stereo, now)
    source.on_data(stereo.ctypes.data, 480)
    source.on_data(stereo.ctypes.data, 480, now + 0.01)
    source.on_data(ndarray=stereo, timestamp=now + 0.02)
    source.on_data(data=stereo.ctypes.data, samples_per_channel=480, timestamp=now + 0.03)
    buffer = (ctypes.c_int16 * 960)()
    source.on_data(ctypes.addressof(buffer), 480)
    with pytest.raises(TypeError):
        source.on_data(stereo.astype(np.float64).astype(np.int32))
    with pytest.raises(ValueError, match="null"):
        source.on_data(0, 480)
    with pytest.raises(ValueError):
        source.on_data(np.zeros((480, 1), np.int16))  # wrong channel count
    with pytest.raises(ValueError):
        Sora().create_audio_source(0, 16000)
    video = Sora().create_video_source()
    frame = np.zeros((4, 4, 3), np.uint8)
    video.on_captured(frame)
    video.on_captured(frame, time.time())
    video.on_captured(frame, 1_700_000_000_000_000)
    video.on_captured(ndarray=frame, timestamp_us=1_700_000_000_100_000)
    with pytest.raises(TypeError):
        video.on_captured(frame.astype(np.float32))
    assert video.set_enabled(False) is True and video.enabled is False
    assert video.state == compat.SoraTrackState.LIVE


def test_writes_from_many_threads_at_once() -> None:
    source = Sora().create_audio_source(1, 16000)
    video = Sora().create_video_source()
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for n in range(200):
                source.on_data(np.full((160, 1), k, np.int16))
                video.on_captured(np.full((8, 8, 3), n % 256, np.uint8))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert video.track.frames_written == 800


# -- garbage collection and lifetime --------------------------------------------------------------


@pytest.mark.parametrize(
    "order",
    [
        ("sink", "track", "conn", "source", "sora"),
        ("sora", "conn", "source", "track", "sink"),
        ("conn", "sora", "sink", "source", "track"),
    ],
    ids=lambda order: ">".join(order),
)
def test_objects_can_be_collected_in_any_order(server, caplog, order: tuple[str, ...]) -> None:
    ch = channel()
    objects: dict[str, Any] = {"sora": Sora()}
    objects["source"] = objects["sora"].create_video_source()
    tx = objects["sora"].create_connection(
        [server.signaling_url],
        "sendonly",
        ch,
        video_source=objects["source"],
        audio=False,
        video_codec_type="VP8",
    )
    objects["conn"] = objects["sora"].create_connection(
        [server.signaling_url], "recvonly", ch, audio=False
    )
    disconnected = threading.Event()
    tx_rec = Recorder(tx)
    created = threading.Event()
    got_frame = threading.Event()
    conn = objects["conn"]

    def on_notify(message: str) -> None:
        if json.loads(message).get("event_type") == "connection.created":
            created.set()

    conn.on_notify = on_notify
    conn.on_disconnect = lambda code, message: disconnected.set()
    conn.on_track = lambda track: objects.update(track=track)
    del conn
    stop = threading.Event()

    def feed(source: compat.SoraVideoSource) -> None:
        while not stop.is_set():
            source.on_captured(np.zeros((240, 320, 3), np.uint8))
            stop.wait(1 / 15)

    feeder = threading.Thread(target=feed, args=(objects["source"],))
    feeder.start()
    try:
        objects["conn"].connect()
        assert created.wait(10)
        tx.connect()
        tx_rec.wait_connected()
        track = wait_until(lambda: objects.get("track"), 10, "on_track")
        objects["sink"] = SoraVideoSink(track)
        objects["sink"].on_frame = lambda frame: got_frame.set()
        del track
        assert got_frame.wait(15)
        with caplog.at_level(logging.ERROR):
            for name in order:
                del objects[name]
                gc.collect()
            # The dropped recvonly connection disconnects by itself.
            assert disconnected.wait(10)
    finally:
        stop.set()
        feeder.join(5)
        tx.disconnect()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    gc.collect()
    wait_threads_gone()


# -- logging ------------------------------------------------------------------------------------


@pytest.fixture
def restore_log_levels() -> Iterator[None]:
    loggers = [
        logging.getLogger(n) for n in ("sora_async", "aiortc", "aioice", "sora_async.compat")
    ]
    saved = [(lg, lg.level, list(lg.handlers)) for lg in loggers]
    yield
    for lg, level, handlers in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers


def test_enable_libwebrtc_log_maps_to_python_levels(restore_log_levels) -> None:
    for severity, level in [
        (SoraLoggingSeverity.VERBOSE, logging.DEBUG),
        (SoraLoggingSeverity.INFO, logging.INFO),
        (SoraLoggingSeverity.WARNING, logging.WARNING),
        (SoraLoggingSeverity.ERROR, logging.ERROR),
    ]:
        compat.enable_libwebrtc_log(severity)
        for name in ("sora_async", "aiortc", "aioice"):
            assert logging.getLogger(name).level == level, (severity, name)
    compat.enable_libwebrtc_log(SoraLoggingSeverity.NONE)
    assert not logging.getLogger("aiortc").isEnabledFor(logging.CRITICAL)
    with pytest.raises(TypeError):
        compat.enable_libwebrtc_log("INFO")  # type: ignore[arg-type]


def test_rtc_log_names_the_callers_file_and_line(restore_log_levels, caplog) -> None:
    compat.enable_libwebrtc_log(SoraLoggingSeverity.INFO)
    with caplog.at_level(logging.INFO, "sora_async.compat"):
        line = _current_line() + 1
        compat.rtc_log(SoraLoggingSeverity.INFO, "hello from the app")
        compat.rtc_log(SoraLoggingSeverity.VERBOSE, "below the level: not logged")
    (record,) = [r for r in caplog.records if "hello" in r.getMessage()]
    assert record.getMessage() == f"[test_compat_connection.py:{line}] hello from the app"
    assert (record.filename, record.lineno, record.levelno) == (
        "test_compat_connection.py",
        line,
        logging.INFO,
    )
    assert "below the level" not in caplog.text


def _current_line() -> int:
    import inspect

    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def test_libcamera_is_not_supported_here() -> None:
    with pytest.raises(RuntimeError, match="Libcamera is not supported on this platform"):
        Sora().create_libcamera_source(640, 480, 30, False)
    with pytest.raises(ValueError):
        Sora().create_libcamera_source(640, 480, 30, False, [("a",)])  # type: ignore[list-item]


def test_create_connection_validates_like_the_official(server) -> None:
    sora = Sora()
    with pytest.raises(TypeError):
        sora.create_connection(server.signaling_url, "recvonly", "c")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sora.create_connection([server.signaling_url], "recvonly", "c", no_such_keyword=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        sora.create_connection([server.signaling_url], "nonsense", "c")
    with pytest.raises(TypeError):
        sora.create_connection([server.signaling_url], "sendonly", "c", audio_source=object())  # type: ignore[arg-type]
