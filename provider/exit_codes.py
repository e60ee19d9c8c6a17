"""The ``keygate`` command's exit statuses, one table for every subcommand (docs/cli.md).

Scripts and CI branch on these, so each meaning has its own number and they never change.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    PROBLEMS = 1  # lint found errors (or warnings with --strict); demo did not see the expected result
    USAGE = 2  # bad flags, configuration or input: the message says what to change
    MISSING_EXTRA = 3  # a backend's optional SDK is not installed: pip install 'keygate[<backend>]'
    INTERNAL = 4  # an unexpected error (a bug): rerun with --debug for the traceback
    INTERRUPTED = 130  # Ctrl-C outside the daemon (128 + SIGINT)
