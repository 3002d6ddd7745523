"""One worker script per client under measurement, each run in its own process.

Every worker takes one JSON config (``argv[1]``), prints JSON lines on stdout
(``{"event": ...}``) and ends with one ``{"event": "result", ...}`` line. A line
``stop`` on stdin, or stdin closing, ends an open-ended task early.
"""
