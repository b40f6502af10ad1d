"""Property-based bad config values (issue 29): for every key of the schema, enumerated from
the Config dataclasses, generated values of the wrong type, out of range, non-finite and huge
are either accepted (and then every number of the config is finite and in its range) or
refused with one ConfigError line that names the key. Through the pure loader (no Ray)."""
import dataclasses
import math
import typing

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fcl_ray.config import RANGES, Config, ConfigError, numbers_in
from fcl_ray.config_io import load_config, to_dict


def schema_keys() -> dict[str, typing.Any]:
    """``{'pretrain.lr': float, ...}``: every key of the two-level schema, with its type."""
    keys = {}
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        for name, tp in typing.get_type_hints(cls).items():
            keys[f"{section.name}.{name}"] = tp
    return keys


def _mentions_number(tp) -> bool:
    return tp in (int, float) or any(_mentions_number(a) for a in typing.get_args(tp))


KEYS = schema_keys()
NUMERIC = sorted(k for k, tp in KEYS.items() if _mentions_number(tp))


def test_every_numeric_key_has_a_range_and_no_range_is_stale():
    assert sorted(RANGES) == NUMERIC


NUMBERS = st.one_of(
    st.integers(-10**30, 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2, 16, 2**31, 2**32, 2**63, 10**100, -0.0, 0.5, 1.0, 1e308,
                     5e-324, float("inf"), float("-inf"), float("nan")]),
)
SCALARS = st.one_of(NUMBERS, st.booleans(), st.none(), st.text(max_size=8),
                    st.sampled_from(["auto", "fcl", "1", "inf", "", "local", "models:/m/1"]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4),
                   st.dictionaries(st.one_of(st.integers(-3, 5), st.text(max_size=4)),
                                   SCALARS, max_size=3),
                   st.lists(st.dictionaries(st.text(max_size=3), NUMBERS, max_size=2),
                            max_size=3))


def _in_range(value, r) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False
    low = r.low is None or (value > r.low if r.low_open else value >= r.low)
    high = r.high is None or (value < r.high if r.high_open else value <= r.high)
    return low and high


def _check_outcome(tree: dict, keys: list[str]) -> None:
    try:
        cfg = load_config(tree)
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message and "Traceback" not in message, message
        # Names the key (or, for a cross-key rule, the key is among those it names).
        assert any(k in message for k in keys), (keys, message)
        event("refused")
        return
    event("accepted")
    flat = {f"{s}.{k}": v for s, section in to_dict(cfg).items() for k, v in section.items()}
    # Independent of RANGES: nothing non-finite or astronomically large gets through.
    assert all(abs(v) < 2**33 for v in numbers_in(flat) if v == v), flat
    for key, r in RANGES.items():
        assert all(_in_range(v, r) for v in numbers_in(flat[key])), (key, flat[key])


@settings(max_examples=1000, deadline=None)
@given(key=st.sampled_from(sorted(KEYS)), value=VALUES)
def test_any_value_of_any_key_is_accepted_or_refused_naming_the_key(key, value):
    section, name = key.split(".")
    _check_outcome({section: {name: value}}, [key])


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(NUMERIC), value=NUMBERS)
def test_any_number_of_a_numeric_key_is_in_range_or_refused(key, value):
    section, name = key.split(".")
    # A list key gets the number as its one item; a mapping key as the value of item 0.
    tp = KEYS[key]
    origin = typing.get_origin(tp)
    wrapped = [value] if origin is list and key != "federation.client_resources" else \
        [{"a": value}] if origin is list else {0: value} if origin is dict else value
    _check_outcome({section: {name: wrapped}}, [key])


@pytest.mark.parametrize("override, message", [
    ("pretrain.lr=.inf", "'pretrain.lr': must be finite (> 0), got inf"),
    ("finetune.lr=-0.001", "'finetune.lr': must be > 0, got -0.001"),
    ("experiment.seed=-1", "'experiment.seed': must be >= 0, got -1"),
    ("model.projection_dim=0", "'model.projection_dim': must be at least 1, got 0"),
    ("data.image_size=4096", "'data.image_size': must be at most 1024 (cardiac MRI slices"),
    ("data.noise=.inf", "'data.noise': must be finite (>= 0), got inf"),
    ("federation.num_cpus_per_client=100000", "'federation.num_cpus_per_client': must be at "
                                              "most 1024 (more CPUs than any machine has"),
    ("finetune.n_labeled=[]", "'finetune.n_labeled': must not be empty"),
    ("finetune.folds=[0,0]", "'finetune.folds': names 0 twice"),
    ("tracking.uri=foo://x", "'tracking.uri': 'foo://x' has an unknown scheme 'foo:'"),
    ("experiment.output_dir=''", "'experiment.output_dir': must not be empty"),
])
def test_the_values_of_the_issue_are_refused(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_converge_with_an_empty_label_budget_is_one_line():
    with pytest.raises(ConfigError, match=r"^config key 'finetune.n_labeled': must not be empty$"):
        load_config(None, ["finetune.budget=converge", "finetune.n_labeled=[]"])
