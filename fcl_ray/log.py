"""Logging: the one place that sets the format and the level of fcl-ray's progress lines.

Progress and diagnostics go to stderr through the standard ``logging`` module, one line per
event with a timestamp and a level::

    2025-06-01 14:03:12 INFO      round 3/10 done in 1.2s with 3/3 clients (...); ETA 0:00:08

Results (the Dice table, ``fcl-ray report``'s tables, ``fcl-ray config``) are the program's
output and stay on stdout, so ``fcl-ray run ... > table.txt`` keeps only them.

The ``fcl-ray`` command calls :func:`setup_logging` with the level of ``-q`` (warning),
``-v`` (debug) or ``--log-level``; used as a library (``run_experiment`` in a notebook), the
first :func:`get_logger` sets up level info. A Ray worker (a Tune trial, an actor) started by
this process inherits the level through ``$FCL_RAY_LOG_LEVEL``; Ray forwards the worker's
stderr to the driver with its own ``(name pid=...)`` prefix (``log_to_driver``).
"""
from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from typing import Callable

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
LEVEL_ENV = "FCL_RAY_LOG_LEVEL"    # the level, handed to Ray workers started from here
FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
ROOT = "fcl_ray"                    # every fcl-ray logger is below this one


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a line is logged (a redirect, pytest's capture),
    not to the stream that was current when logging was set up."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):   # StreamHandler.__init__ assigns it; sys.stderr is read instead
        pass


def _is_set_up() -> bool:
    return any(isinstance(h, _StderrHandler) for h in logging.getLogger(ROOT).handlers)


def setup_logging(level: str = "info") -> logging.Logger:
    """Send fcl-ray's log lines to stderr at ``level`` (debug, info, warning, error).

    Calling it again only changes the level. Other libraries' loggers (Ray, MLflow) are left
    as they are: the fcl_ray logger has its own handler and does not propagate to the root."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level '{level}' (choose from {', '.join(LEVELS)})")
    logger = logging.getLogger(ROOT)
    if not _is_set_up():
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        logger.addHandler(handler)
    logger.setLevel(LEVELS[level])
    logger.propagate = False
    os.environ[LEVEL_ENV] = level
    return logger


def get_logger(name: str = ROOT) -> logging.Logger:
    """The logger ``name`` (a module's ``__name__``, below ``fcl_ray``); the first call sets
    up logging at ``$FCL_RAY_LOG_LEVEL`` (info if unset or unknown) unless it was set up."""
    if not _is_set_up():
        level = os.environ.get(LEVEL_ENV, "info").lower()
        setup_logging(level if level in LEVELS else "info")
    return logging.getLogger(name)


# ----------------------------------------------------------------------------- Ray's notices
# Ray (2.60) logs this WARNING at every ray.init of a cluster with token authentication on,
# the default: a notice, not a problem, so it is one info line of ours instead (-q hides it).
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
RAY_AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"


class _RayNoticeAsInfo(logging.Filter):
    """Drops Ray's token-authentication notice from Ray's logger and logs it, the first time
    only, as an info line of fcl-ray's; every other record of that logger passes."""

    def __init__(self):
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(RAY_AUTH_NOTICE):
            return True
        if not self.seen:
            self.seen = True
            get_logger(f"{ROOT}.ray").info(f"Ray: {message}")
        return False


def ray_notices_as_info() -> None:
    """Install the filter (once) on Ray's authentication logger; call before ``ray.init``.
    Token authentication itself stays as Ray sets it."""
    logger = logging.getLogger(RAY_AUTH_LOGGER)
    if not any(isinstance(f, _RayNoticeAsInfo) for f in logger.filters):
        logger.addFilter(_RayNoticeAsInfo())


def progress(line: str) -> None:
    """An info line: the default ``log`` of ``run_experiment``, ``run_sweep`` and the bench."""
    get_logger().info(line)


# ----------------------------------------------------------------------------- ETA
def format_duration(seconds: float) -> str:
    """``42.3`` -> ``0:00:42``; ``90061`` -> ``1 day, 1:01:01``."""
    return str(datetime.timedelta(seconds=round(max(0.0, seconds))))


class Eta:
    """Time left for ``total`` steps (rounds, settings) from the mean time per step so far.

    Counts from its creation, so a resumed phase (``Eta(rounds - first)``) estimates from the
    rounds run in this process only."""

    def __init__(self, total: int, clock: Callable[[], float] = time.perf_counter):
        self.total = total
        self.done = 0
        self._clock = clock
        self._start = clock()

    def step(self, steps: int = 1) -> str:
        """Count ``steps`` more as done; return ``'ETA 0:01:23'`` for the steps left."""
        self.done += steps
        per_step = (self._clock() - self._start) / self.done
        return f"ETA {format_duration(per_step * max(0, self.total - self.done))}"
