"""The two ways a run ends early that callers handle, in a module with no dependencies
(``import fcl_ray`` and the command line read it before anything heavy is loaded).

- :class:`FclRayError`: bad input (a config key, a dataset, a results file, an output
  folder). Its message is one line that names what is wrong and what is allowed; the
  command line prints it and exits with code 2, the Python API raises it.
  :class:`~fcl_ray.config.ConfigError` and :class:`~fcl_ray.data.DataError` are its kinds.
- :class:`RunInterrupted`: SIGTERM or SIGINT reached the driver during a run.
"""
from __future__ import annotations

import signal


class FclRayError(ValueError):
    """Bad input; the message is the one line ``fcl-ray`` prints after ``fcl-ray: error:``."""

    def __init__(self, message: str):
        # Always one line, even when the offending key, value or file name holds line breaks.
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


class RunInterrupted(BaseException):
    """SIGTERM or SIGINT reached the driver. A BaseException (like KeyboardInterrupt), so no
    ``except Exception`` on the way swallows it and every ``finally`` still runs."""

    def __init__(self, signum: int, output_dir: str):
        self.signum = signum
        self.exit_code = 128 + signum      # 130 for SIGINT, 143 for SIGTERM, as shells report
        super().__init__(f"stopped by {signal.Signals(signum).name}; finished results and the "
                         f"last checkpoint are kept in {output_dir}; rerun the same command "
                         f"with --resume to continue")
