"""Logging (fcl_ray/log.py) and the CLI's -q / -v / --log-level: levels, format, bad input."""
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fcl_ray.cli import main
from fcl_ray.log import (RAY_AUTH_LOGGER, Eta, driver_level, format_duration, get_logger,
                         progress, ray_notices_as_info, setup_logging, setup_worker_logging)

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|DEBUG|WARNING|ERROR) +\S")


@pytest.fixture(autouse=True)
def info_level_after():
    yield
    setup_logging("info")   # the level tests leave behind for the next one


def test_lines_go_to_stderr_with_a_timestamp_and_a_level(capsys):
    setup_logging("info")
    progress("  round 3/10 done")
    get_logger("fcl_ray.federation.driver").warning("collapsed")
    get_logger("fcl_ray.sweep.run").debug("not shown at info")
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2 and all(LINE.match(line) for line in lines), lines
    assert lines[0].endswith("INFO      round 3/10 done")
    assert " WARNING collapsed" in lines[1]


def test_levels_and_setting_up_twice_keeps_one_handler(capsys):
    setup_logging("debug")
    setup_logging("warning")
    ours = [h for h in logging.getLogger("fcl_ray").handlers if type(h).__name__ == "_StderrHandler"]
    assert len(ours) == 1
    progress("hidden")
    get_logger("fcl_ray.x").warning("shown")
    assert [line.split(" ", 3)[-1] for line in capsys.readouterr().err.splitlines()] == ["shown"]
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        setup_logging("loud")


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], check=True)


def test_as_a_library_it_prints_nothing_and_adds_only_a_null_handler():
    """Imported (a notebook, another program), fcl-ray installs no handler of its own and
    writes no environment variable; its lines, warnings too, wait for the program's
    logging set-up (the logging HOWTO on libraries)."""
    done = _fresh_python(
        "import logging, os; before = dict(os.environ); import fcl_ray; "
        "from fcl_ray.log import get_logger, progress; "
        "progress('a progress line'); get_logger('fcl_ray.federation.driver').warning('w'); "
        "logger = logging.getLogger('fcl_ray'); "
        "print([type(h).__name__ for h in logger.handlers], logger.propagate, logger.level, "
        "dict(os.environ) == before)")
    assert done.stdout.strip() == "['NullHandler'] True 0 True" and done.stderr == ""


def test_a_programs_own_logging_receives_the_lines():
    done = _fresh_python(
        "import logging; logging.basicConfig(format='mine: %(name)s %(message)s'); "
        "logging.getLogger('fcl_ray').setLevel(logging.INFO); "
        "from fcl_ray.log import driver_level, get_logger, progress; "
        "progress('round 1/2 done'); get_logger('fcl_ray.sweep.run').debug('hidden'); "
        "print(driver_level())")
    assert done.stderr.splitlines() == ["mine: fcl_ray round 1/2 done"]
    assert done.stdout.strip() == "info"


def test_the_command_lines_set_up_writes_no_environment_and_workers_get_its_level():
    before = dict(os.environ)
    setup_logging("warning")
    assert dict(os.environ) == before
    assert driver_level() == "warning"      # what a Tune trial is handed
    setup_worker_logging("debug")           # in a trial: the driver's level, same format
    assert logging.getLogger("fcl_ray").level == logging.DEBUG
    setup_worker_logging(None)              # a level it does not know: info
    assert logging.getLogger("fcl_ray").level == logging.INFO


def test_eta_from_the_mean_step_time():
    now = [100.0]
    eta = Eta(10, clock=lambda: now[0])
    now[0] += 6.0
    assert eta.step() == "ETA 0:00:54"            # 6 s per round, 9 rounds left
    now[0] += 14.0
    assert eta.step(3) == "ETA 0:00:30"           # 20 s / 4 = 5 s per round, 6 left
    now[0] += 100.0
    assert eta.step(6) == "ETA 0:00:00"
    assert format_duration(90061.4) == "1 day, 1:01:01"


@pytest.mark.parametrize("args", [["-q", "config"], ["config", "-q"]])
def test_quiet_keeps_the_output_on_stdout(args, capsys):
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.startswith("experiment:") and err == ""
    assert logging.getLogger("fcl_ray").level == logging.WARNING


@pytest.mark.parametrize("args,level", [(["-v", "config"], logging.DEBUG),
                                        (["config", "--log-level", "ERROR"], logging.ERROR),
                                        (["config"], logging.INFO)])
def test_verbose_and_log_level(args, level, capsys):
    assert main(args) == 0
    assert logging.getLogger("fcl_ray").level == level


@pytest.mark.parametrize("args,words", [
    (["-q", "-v", "config"], "-q/--quiet and -v/--verbose"),
    (["-q", "config", "-v"], "-q/--quiet and -v/--verbose"),   # one before the command, one after
    (["config", "--verbose", "--log-level", "info"], "-v/--verbose and --log-level"),
    (["--log-level", "loud", "config"], "invalid choice: 'loud'"),
    (["run", "experiments/quickstart.yaml", "--log-level", "trace"], "invalid choice: 'trace'"),
])
def test_contradicting_or_unknown_levels_are_one_line_exit_2(args, words, capsys):
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("fcl-ray: error: ") and words in err, err


def test_rays_token_notice_becomes_one_info_line(capsys):
    """Ray's logger (no Ray needed: a logger by name) loses the notice; fcl-ray logs it once at
    info, so -q hides it. Ray's other lines pass."""
    ray_logger = logging.getLogger(RAY_AUTH_LOGGER)
    for old in list(ray_logger.filters):   # a fresh filter: it remembers what it has seen
        ray_logger.removeFilter(old)
    reached_ray = []
    handler = logging.Handler()
    handler.emit = reached_ray.append
    ray_logger.addHandler(handler)
    try:
        setup_logging("info")
        ray_notices_as_info()
        ray_notices_as_info()                # installed once
        notice = ("Token authentication is enabled for this Ray cluster. Set "
                  "RAY_AUTH_MODE=disabled to opt out.")
        ray_logger.warning(notice)
        ray_logger.warning(notice)           # a second ray.init in the same process
        ray_logger.warning("Token authentication is disabled for this Ray cluster.")
        err = capsys.readouterr().err.splitlines()
        assert [r.getMessage() for r in reached_ray] == [
            "Token authentication is disabled for this Ray cluster."]
        assert len(err) == 1 and LINE.match(err[0]) and " INFO " in err[0]
        assert err[0].endswith("Ray: " + notice)
        setup_logging("warning")             # -q
        ray_logger.removeFilter(ray_logger.filters[0])
        ray_notices_as_info()
        ray_logger.warning(notice)
        assert capsys.readouterr().err == "" and len(reached_ray) == 1
    finally:
        ray_logger.removeHandler(handler)
