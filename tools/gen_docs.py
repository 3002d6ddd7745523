#!/usr/bin/env python3
"""Generate the API reference (docs/api.md) from docstrings and the CLI reference (docs/cli.md).

    python tools/gen_docs.py            # rewrite docs/api.md and docs/cli.md
    python tools/gen_docs.py --check    # exit 1 if a page is stale (--strict: or a name is
                                        # undocumented)

The pages are plain Markdown, so GitHub renders them and no Sphinx/mkdocs
build is needed. What counts as public is listed in PAGES below: the names in
``sora_async.__all__`` plus the few other modules users import. A class's
members are documented when they are defined in ``sora_async`` (members
inherited from aiortc or pyee are summarised by the class docstring). The
test ``tests/test_cli_docs.py`` checks that the pages are current and that no new
public name lacks a docstring.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import inspect
import io
import re
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
API_PAGE = ROOT / "docs" / "api.md"
CLI_PAGE = ROOT / "docs" / "cli.md"

#: (module, names or None for its ``__all__``, what the section is about)
PAGES: tuple[tuple[str, tuple[str, ...] | None, str], ...] = (
    ("sora_async", None, "The client: connections, media sources and sinks, frames, VAD, enums."),
    ("sora_async.options", ("ConnectionKeywords",), "The keywords of `Connection`."),
    ("sora_async.signaling", ("State",), "What `Connection.state` returns."),
    ("sora_async.enums", ("DegradationPreference",), "The remaining enum of the keywords."),
    (
        "sora_async.hwaccel",
        (
            "get_video_codec_capability",
            "VideoCodecCapability",
            "VideoCodecPreference",
            "create_video_codec_preference_from_implementation",
            "VideoCodecImplementation",
            "VideoCodecType",
        ),
        "Codec engines on this machine, and choosing them (`video_codec_preference`).",
    ),
    (
        "sora_async.devserver",
        ("DevServer", "BackgroundDevServer", "DevServerOptions", "ConnectionInfo"),
        "The Sora-compatible dev server (see [devserver.md](devserver.md)).",
    ),
    ("sora_async.cli", ("main", "ExitCode", "CliError"), "The `sora-async` command line."),
    (
        "sora_async.runner",
        ("run", "loop_factory", "uvloop_available"),
        "Running a program on uvloop when it is installed (opt-in, never required).",
    ),
    (
        "sora_async.cli.media",
        ("TestPatternTrack", "ToneTrack", "MediaInput", "encode_png", "draw_test_pattern"),
        "Generated media, files and devices.",
    ),
    ("sora_async.cli.record", ("Recorder",), "Recording received media with PyAV."),
    (
        "sora_async.cli.stats",
        ("StatsTracker", "ConnectionStats", "StreamStats"),
        "Rates out of `get_stats()`.",
    ),
    ("sora_async.cli.live", ("LiveView", "ConnectionRow"), "The live terminal view."),
    ("sora_async.cli.window", ("VideoWindow",), "Received video in OpenCV windows."),
)


@dataclass
class Report:
    """What the generator found."""

    undocumented: list[str] = field(default_factory=list)


def _doc(obj: Any) -> str | None:
    doc = obj.__doc__ if isinstance(obj, property) else inspect.getdoc(obj)
    if isinstance(obj, property):
        doc = inspect.cleandoc(doc) if doc else None
    return doc.strip() if doc else None


def _own_doc(owner: type, name: str, member: Any) -> str | None:
    """The docstring written for ``member`` itself (not inherited from its type)."""
    if isinstance(member, property | staticmethod | classmethod) or inspect.isfunction(member):
        target = member.__func__ if isinstance(member, staticmethod | classmethod) else member
        return _doc(target)
    return None


def _signature(obj: Any, name: str) -> str:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(...)"
    text = str(signature)
    # Keep the page stable and readable: no memory addresses, no module prefixes of types.
    text = re.sub(r" at 0x[0-9a-f]+", "", text)
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    # Annotations are strings (``from __future__ import annotations``): drop their quotes.
    text = re.sub(r"(: |-> )'([^']*)'", r"\1\2", text)
    return f"{name}{text}"


def _is_own(member_owner: type) -> bool:
    return member_owner.__module__.startswith("sora_async")


def _members(cls: type) -> Iterator[tuple[str, Any, type]]:
    """Public members defined in sora_async classes of ``cls``'s MRO, first definition wins."""
    seen: set[str] = set()
    for owner in cls.__mro__:
        if owner is object or not _is_own(owner):
            continue
        for name, member in vars(owner).items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            if isinstance(member, property) or inspect.isfunction(member):
                yield name, member, owner
            elif isinstance(member, staticmethod | classmethod):
                yield name, member, owner


