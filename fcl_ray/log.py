"""Logging: fcl-ray logs like a library, and its command line sets the format and the level.

Every module logs through a logger below ``fcl_ray`` (``logging.getLogger(__name__)``, or
:func:`get_logger`); the package adds a ``NullHandler`` to ``fcl_ray`` and nothing else, so
imported into a notebook or another program it prints nothing the program did not ask for
(the logging HOWTO, "Configuring Logging for a Library"). To see the progress lines there::

    logging.basicConfig(format="%(asctime)s %(message)s")
    logging.getLogger("fcl_ray").setLevel(logging.INFO)

The ``fcl-ray`` command (and only it) calls :func:`setup_logging` with the level of ``-q``
(warning), ``-v`` (debug) or ``--log-level``: progress and diagnostics then go to stderr, one
line per event with a timestamp and a level::

    2025-06-01 14:03:12 INFO      round 3/10 done in 1.2s with 3/3 clients (...); ETA 0:00:08

Results (the Dice table, ``fcl-ray report``'s tables, ``fcl-ray config``) are the program's
output and stay on stdout, so ``fcl-ray run ... > table.txt`` keeps only them.

A Ray worker that logs for us (a Tune trial, in its own process) is handed the driver's
level of ``fcl_ray`` and calls :func:`setup_worker_logging`; Ray forwards the worker's
stderr to the driver with its own ``(name pid=...)`` prefix (``log_to_driver``).
"""
from __future__ import annotations

import datetime
import logging
import sys
import time
from typing import Callable

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
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
    """The command line's logging: fcl-ray's lines to stderr at ``level`` (debug, info,
    warning, error), in :data:`FORMAT`. Only ``fcl-ray`` (and the Ray workers it starts, via
    :func:`setup_worker_logging`) call it; a library leaves handlers to the program.

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
    return logger


def driver_level() -> str:
    """The level fcl-ray's lines are shown at in this process (``fcl_ray``'s effective
    level by name: set by ``-q``/``-v``, or by the program that imported fcl-ray), to hand
    to the Ray workers that log for us."""
    level = logging.getLogger(ROOT).getEffectiveLevel()
    return next((name for name, value in LEVELS.items() if value >= level), "error")


def setup_worker_logging(level: str | None) -> None:
    """In a Ray worker that logs for us (a Tune trial): the command line's stderr lines at the
    driver's ``level`` (:func:`driver_level`), which Ray forwards to the driver. A worker is
    a process Ray started for fcl-ray, so no one else would set its logging up."""
    setup_logging(level if level in LEVELS else "info")


def get_logger(name: str = ROOT) -> logging.Logger:
    """The logger ``name`` (a module's ``__name__``, below ``fcl_ray``). It installs nothing:
    where its lines go is the program's choice (``fcl-ray``: :func:`setup_logging`)."""
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
