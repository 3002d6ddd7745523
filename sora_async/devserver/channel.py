"""Channels: who is in which channel, and everything that fans out across one.

A :class:`Channel` knows its members in join order and derives from them what
each member should receive (its subscriptions), the ``notify`` events and
their ``channel_*_connections`` counters, messaging relay, push, and the
spotlight focus. Sessions (``session.py``) own their transports and their
re-offer queue; the channel only asks them to renegotiate.

Rules from Sora (``sora-protocol.md`` §1.1, §3.6, §7):

* connections with the same ``bundle_id`` never receive each other's media,
  messages or notifications (counters still count them);
* a joiner's own ``connection.created`` carries ``data``, the connections
  already in the channel;
* a ``#`` message is relayed by each connection's ``direction``, never back to
  its sender, with the 26-byte sender id in front for receivers whose entry
  asked for the ``sender_connection_id`` header.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .ids import new_id

if TYPE_CHECKING:
    from .peer import DataChannelSpec, Publication
    from .session import Session

__all__ = ["DEFAULT_SPOTLIGHT_NUMBER", "Channel", "ChannelRegistry"]

log = logging.getLogger("sora_async.devserver")

#: Focused senders when the first spotlight connection did not say
#: (sora.conf ``default_spotlight_number``; Sora's default is not public).
DEFAULT_SPOTLIGHT_NUMBER = 1

_RECEIVING = frozenset({"recvonly", "sendrecv"})
_SENDING = frozenset({"sendonly", "sendrecv"})


def _wants_sender_id(spec: DataChannelSpec) -> bool:
    return any(field.get("type") == "sender_connection_id" for field in spec.header or ())


class Channel:
    """One channel: its members, its ``session_id`` and its spotlight state."""

    def __init__(self, channel_id: str) -> None:
        self.channel_id = channel_id
        #: Created when the channel goes from 0 to 1 connections (``DOC:SIGNALING``).
        self.session_id = new_id()
        #: Admitted sessions (offer sent or later), in join order.
        self.members: dict[str, Session] = {}
        #: Sessions whose peer connection came up, in the order they did.
        self.live: dict[str, Session] = {}
        self.focused: list[str] = []

    # -- membership ---------------------------------------------------------

    def add(self, session: Session) -> None:
        self.members[session.connection_id] = session

    def on_connected(self, joiner: Session) -> None:
        """The joiner's peer connection is up: it now counts, sends and receives.

        Every live member (the joiner too, for publishers that connected while
        it was negotiating) is asked to renegotiate; the member's re-offer
        queue decides whether its subscriptions really changed.
        """
        self.live[joiner.connection_id] = joiner
        counters = self.counters()
        for member in self._audience(joiner):
            message = joiner.connection_event("connection.created", counters)
            if member is joiner:
                message["data"] = [
                    other.notify_entry()
                    for other in self.live.values()
                    if other is not joiner and other.bundle_id != joiner.bundle_id
                ]
            member.send_notify(message)
        for member in self.live.values():
            member.request_renegotiation()
        self.update_spotlight()

    def remove(self, leaver: Session) -> None:
        """The leaver is gone from the channel: tell the others, retire its media."""
        self.members.pop(leaver.connection_id, None)
        if self.live.pop(leaver.connection_id, None) is None:
            return
        counters = self.counters()
        # The leaver is no longer live, so it is not in its own audience.
        for member in self._audience(leaver):
            member.send_notify(leaver.connection_event("connection.destroyed", counters))
        for member in self.live.values():
            member.request_renegotiation()
        self.update_spotlight()

    def on_updated(self, subject: Session) -> None:
        """Periodic ``connection.updated`` about a live member, to its audience."""
        if subject.connection_id not in self.live:
            return
        counters = self.counters()
        for member in self._audience(subject):
            member.send_notify(subject.connection_event("connection.updated", counters))

    def on_publication(self, publisher: Session) -> None:
        """New upstream media from a live publisher: offer it to the others."""
        for member in self.live.values():
            if member is not publisher:
                member.request_renegotiation()

    def _audience(self, subject: Session) -> Iterator[Session]:
        # Same-bundle connections never hear about each other (DOC:SIGNALING).
        for member in list(self.live.values()):
            if member is subject or member.bundle_id != subject.bundle_id:
                yield member

    def counters(self) -> dict[str, int]:
        """The ``channel_*_connections`` fields of a connection notify."""
        roles = [member.role.value for member in self.live.values()]
        return {
            "channel_connections": len(roles),
            "channel_sendrecv_connections": roles.count("sendrecv"),
            "channel_sendonly_connections": roles.count("sendonly"),
            "channel_recvonly_connections": roles.count("recvonly"),
        }

    # -- media --------------------------------------------------------------

    def subscriptions_for(self, receiver: Session) -> list[Publication]:
        """The upstream streams ``receiver`` should get, publishers in join order."""
        subscriptions: list[Publication] = []
        if not (receiver.recv_audio or receiver.recv_video):
            return subscriptions
        for publisher in self.live.values():
            if publisher is receiver or publisher.bundle_id == receiver.bundle_id:
                continue
            for publication in publisher.publications():
                if (publication.kind == "audio" and receiver.recv_audio) or (
                    publication.kind == "video" and receiver.recv_video
                ):
                    subscriptions.append(publication)
        return subscriptions

    # -- spotlight ----------------------------------------------------------

    def update_spotlight(self) -> None:
        """Recompute the focused senders; notify changes and re-pick layers.

        Policy (a dev-server simplification of Sora's voice-activity focus):
        the ``spotlight_number`` most recently connected spotlight senders are
        focused. ``spotlight_number`` is the first spotlight connection's.
        """
        spotlight_members = [m for m in self.live.values() if m.settings.spotlight]
        if not spotlight_members and not self.focused:
            return
        number = DEFAULT_SPOTLIGHT_NUMBER
        if spotlight_members and spotlight_members[0].settings.spotlight_number:
            number = spotlight_members[0].settings.spotlight_number
        senders = [m for m in spotlight_members if m.send_video or m.send_audio]
        focused = [m.connection_id for m in senders[-number:]] if number > 0 else []
        gained = [cid for cid in focused if cid not in self.focused]
        lost = [cid for cid in self.focused if cid not in focused and cid in self.live]
        self.focused = focused
        for cid in lost:
            self._broadcast_spotlight("spotlight.unfocused", self.live[cid])
        for cid in gained:
            self._broadcast_spotlight("spotlight.focused", self.live[cid])
            self._broadcast_spotlight("spotlight.changed", self.live[cid])
        for member in self.live.values():
            member.apply_simulcast_rids()

    def _broadcast_spotlight(self, event_type: str, subject: Session) -> None:
        message = subject.spotlight_event(event_type)
        for member in self._audience(subject):
            member.send_notify(dict(message))

    def spotlight_rid(self, receiver: Session, publisher_connection_id: str) -> str | None:
        """The layer a spotlight receiver gets from one publisher, or None if not spotlight."""
        if not receiver.settings.spotlight:
            return None
        if publisher_connection_id in self.focused:
            return receiver.settings.spotlight_focus_rid
        return receiver.settings.spotlight_unfocus_rid

    # -- messaging and push -------------------------------------------------

    def relay_message(self, sender: Session, spec: DataChannelSpec, data: bytes | str) -> None:
        """Relay one ``#`` message from ``sender`` to every member that receives its label."""
        if spec.direction not in _SENDING:
            log.debug("%s: dropped a message on %s, a %s label", sender, spec.label, spec.direction)
            return
        payload: bytes | str = data
        if spec.compress and isinstance(data, bytes):
            try:
                payload = zlib.decompress(data)
            except zlib.error as exc:
                log.warning("%s: undecodable zlib message on %s: %s", sender, spec.label, exc)
                return
        for receiver in list(self.live.values()):
            if receiver is sender or receiver.bundle_id == sender.bundle_id:
                continue
            target = receiver.data_channel_specs.get(spec.label)
            if target is None or target.direction not in _RECEIVING:
                continue
            out = payload
            if _wants_sender_id(target):
                body = out.encode() if isinstance(out, str) else out
                out = sender.connection_id.encode("ascii") + body
            if target.compress:
                out = zlib.compress(out.encode() if isinstance(out, str) else out)
            receiver.send_data(spec.label, out)

    def push(self, data: Any) -> None:
        """Send ``{"type": "push", "data": data}`` to every connected member."""
        for member in self.live.values():
            member.send_push(data)


class ChannelRegistry:
    """All channels and all admitted connections of one dev server."""

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        #: Admitted connections by connection id, until their close completes.
        self.sessions: dict[str, Session] = {}

    def admit(self, session: Session) -> Channel:
        """Put a validated connection into its channel, creating the channel if needed."""
        channel = self.channels.get(session.channel_id)
        if channel is None:
            channel = self.channels[session.channel_id] = Channel(session.channel_id)
        channel.add(session)
        self.sessions[session.connection_id] = session
        return channel

    def leave(self, session: Session) -> None:
        """Take a closing connection out of its channel (its id stays until :meth:`forget`)."""
        channel = self.channels.get(session.channel_id)
        if channel is None or session.connection_id not in channel.members:
            return
        channel.remove(session)
        if not channel.members:
            # The next connection opens a new session (new session_id), as in Sora.
            del self.channels[channel.channel_id]

    def forget(self, session: Session) -> None:
        if self.sessions.get(session.connection_id) is session:
            del self.sessions[session.connection_id]

    def find(self, channel_id: str, connection_id: str) -> Session | None:
        """The admitted, not yet closing connection ``connection_id`` of ``channel_id``."""
        channel = self.channels.get(channel_id)
        if channel is None:
            return None
        return channel.members.get(connection_id)