def _indent_doc(doc: str | None) -> str:
    if not doc:
        return "*(no docstring)*\n"
    return _rst_to_md(doc) + "\n"


def _rst_to_md(doc: str) -> str:
    """The few reST idioms the docstrings use, as Markdown."""
    doc = re.sub(r":(?:class|meth|func|attr|mod|data|exc):`~?([^`]+)`", r"`\1`", doc)
    # reST's ``code`` is Markdown's `code`.
    doc = doc.replace("``", "`")
    out: list[str] = []
    lines = doc.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.rstrip().endswith("::") and not line.strip().startswith(">>>"):
            out.append(line.rstrip()[:-1] if line.strip() != "::" else "")
            out.append("")
            out.append("```python")
            index += 1
            while index < len(lines) and not lines[index].strip():
                index += 1
            block: list[str] = []
            while index < len(lines) and (
                not lines[index].strip() or lines[index].startswith("    ")
            ):
                block.append(lines[index][4:] if lines[index].startswith("    ") else "")
                index += 1
            while block and not block[-1]:
                block.pop()
            out.extend(block)
            out.append("```")
            out.append("")
            continue
        if line.strip() in ("Args:", "Returns:", "Raises:", "Yields:"):
            # A Google-style section: "    name: text" items become a list.
            out.append(f"**{line.strip()[:-1]}:**")
            out.append("")
            index += 1
            while index < len(lines) and lines[index].startswith("    "):
                item = re.match(r"^ {4}([\w, .*]+?):\s*(.*)$", lines[index])
                if item and not lines[index].startswith("     "):
                    out.append(f"- `{item.group(1)}`: {item.group(2)}")
                else:
                    out[-1] += " " + lines[index].strip()
                index += 1
            out.append("")
            continue
        out.append(line)
        index += 1
    return "\n".join(out)


def _anchor(text: str) -> str:
    """GitHub's heading slug."""
    return re.sub(r"[^a-z0-9 _-]", "", text.lower()).replace(" ", "-")


def render_api(report: Report) -> str:
    """docs/api.md as text; undocumented public names go to ``report``."""
    out = io.StringIO()
    out.write("# API reference\n\n")
    out.write(
        "Generated from the docstrings by `python tools/gen_docs.py`; do not edit by hand "
        "(`tests/test_cli_docs.py` checks it is current). Every public name is typed "
        "(the package ships `py.typed`). Start with [`Connection`](#connection); the "
        "[README](../README.md) has a 15-line example and [examples/](../examples) has more.\n\n"
    )
    sections: list[tuple[str, list[tuple[str, Any]], str]] = []
    for module_name, names, about in PAGES:
        module = importlib.import_module(module_name)
        wanted = names if names is not None else tuple(module.__all__)
        objects = [(name, getattr(module, name)) for name in wanted]
        sections.append((module_name, objects, about))
    out.write("## Contents\n\n")
    for module_name, objects, about in sections:
        out.write(f"- `{module_name}`: {about}\n")
        listed = ", ".join(f"[`{name}`](#{_anchor(name)})" for name, _ in objects)
        out.write(f"  {listed}\n")
    out.write("\n")
    for module_name, objects, about in sections:
        out.write(f"## `{module_name}`\n\n{about}\n\n")
        for name, obj in objects:
            qualified = f"{module_name}.{name}"
            if name == "__version__":
                out.write(f"### `{name}`\n\nThe package version: `{obj}`.\n\n")
                continue
            _render_object(out, qualified, name, obj, report)
    return _collapse_blank_lines(out.getvalue()).rstrip("\n") + "\n"


def _collapse_blank_lines(text: str) -> str:
    """Runs of blank lines become one, outside fenced code blocks: the examples keep
    the two blank lines that PEP 8 (and ``ruff format``) put around a function."""
    parts = re.split(r"(^```.*?^```$)", text, flags=re.MULTILINE | re.DOTALL)
    return "".join(
        part if index % 2 else re.sub(r"\n{3,}", "\n\n", part) for index, part in enumerate(parts)
    )


