"""The official ``sora_sdk`` client as a test referee.

``runner.py`` drives it in a subprocess; ``harness.py`` is the asyncio side.
"""
