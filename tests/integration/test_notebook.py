"""examples/quickstart.ipynb is executed: its own Jupyter kernel runs the quickstart at the
test suite's tiny size through the Python API and shows the table and the plot inline."""
import ast
from pathlib import Path

import pytest

import fcl_ray
from conftest import TINY

pytestmark = pytest.mark.integration

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"


def _tiny_overrides_in(notebook) -> list[str]:
    """The notebook's ``TINY_OVERRIDES = [...]``."""
    for cell in notebook.cells:
        if cell.cell_type != "code" or cell.source.startswith("%"):   # IPython magics
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Assign) and \
                    getattr(node.targets[0], "id", "") == "TINY_OVERRIDES":
                return ast.literal_eval(node.value)
    raise AssertionError("the notebook defines no TINY_OVERRIDES")


def test_quickstart_notebook_runs_and_shows_the_table_and_the_plot(monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert _tiny_overrides_in(notebook) == TINY      # the suite's tiny size, kept in step
    # The kernel starts its own local Ray, never one another process left running here.
    monkeypatch.setenv("RAY_ADDRESS", "local")
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    results = [o.data for o in outputs if o.output_type == "execute_result"]
    assert results[0]["text/plain"] == repr(fcl_ray.__version__)
    summary = results[1]
    assert "text/html" in summary and "dice_mean" in summary["text/html"]
    assert "### local fine-tuning" in results[3]["text/markdown"]
    assert "image/png" in results[4]                  # the plot, inline
    logged = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "setting 1/" in logged                     # the progress lines reached the notebook
