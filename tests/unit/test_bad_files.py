"""Property-based broken files (issue 29): for each reader of the platform, generated files
(bytes, wrong types, wrong shapes, non-finite values) are either read or refused with one
line that names the file, an FclRayError (ConfigError, DataError, CheckpointError), never
another exception and never a hang (pytest-timeout). Through the readers themselves: no Ray.
"""
import io
import json

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fcl_ray.config import Config, DataConfig
from fcl_ray.config_io import load_config
from fcl_ray.errors import FclRayError

pytestmark = pytest.mark.timeout(300)
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# JSON/YAML-like trees: what a hand-edited file can hold.
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10))
TREES = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
YAML_TREES = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-2, 3), st.none()), inner,
                    max_size=4)), max_leaves=12)
BYTES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8")),
    st.text(max_size=60).map(lambda t: t.encode("utf-16")),
    st.text(max_size=60).map(lambda t: ("\ufeff" + t).encode("utf-8")),
)


def _yaml(tree) -> bytes:
    return yaml.safe_dump(tree, allow_unicode=True).encode("utf-8")


def _outcome(read, path, *names: str):
    """Run ``read()``; a refusal must be one FclRayError line naming one of ``names`` (the
    file's name by default). Returns what was read, or None when refused."""
    try:
        value = read()
    except FclRayError as err:
        message = str(err)
        assert "\n" not in message, message
        assert any(n in message for n in (names or (path.name,))), message
        event("refused")
        return None
    event("read")
    return value


def _sections_with(tree):
    """A config-shaped tree: a generated value under a real section (or the tree itself)."""
    return st.sampled_from(["data", "pretrain", "finetune", "federation", None]).map(
        lambda section: {section: tree} if section else tree)


# ----------------------------------------------------------------------------- configs
@FAST
@given(data=st.one_of(BYTES, YAML_TREES.flatmap(_sections_with).map(_yaml)))
def test_a_config_file_is_read_or_refused_naming_it_or_its_key(tmp_path, data):
    path = tmp_path / "experiment.yaml"
    path.write_bytes(data)
    cfg = _outcome(lambda: load_config(path), path, path.name, "config key")
    assert cfg is None or isinstance(cfg, Config)   # read: a whole, validated Config


def test_a_billion_laughs_config_is_refused_not_expanded(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{n}: &{n} [{', '.join(['*' + p] * 9)}]" for p, n in zip("abcdefg", "bcdefgh")]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines + ["pretrain:", "  methods: *h"]) + "\n")   # 9^8 values
    with pytest.raises(FclRayError, match=r"laughs.yaml': more than 100000 values once its "
                                          r"YAML aliases are expanded$"):
        load_config(path)


@FAST
@given(data=st.one_of(BYTES, st.fixed_dictionaries(
    {"name": st.one_of(st.just("s"), LEAVES)},
    optional={"search_space": st.one_of(YAML_TREES, st.dictionaries(
        st.sampled_from(["pretrain.lr", "data.clients", "bogus"]),
        st.dictionaries(st.sampled_from(["choice", "grid", "uniform", "loguniform"]),
                        st.one_of(st.lists(LEAVES, max_size=3), LEAVES), max_size=1),
        max_size=2)),
        "search": YAML_TREES, "scheduler": YAML_TREES, "resources": YAML_TREES,
        "num_samples": LEAVES, "tracking": YAML_TREES, "overrides": YAML_TREES,
        "storage_path": LEAVES}).map(_yaml)))
def test_a_sweep_file_is_read_or_refused_naming_it_or_its_key(tmp_path, data):
    from fcl_ray.sweep.spec import SweepSpec, load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_bytes(data)
    spec = _outcome(lambda: load_sweep(path), path, path.name, "sweep key", "config key")
    assert spec is None or isinstance(spec, SweepSpec)


# ----------------------------------------------------------------------------- datasets
ENTRY = st.one_of(TREES, st.fixed_dictionaries({"image": LEAVES, "label": LEAVES}))
DATASET_JSON = st.one_of(
    BYTES,
    st.fixed_dictionaries({"labels": st.one_of(TREES, st.dictionaries(
        st.text(max_size=6), st.one_of(LEAVES, st.text(max_size=4)), max_size=4)),
        "training": st.one_of(TREES, st.lists(ENTRY, max_size=3))}).map(
        lambda spec: json.dumps(spec).encode("utf-8")))


@FAST
@given(data=DATASET_JSON, classes=st.lists(st.sampled_from(["1", "²", "left atrium", "0"]),
                                           max_size=2))
def test_a_dataset_json_is_read_or_refused_naming_it(tmp_path_factory, data, classes):
    from fcl_ray.data.readers import decathlon

    root = tmp_path_factory.mktemp("decathlon")
    (root / "dataset.json").write_bytes(data)
    d = DataConfig(kind="decathlon", root=str(root), classes=classes)
    listed = _outcome(lambda: decathlon.list_cases(root, d), root / "dataset.json")
    for problem in (listed or ([], []))[1]:   # per-entry problems: the same one-line rule
        assert "\n" not in str(problem) and "dataset.json" in str(problem), problem


FRAME_TEXT = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(str),
                       st.integers(-10**6, 10**20).map(str), st.text(max_size=8),
                       st.sampled_from(["inf", "nan", "1.5", "-3", "0", "1e300", ""]))


