"""Benchmarks: the official ``sora_sdk`` client and ``sora_async`` through the dev server.

Not tests: ``python bench/run.py --help`` (see ``bench/README.md``).
"""
