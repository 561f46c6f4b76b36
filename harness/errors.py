"""The one error type a user can fix (bad config, bad data, unknown name, unusable spec or file).

Everything that subclasses :class:`UserError` is caught once, by the command layer: it prints
``error: <message>`` on stderr and exits with status 2, without a traceback. The message must name the
value, key or file at fault. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Base of every error whose message tells the user what to change."""

    exit_code = 2

    def __str__(self) -> str:   # subclasses of KeyError would otherwise quote the message
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class NoDefaultData(UserError):
    """The suite has no embedded (synthetic) data; the user must pass ``--data``. The demo skips it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP turned into an exception, so ``finally`` blocks run (the MLflow run is marked KILLED,
    temp folders are removed, worker processes are stopped) exactly as on Ctrl-C."""

    def __init__(self, signum: int):
        import signal
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