@FAST
@given(ed=FRAME_TEXT, es=FRAME_TEXT, tail=BYTES)
def test_an_acdc_info_cfg_is_read_or_refused_naming_it(tmp_path_factory, ed, es, tail):
    from fcl_ray.data.readers import acdc

    root = tmp_path_factory.mktemp("acdc")
    (root / "patient001").mkdir()
    info = root / "patient001" / "Info.cfg"
    info.write_bytes(f"ED: {ed}\nES: {es}\n".encode("utf-8", "surrogatepass") + tail)
    cases, problems = acdc.list_cases(root, DataConfig(kind="acdc", root=str(root)))
    assert not cases   # no frame files exist: a case is never listed, always explained
    (problem,) = problems
    assert isinstance(problem, FclRayError) and "\n" not in str(problem)
    assert "Info.cfg" in str(problem), problem


@FAST
@given(data=st.one_of(BYTES, st.lists(st.lists(FRAME_TEXT, max_size=7), max_size=4).map(
    lambda rows: "\n".join(["External code,Vendor,Centre,ED,ES"]
                           + [",".join(r) for r in rows]).encode("utf-8", "surrogatepass"))))
def test_an_mnms_metadata_csv_is_read_or_refused_naming_it(tmp_path, data):
    from fcl_ray.data.readers import mnms

    path = tmp_path / "metadata.csv"
    path.write_bytes(data)
    rows = _outcome(lambda: mnms.read_metadata(path), path)
    for code, row in (rows or {}).items():   # every row read has every column, as text
        assert all(isinstance(row.get(c), str) for c in mnms.COLUMNS), row
        _outcome(lambda: mnms._frame(row, "ED", path, code), path)


AFFINE_VALUES = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 1e-20, 1e300]),
                          st.floats(allow_nan=True, allow_infinity=True, width=32))


@FAST
@given(affine=st.lists(AFFINE_VALUES, min_size=12, max_size=12),
       shape=st.tuples(*[st.integers(1, 6)] * 3), offset=st.integers(0, 347),
       garbage=st.binary(max_size=8))
def test_a_nifti_header_is_read_or_refused_naming_it(tmp_path, affine, shape, offset, garbage):
    import nibabel as nib

    from fcl_ray.data.readers.common import read_nifti

    matrix = np.eye(4)
    matrix[:3, :] = np.asarray(affine, dtype=np.float64).reshape(3, 4)
    image = nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.float32).reshape(shape), None)
    image.header.set_sform(matrix, code=1)   # written as the file says, finite or not
    image.header.set_qform(None, code=0)
    path = tmp_path / "frame.nii"
    raw = bytearray(image.to_bytes())
    raw[offset:offset + len(garbage)] = garbage[:348 - offset]   # corrupt the header
    path.write_bytes(bytes(raw))
    read = _outcome(lambda: read_nifti(path, 3), path)
    if read is not None:   # what is read is usable: finite voxels, an invertible affine
        data, aff = read
        assert np.isfinite(data).all() and np.isfinite(aff).all()
        assert abs(np.linalg.det(aff[:3, :3])) > 0


