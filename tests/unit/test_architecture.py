"""The layout's promise, checked: Ray is imported only where the federation meets it."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fcl_ray"
RAY_ALLOWED = ("federation", "sweep")          # the Ray boundary
RAY_FREE_INSIDE = {"sweep/spec.py",            # sweep files read without a cluster
                   "federation/checkpoint.py"}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _imports_ray(path: Path) -> bool:
    return any(name == "ray" or name.startswith("ray.") for name in _imported_modules(path))


def test_ray_is_imported_only_in_federation_and_sweep():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        inside = relative.split("/")[0] in RAY_ALLOWED and relative not in RAY_FREE_INSIDE
        if _imports_ray(path) and not inside:
            offenders.append(relative)
    assert not offenders, f"`import ray` outside federation/ and sweep/: {offenders}"


def test_flower_is_imported_only_in_its_runtime():
    """flwr is an optional extra: the Flower runtime (fcl_ray/flower/) is its only importer,
    so the Ray install never needs it (cli.py reaches the runtime lazily, through it)."""
    offenders = [path.relative_to(PACKAGE).as_posix() for path in sorted(PACKAGE.rglob("*.py"))
                 if not path.relative_to(PACKAGE).as_posix().startswith("flower/")
                 and any(n == "flwr" or n.startswith("flwr.") for n in _imported_modules(path))]
    assert not offenders, f"`import flwr` outside fcl_ray/flower/: {offenders}"


def test_the_pure_layers_do_not_import_the_federation():
    """methods/ and data/ are plain PyTorch/numpy: usable and testable without Ray."""
    offenders = []
    for layer in ("methods", "data"):
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            bad = [m for m in _imported_modules(path)
                   if m.startswith(("fcl_ray.federation", "fcl_ray.sweep"))]
            if bad:
                offenders.append(f"{path.relative_to(PACKAGE)} imports {bad}")
    assert not offenders, offenders


# The runtime-free core (strategy, events, metric names, early stopping, participation) and
# the wire protocol: every runtime (Ray today, Flower next) builds on them, so they may import
# no runtime, no MLflow and nothing of a runtime's package, not even inside a function; the
# core, read by the coordinator, not torch or MONAI either (protocol/weights.py is the sites'
# flat-weight code and needs torch).
RUNTIME_FREE = {"core": ("ray", "flwr", "mlflow", "fcl_ray.federation", "fcl_ray.sweep",
                         "fcl_ray.flower", "torch", "monai"),
                "protocol": ("ray", "flwr", "mlflow", "fcl_ray.federation", "fcl_ray.sweep",
                             "fcl_ray.flower", "fcl_ray.core")}


def _forbidden(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    """The modules ``path`` imports that are, or lie under, one of ``prefixes``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found.update(n for n in names for p in prefixes if n == p or n.startswith(p + "."))
    return sorted(found)


def test_the_core_and_the_protocol_import_no_runtime():
    offenders = {}
    for package, banned in RUNTIME_FREE.items():
        files = sorted((PACKAGE / package).rglob("*.py"))
        assert files, f"fcl_ray/{package}/ is gone"
        for path in files:
            bad = _forbidden(path, banned)
            if bad:
                offenders[str(path.relative_to(PACKAGE))] = bad
    assert not offenders, offenders


def test_the_runtime_check_sees_a_lazy_or_from_import(tmp_path):
    sample = tmp_path / "sample.py"
    for text in ("def f():\n    import flwr.server\n", "from fcl_ray import federation\n",
                 "from fcl_ray.federation.cluster import gather\n", "import mlflow\n"):
        sample.write_text(text)
        assert _forbidden(sample, RUNTIME_FREE["core"]), text
    sample.write_text("import rays_of_light\nfrom fcl_ray.config import Config\n")
    assert not _forbidden(sample, RUNTIME_FREE["core"])


