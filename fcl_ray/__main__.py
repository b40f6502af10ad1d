"""``python -m fcl_ray`` = the ``fcl-ray`` command (works from a source checkout)."""
import sys

from fcl_ray.cli import main

sys.exit(main())
