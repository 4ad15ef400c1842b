import logging as _logging

__version__ = "0.1.0"

# A library logs, the program decides what to show: without this, Python's last-resort handler prints
# tuckbox's warnings (e.g. "giving up on ... after 8 attempts") as a second, unprefixed line next to
# the one-line error the CLI already reports.
_logging.getLogger("tuckbox").addHandler(_logging.NullHandler())