def test_importing_the_core_loads_no_runtime_torch_or_mlflow():
    import subprocess
    import sys

    heavy = {"ray", "flwr", "torch", "monai", "mlflow"}
    code = ("import sys, fcl_ray.core.strategy, fcl_ray.core.events, fcl_ray.core.metrics, "
            "fcl_ray.protocol.messages, fcl_ray.protocol.aggregation; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(heavy)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=True).stdout.strip()
    assert out == "[]", f"importing the core loads {out}"


def test_the_boundary_check_sees_a_ray_import(tmp_path):
    """The check itself can fail (a file that imports Ray is detected)."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from ray.util import placement_group\n")
    assert _imports_ray(sample)
    sample.write_text("import rays_of_light\n")
    assert not _imports_ray(sample)


def test_the_coordinator_imports_neither_torch_nor_monai():
    """It only averages NumPy vectors: neither its module nor the client actors' module
    (which Ray imports wherever a client handle is unpickled, the coordinator included) may
    pay for torch or MONAI (seconds of CPU and ~500 MB at start-up). The bench checks the
    running coordinator too (tests/integration/test_bench.py)."""
    import subprocess
    import sys

    code = ("import sys, fcl_ray.federation.coordinator, fcl_ray.federation.actors; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'monai'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=True).stdout.strip()
    assert out == "[]", f"importing the coordinator loads {out}"



def _imports_module(path: Path, module: str) -> bool:
    """Does ``path`` import ``module`` anywhere (top level or inside a function), as
    ``import a.b``, ``from a.b import x`` or ``from a import b``?"""
    package, _, name = module.rpartition(".")
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import) and any(a.name == module for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (
                node.module == module
                or (node.module == package and any(a.name == name for a in node.names))):
            return True
    return False


def test_encoders_and_tracking_import_each_other_one_way_only():
    """encoders (the encoder as an MLflow model) builds on tracking (the MLflow run), never
    the reverse, not even inside a function: they were an import circle."""
    assert _imports_module(PACKAGE / "encoders.py", "fcl_ray.tracking")
    assert not _imports_module(PACKAGE / "tracking.py", "fcl_ray.encoders")


def test_the_one_way_check_sees_a_lazy_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from fcl_ray import encoders\n")
    assert _imports_module(sample, "fcl_ray.encoders")
    sample.write_text("def f():\n    from fcl_ray.encoders import encoder_label\n")
    assert _imports_module(sample, "fcl_ray.encoders")
    sample.write_text("from fcl_ray import tracking\n")
    assert not _imports_module(sample, "fcl_ray.encoders")


# The pure modules under the report and the run: plain Python/pandas/NumPy, importable and
# testable without Ray, plotting or an MLflow store, and below the modules built on them.
PURE_MODULES = {"config.py": "the configuration schema and its checks",
                "statistics.py": "the paired statistics of a results set"}
NOT_IN_PURE = ("ray", "matplotlib", "mlflow")
ONE_WAY = [("config_io.py", "fcl_ray.config"),        # (module, what it builds on)
           ("results.py", "fcl_ray.config"),
           ("statistics.py", "fcl_ray.results"),
           ("report.py", "fcl_ray.statistics"),
           ("report.py", "fcl_ray.results")]


def test_the_schema_and_the_statistics_import_no_ray_plotting_or_mlflow():
    """Not even inside a function (the Ray check above allows none outside federation/ and
    sweep/; these two may not pay for plotting or MLflow either)."""
    offenders = {}
    for name in PURE_MODULES:
        bad = sorted(m for m in _imported_modules(PACKAGE / name)
                     if m.split(".")[0] in NOT_IN_PURE)
        if bad:
            offenders[name] = bad
    assert not offenders, offenders


def test_the_lower_modules_never_import_the_ones_built_on_them():
    """config (schema) <- config_io (YAML, overrides, dicts); config <- results (reading) <-
    statistics <- report (tables, plots): one way, not even inside a function."""
    for module, below in ONE_WAY:
        assert _imports_module(PACKAGE / module, below), f"{module} no longer uses {below}"
        above = "fcl_ray." + module.removesuffix(".py")
        assert not _imports_module(PACKAGE / f"{below.split('.')[-1]}.py", above), \
            f"{below} imports {above}"


def test_importing_the_schema_and_the_statistics_loads_no_ray_torch_or_plotting():
    import subprocess
    import sys

    heavy = {"ray", "torch", "monai", "matplotlib", "mlflow", "yaml"}
    code = ("import sys, fcl_ray.config, fcl_ray.statistics; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(heavy)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=True).stdout.strip()
    assert out == "[]", f"importing the config schema and the statistics loads {out}"


def _switches_backend_or_uses_pyplot(path: Path) -> list[str]:
    """``matplotlib.use(...)`` calls and ``pyplot`` imports in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "use" and isinstance(node.func.value, ast.Name) \
                and node.func.value.id == "matplotlib":
            found.append(f"matplotlib.use at line {node.lineno}")
    found += [m for m in _imported_modules(path) if m == "matplotlib.pyplot"]
    return found


def test_plots_use_matplotlibs_object_api_and_leave_the_backend_alone(tmp_path):
    """No backend switch (it closes a notebook's figures and turns its inline plots off) and
    no pyplot (its global figure state) anywhere in the package; experiments/ and benchmarks/
    scripts may keep theirs."""
    offenders = {str(p.relative_to(PACKAGE)): found for p in sorted(PACKAGE.rglob("*.py"))
                 if (found := _switches_backend_or_uses_pyplot(p))}
    assert not offenders, offenders
    sample = tmp_path / "sample.py"
    sample.write_text("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n")
    assert len(_switches_backend_or_uses_pyplot(sample)) == 2   # the check can fail
    import subprocess
    import sys

    # And at run time: a plot written with another backend chosen keeps that backend.
    code = ("import sys, matplotlib; matplotlib.use('svg'); import pandas as pd; "
            "from fcl_ray.report import plot_dice_vs_n; "
            "rows = [dict(method=m, finetune_mode='local', n_labeled=n, fold=0, client=c, "
            "dice_mean=0.5 + 0.1 * n + 0.01 * c) for m in ('fcl', 'random') for n in (1, 2) "
            "for c in (0, 1)]; "
            f"plot_dice_vs_n(pd.DataFrame(rows), {str(tmp_path / 'p.png')!r}); "
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=True).stdout.strip()
    assert out == "svg False" and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
