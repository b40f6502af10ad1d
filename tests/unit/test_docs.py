"""The docs site (mkdocs.yml, docs/) cannot go stale quietly: every config key is listed in
docs/configuration.md with its real default and choices, every registered method on the
method page, every repository path the pages name exists, and the site builds in MkDocs'
strict mode (a broken link or anchor fails). The commands on the pages are run by
tests/integration/test_readme.py."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from fcl_ray.config import Config

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
ROW = re.compile(r"^\| `(\w+\.\w+)` \| `([^`]*)` \| (.*) \|$", re.M)


def shown(value) -> str:
    """A default as the page writes it: YAML flow style, as ``--set`` takes it."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip() \
        .removesuffix("...").strip()


def schema() -> dict[str, tuple[str, tuple]]:
    """``section.key`` -> (its default as shown, its fixed choices or ()) for every key."""
    keys = {}
    sections = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = sections[section.name]
        hints, defaults = typing.get_type_hints(cls), cls()
        for f in dataclasses.fields(cls):
            literal = typing.get_origin(hints[f.name]) is typing.Literal
            keys[f"{section.name}.{f.name}"] = (shown(getattr(defaults, f.name)),
                                               typing.get_args(hints[f.name]) if literal else ())
    return keys


def documented(text: str) -> dict[str, tuple[str, str]]:
    """``section.key`` -> (default, meaning) for every row of the page's key tables."""
    return {key: (default, meaning) for key, default, meaning in ROW.findall(text)}


def config_problems(text: str) -> list[str]:
    keys, rows = schema(), documented(text)
    problems = [f"missing: | `{k}` | `{d}` | ... |" for k, (d, _) in keys.items() if k not in rows]
    problems += [f"no such key: {k}" for k in rows if k not in keys]
    for key, (default, choices) in keys.items():
        if key in rows:
            shown_default, meaning = rows[key]
            if shown_default != default:
                problems.append(f"{key}: default `{shown_default}`, the schema says `{default}`")
            problems += [f"{key}: choice `{c}` not named" for c in choices
                         if f"`{c}`" not in meaning]
    return problems


def test_every_config_key_is_documented_with_its_default_and_choices():
    problems = config_problems((DOCS / "configuration.md").read_text())
    assert not problems, "docs/configuration.md:\n" + "\n".join(problems)


def test_the_config_check_sees_a_stale_page():
    """It can fail: a missing key, a wrong default, an unnamed choice, a key that is gone."""
    text = (DOCS / "configuration.md").read_text()
    text = text.replace("| `data.noise` | `1.0` |", "| `data.noise` | `2.0` |")
    text = re.sub(r"^\| `data\.folds` .*\n", "", text, flags=re.M)
    text = text.replace("`zscore`", "z-score")
    text += "\n| `data.gone` | `0` | removed |\n"
    problems = "\n".join(config_problems(text))
    for expected in ("data.noise: default `2.0`", "missing: | `data.folds` | `4`",
                     "data.normalise: choice `zscore`", "no such key: data.gone"):
        assert expected in problems, problems


def test_every_registered_method_is_on_the_method_page():
    from fcl_ray.methods import REGISTRY

    text = (DOCS / "method.md").read_text()
    assert not [m for m in REGISTRY if f"| `{m}` |" not in text]


# Paths in backticks that start with a top-level folder of the repository (outputs aside).
PATH = re.compile(r"`((?:fcl_ray|experiments|benchmarks|cluster|tests|docs|examples)/[^`\s]*)`")


def test_every_repository_path_the_pages_name_exists():
    missing = []
    for page in PAGES:
        for path in PATH.findall(page.read_text()):
            path = path.split("::")[0]
            found = list(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()
            if not found and "<" not in path:
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, missing


def _build(config: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="the docs extra is not installed (mkdocs-material)")
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}   # the theme's end-of-life banner
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(config), "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, env=env, timeout=300)


def test_the_site_builds_in_strict_mode(tmp_path):
    done = _build(ROOT / "mkdocs.yml", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING" not in done.stderr, done.stderr[-3000:]
    assert (tmp_path / "site" / "extending" / "index.html").is_file()


def test_the_strict_build_fails_on_a_broken_anchor(tmp_path):
    """It can fail: the same site with one link to an anchor that is not there."""
    copy = tmp_path / "copy"
    shutil.copytree(DOCS, copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    with open(copy / "docs" / "index.md", "a") as page:
        page.write("\n[a section that is gone](method.md#no-such-section)\n")
    done = _build(copy / "mkdocs.yml", tmp_path)
    assert done.returncode != 0 and "no-such-section" in done.stderr, done.stderr[-3000:]