def _render_object(out: io.StringIO, qualified: str, name: str, obj: Any, report: Report) -> None:
    out.write(f"### `{name}`\n\n")
    doc = _doc(obj)
    if not doc:
        report.undocumented.append(qualified)
    if inspect.isclass(obj):
        if issubclass(obj, enum.Enum):
            base = next(b.__name__ for b in obj.__mro__[1:] if b.__module__ == "enum")
            out.write(f"`class {name}({base})`\n\n")
            out.write(_indent_doc(doc) + "\n")
            out.write("| member | value |\n|---|---|\n")
            for member in obj:
                out.write(f"| `{member.name}` | `{member.value!r}` |\n")
            out.write("\n")
            _render_members(out, qualified, obj, report)
            return
        if typing.is_typeddict(obj):
            out.write(f"`class {name}(TypedDict)`\n\n")
            out.write(_indent_doc(doc) + "\n")
            out.write("| keyword | type |\n|---|---|\n")
            for key, annotation in obj.__annotations__.items():
                out.write(f"| `{key}` | `{_annotation(annotation)}` |\n")
            out.write("\n")
            return
        signature = _signature(obj, name).removesuffix(" -> None")
        bases = [b.__name__ for b in obj.__bases__ if b is not object]
        out.write(f"```python\nclass {signature}\n```\n\n")
        if bases:
            out.write(f"Bases: {', '.join(f'`{b}`' for b in bases)}\n\n")
        out.write(_indent_doc(doc) + "\n")
        _render_members(out, qualified, obj, report)
        return
    if callable(obj):
        out.write(f"```python\n{_signature(obj, name)}\n```\n\n")
        out.write(_indent_doc(doc) + "\n")
        return
    out.write(f"`{name} = {obj!r}`\n\n")


def _annotation(annotation: Any) -> str:
    text = (
        annotation
        if isinstance(annotation, str)
        else getattr(annotation, "__name__", repr(annotation))
    )
    return str(text).replace("|", "\\|")


def _render_members(out: io.StringIO, qualified: str, cls: type, report: Report) -> None:
    members = sorted(_members(cls), key=lambda item: item[0])
    if issubclass(cls, enum.Enum):
        members = [
            m
            for m in members
            if not isinstance(m[1], staticmethod | classmethod) or m[0] in ("parse",)
        ]
    for member_name, member, owner in members:
        doc = _own_doc(owner, member_name, member)
        if not doc:
            report.undocumented.append(f"{qualified}.{member_name}")
        if isinstance(member, property):
            out.write(f"#### `{cls.__name__}.{member_name}` (property)\n\n")
        else:
            function = member.__func__ if isinstance(member, staticmethod | classmethod) else member
            prefix = "async " if inspect.iscoroutinefunction(function) else ""
            label = _signature(function, member_name)
            if not isinstance(member, staticmethod):
                label = label.replace("(self, ", "(", 1).replace("(self)", "()", 1)
                label = label.replace("(cls, ", "(", 1).replace("(cls)", "()", 1)
            out.write(f"#### `{prefix}{cls.__name__}.{label}`\n\n")
        out.write(_indent_doc(doc) + "\n")


def render_cli() -> str:
    """docs/cli.md: the ``sora-async`` reference, from its argument parser."""
    from sora_async.cli.app import build_parser

    parser = build_parser()
    out = io.StringIO()
    out.write("# `sora-async`: the command-line client\n\n")
    out.write(
        "Generated from the argument parser by `python tools/gen_docs.py`; do not edit by hand.\n"
        "Installed as `sora-async` (also `python -m sora_async`). Every option of the "
        '"connection" group is the `Connection` keyword of the same name '
        "([api.md](api.md#connectionkeywords)). Progress and errors go to stderr in plain "
        "words; `--stats` JSON lines and received messages go to stdout.\n\n"
    )
    out.write("```text\n" + _help(parser) + "```\n\n")
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        out.write(f"## `sora-async {name}`\n\n```text\n{_help(sub)}```\n\n")
    return out.getvalue().rstrip("\n") + "\n"


def _help(parser: argparse.ArgumentParser) -> str:
    # A fixed width so the page does not depend on the terminal it was generated in.
    import os

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        text = parser.format_help()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return text.replace(parser.prog.split()[0] + " ", parser.prog.split()[0] + " ", 1)


def main(argv: list[str] | None = None) -> int:
    """Write the pages, or with ``--check`` compare them; returns the exit status."""
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--check", action="store_true", help="fail if a page is stale")
    options.add_argument(
        "--strict", action="store_true", help="also fail if a public name has no docstring"
    )
    args = options.parse_args(argv)
    report = Report()
    pages = {API_PAGE: render_api(report), CLI_PAGE: render_cli()}
    status = 0
    for path, text in pages.items():
        relative = path.relative_to(ROOT)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                print(f"{relative} is stale: run python tools/gen_docs.py", file=sys.stderr)
                status = 1
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {relative}")
    if report.undocumented:
        print("public names without a docstring:", file=sys.stderr)
        for name in report.undocumented:
            print(f"  {name}", file=sys.stderr)
        if args.strict:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
