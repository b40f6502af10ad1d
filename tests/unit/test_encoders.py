"""finetune.encoder loads only a pt2 export: a pickled model or bundled code is refused."""
import pytest

from fcl_ray.config import ConfigError
from fcl_ray.encoders import refuse_code


def _model_dir(root, name, data_file, code=None):
    """The layout mlflow.pytorch.save_model writes (MLmodel + data/), without the weights."""
    folder = root / name
    (folder / "data").mkdir(parents=True)
    (folder / "data" / data_file).write_bytes(b"not read by the check")
    (folder / "MLmodel").write_text(
        "flavors:\n  pytorch:\n    model_data: data\n    pytorch_version: 2.4.0\n"
        f"    code: {code or 'null'}\n")
    return folder


def test_only_a_pt2_export_without_code_is_loaded(tmp_path):
    pytest.importorskip("mlflow")
    refuse_code("runs:/r/pt2", _model_dir(tmp_path, "pt2", "model.pt2"))   # accepted
    for name, data_file, code in [("pickled", "model.pth", None),        # pickle format
                                  ("with-code", "model.pt2", "code")]:  # code_paths
        with pytest.raises(ConfigError, match=rf"^finetune.encoder 'runs:/r/{name}': refused, "
                                              r"only a 'pt2' export without bundled code"):
            refuse_code(f"runs:/r/{name}", _model_dir(tmp_path, name, data_file, code))
