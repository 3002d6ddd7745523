"""A chat on a DataChannel label: lines you type go out, what others send is printed.

    python examples/messaging_chat.py --devserver           # a bot on the server answers
    SORA_SIGNALING_URLS=... SORA_CHANNEL_ID=ch python examples/messaging_chat.py
    python examples/messaging_chat.py --devserver --say hello --say "how are you"

Like the official ``messaging.py``: no audio or video, DataChannel signaling,
one ``#chat`` label in both directions. ``conn.messages("#chat")`` is an async
iterator of what arrives. Before sending, wait for ``switched``: Sora relays
only to channels it has opened, and ``switched`` says they all are.
"""

from __future__ import annotations

import asyncio
import sys

import _common

LABEL = "#chat"


async def main() -> int:
    parser = _common.parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--say", action="append", default=[], help="send this instead of reading stdin"
    )
    args = parser.parse_args()
    chat = {
        "audio": False,
        "video": False,
        "data_channel_signaling": True,
        "data_channels": [{"label": LABEL, "direction": "sendrecv"}],
    }
    replies = 0

    async with _common.target(args) as where:
        bot, bot_task = None, None
        if where.devserver is not None:
            bot = where.connection("sendrecv", **chat)
            await bot.connect()
            bot_task = asyncio.create_task(answer(bot))
        conn = where.connection("sendrecv", **chat)
        switched = asyncio.Event()
        conn.on("switched", lambda message: switched.set())
        async with conn:
            print(
                f"connected as {conn.connection_id}; type a line and Enter (Ctrl-D ends)",
                flush=True,
            )
            await switched.wait()

            async def show():
                nonlocal replies
                async for _label, data in conn.messages(LABEL):
                    print(f"< {data.decode(errors='replace')}", flush=True)
                    replies += 1

            shower = asyncio.create_task(show())
            said = iter(args.say)
            while True:
                # One line at a time, read off the event loop so messages keep printing.
                line = next(said, "") if args.say else await asyncio.to_thread(sys.stdin.readline)
                if not line:
                    break
                if line.strip():
                    await conn.send_data_channel(LABEL, line.strip().encode())
                    print(f"> {line.strip()}", flush=True)
            await asyncio.sleep(1.0)  # let the answers arrive
            shower.cancel()
        if bot is not None:
            await bot.disconnect()
            await asyncio.gather(bot_task, return_exceptions=True)
    print(f"{replies} messages received")
    return 0 if replies > 0 or bot is None else 6


async def answer(bot):
    """The dev-server companion: answers every message (it ends with the connection)."""
    async for label, data in bot.messages(LABEL):
        await bot.send_data_channel(label, b"echo: " + data)


if __name__ == "__main__":
    _common.run(main)