# ----------------------------------------------------------------------------- checkpoints
POINTERS = st.one_of(BYTES, TREES.map(lambda t: json.dumps(t).encode()),
                     st.dictionaries(st.just("round"), LEAVES, min_size=1).map(
                         lambda t: json.dumps(t).encode()))


@FAST
@given(data=POINTERS)
def test_a_latest_pointer_is_read_or_refused_naming_it(tmp_path_factory, data):
    from fcl_ray.federation.checkpoint import CheckpointStore, check_resumable

    root = tmp_path_factory.mktemp("checkpoints")
    (root / "fcl-fold0").mkdir()
    (root / "fcl-fold0" / "LATEST").write_bytes(data)
    round_index = _outcome(lambda: CheckpointStore(str(root)).latest("fcl-fold0"),
                           root, "LATEST")
    if round_index is not None:
        assert isinstance(round_index, int) and round_index >= 0
    # Before a resume starts Ray: the same pointer, and the round it names must exist.
    _outcome(lambda: check_resumable(str(root)), root, "LATEST")


@FAST
@given(data=st.one_of(BYTES, st.binary(min_size=200, max_size=2000)),
       truncate=st.integers(0, 4000))
def test_a_checkpoint_file_is_read_or_refused_naming_it(tmp_path_factory, data, truncate):
    import torch

    from fcl_ray.federation.checkpoint import CheckpointStore

    store = CheckpointStore(str(tmp_path_factory.mktemp("store")))
    good = io.BytesIO()
    torch.save({"round": 1, "w": torch.zeros(3)}, good)
    arrays = io.BytesIO()
    np.savez(arrays, round=np.array(1))
    for name, content in (("client-0.pt", data), ("cut.pt", good.getvalue()[:truncate]),
                          ("coordinator.npz", data), ("cut.npz", arrays.getvalue()[:truncate])):
        path = f"{store.root}/{name}"
        store.write_bytes(path, content)
        load = store.load if name.endswith(".pt") else store.load_arrays
        _outcome(lambda: load(path), None, name)
    _outcome(lambda: store.load(f"{store.root}/missing.pt"), None, "missing.pt")


# ----------------------------------------------------------------------------- results
RESULTS_HEADER = ["method", "finetune_mode", "n_labeled", "fold", "client", "dice_mean",
                  "dice_rv", "seed"]
CELLS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                  st.integers(-10**20, 10**20).map(str), st.text(max_size=6),
                  st.sampled_from(["7.5", "-0.1", "inf", "", "fcl", "1e400", "0.5"]))


@FAST
@given(column=st.sampled_from(RESULTS_HEADER), cell=CELLS, raw=st.one_of(st.none(), BYTES))
def test_a_results_csv_is_read_or_refused_naming_it(tmp_path, column, cell, raw):
    import csv

    from fcl_ray.results import read_results_csv

    path = tmp_path / "results.csv"
    if raw is not None:
        path.write_bytes(raw)
    else:
        row = {"method": "fcl", "finetune_mode": "local", "n_labeled": "1", "fold": "0",
               "client": "0", "dice_mean": "0.8", "dice_rv": "0.7", "seed": "0", column: cell}
        with open(path, "w", newline="", encoding="utf-8", errors="surrogatepass") as fh:
            writer = csv.DictWriter(fh, RESULTS_HEADER)
            writer.writeheader()
            writer.writerow(row)
    frame = _outcome(lambda: read_results_csv(path), path)
    if frame is not None:   # what is read is usable: Dice numbers in [0, 1]
        for name in ("dice_mean", "dice_rv"):
            values = frame[name].dropna()
            assert values.between(0, 1).all(), frame
