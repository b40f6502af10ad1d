"""experiments/probe_ablations.py: a variant's probes paired with the baseline's by client."""
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from fcl_ray.methods.probes import PROBES

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("probe_ablations",
                                              ROOT / "experiments" / "probe_ablations.py")
ablations = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablations)


def _probes(path: Path, shift: float, clients=range(6)) -> str:
    """value = 0.3 + 0.05 * client + shift for every probe (plus random-init rows)."""
    rows = [{"method": method, "fold": 0, "client": c, "probe": p,
             "value": 0.3 + 0.05 * c + (shift if method == "fcl" else 0.0)}
            for method in ("random", "fcl") for c in clients for p in PROBES]
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_a_variant_that_gains_at_every_client_has_the_floor_p(tmp_path, capsys):
    base = _probes(tmp_path / "base.csv", 0.0)
    up = _probes(tmp_path / "up.csv", 0.1)
    same = _probes(tmp_path / "same.csv", 0.0)
    assert ablations.main(["--baseline", base, f"up={up}", f"same={same}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| variant | " + " | ".join(PROBES) + " |"
    assert lines[2].startswith("| baseline | 0.425 |")
    assert "0.525 (+0.100 [+0.100, +0.100], p 0.031)" in lines[3]   # 2 / 2^6
    assert "0.425 (+0.000 [+0.000, +0.000], p 1)" in lines[4]


def test_other_clients_or_a_missing_method_are_refused(tmp_path):
    base = _probes(tmp_path / "base.csv", 0.0)
    fewer = _probes(tmp_path / "fewer.csv", 0.0, clients=range(4))
    with pytest.raises(SystemExit, match="are not the baseline's"):
        ablations.main(["--baseline", base, f"fewer={fewer}"])
    with pytest.raises(SystemExit, match="no probe rows of method 'local_cl'"):
        ablations.main(["--baseline", base, "--method", "local_cl", f"x={base}"])
    assert ablations.main(["--baseline", base, "nameless"]) == 2
