"""Property-based bad input: every config value and every corrupted data file ends in a clear
ConfigError/DataError naming the key or file, never a crash deep in torch, Ray or nibabel."""
import gzip

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fcl_ray.cli import main
from fcl_ray.config import ConfigError
from fcl_ray.config_io import flatten, load_config, to_dict
from fcl_ray.data import DataError
from fcl_ray.data.check import check_dataset

from nifti_factories import write_acdc

KEYS = sorted(flatten(to_dict(load_config(None))))
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                   st.lists(st.integers(-3, 20), max_size=4),
                   st.dictionaries(st.integers(-2, 5), st.floats(-1, 5), max_size=2))
KEY = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=10).map(lambda k: f"data.{k}"))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(KEY, VALUES), min_size=1, max_size=3))
def test_any_override_loads_or_names_the_key(pairs):
    overrides = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in pairs]
    try:
        load_config(None, overrides)
    except ConfigError as err:
        message = str(err)
        assert "config key" in message or "override" in message, message
        assert "\n" not in message


# capsys is read (and so emptied) in every example, which is what makes sharing it safe.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["pretrain.rounds", "data.clients", "finetune.n_labeled",
                        "pretrain.temperature", "data.partitions", "federation.min_clients"]),
       VALUES)
def test_cli_exits_2_with_one_line(capsys, key, value):
    code = main(["config", "--set", f"{key}={value}"])
    err = capsys.readouterr().err.strip()
    assert code in (0, 2)
    if code == 2:
        assert len(err.splitlines()) == 1 and err.startswith("fcl-ray: error: ")


CORRUPTIONS = {
    "truncate": lambda data, n: data[: n % max(len(data), 1)],
    "flip": lambda data, n: bytes(b ^ 0xFF if i % 97 == n % 97 else b for i, b in enumerate(data)),
    "garbage": lambda data, n: bytes((n * 31 + i) % 256 for i in range(64)),
    "recompress_garbage": lambda data, n: gzip.compress(bytes(range(n % 200))),
    "empty": lambda data, n: b"",
}


@pytest.fixture(scope="module")
def clean_acdc(tmp_path_factory):
    return write_acdc(tmp_path_factory.mktemp("acdc") / "acdc", n_cases=4, frames=3)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(CORRUPTIONS)), seed=st.integers(0, 10**6),
       which=st.integers(0, 10**6))
def test_a_corrupted_file_is_named_in_one_line(clean_acdc, tmp_path_factory, kind, seed, which):
    import shutil

    root = tmp_path_factory.mktemp("corrupt") / "acdc"
    shutil.copytree(clean_acdc, root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    victim = files[which % len(files)]
    victim.write_bytes(CORRUPTIONS[kind](victim.read_bytes(), seed))
    cfg = load_config(None, ["data.kind=acdc", f"data.root={root}", "data.clients=2",
                             "data.folds=2", "data.image_size=32", "data.partitions=2",
                             "data.cache=false"])
    try:
        check_dataset(cfg, out=lambda line: None)
    except DataError as err:
        message = str(err)
        assert "\n" not in message
        named = [p.name for p in files] + [p.parent.name for p in files]
        assert any(name in message for name in named), message
