"""Pre-trained encoders as MLflow models: log and register them, fine-tune from one.

Each final encoder of a run (one per pre-training method and fold, or one per client for
methods that pre-train locally) is logged with ``mlflow.pytorch`` as the U-Net encoder
(:class:`fcl_ray.methods.models.Encoder`: image batch ``(B, 1, S, S)`` -> deepest feature map), with
its signature, an input example and the run's resolved ``config.yaml``. It is saved in the
``pt2`` format (``torch.export``): loading it runs no pickled code and does not need fcl_ray.
With ``tracking.register_as`` it also becomes a new version of the registered model
``<register_as>-<method>`` (version tags: method, fold, client, features, source run).

``finetune.encoder`` names such a model by URI; :func:`load_encoder` fetches it and checks that
it fits ``model.features`` before any Ray actor starts. MLflow is imported only in here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from fcl_ray.config import Config, ConfigError
from fcl_ray.methods.models import Encoder
# One way only: tracking (the lower layer) never imports this module.
from fcl_ray.tracking import encoder_label, method_rows, redact, resolve_uri

ENCODER_FILE = re.compile(r"^(?P<method>.+)-fold(?P<fold>\d+)\.pt$")  # <output_dir>/encoders/


@dataclass
class GivenEncoder:
    """An encoder to fine-tune from, instead of pre-training (``finetune.encoder``)."""
    uri: str
    label: str                      # the method name of its result rows
    state: dict[str, np.ndarray]    # U-Net encoder parameter names -> arrays


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]


def check_fits(state: dict[str, torch.Tensor], features: list[int], uri: str,
               trained_with: Optional[list[int]] = None, key: str = "finetune.encoder") -> None:
    """Raise ConfigError (one line naming ``key`` and ``uri``) unless ``state`` is a U-Net
    encoder of widths ``features`` (the parameter names and shapes :class:`Encoder` has)."""
    expected = {k: tuple(v.shape) for k, v in Encoder(features).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or unexpected:
        raise ConfigError(f"{key} '{uri}': not a U-Net encoder of this project "
                          f"(missing {missing[:2]}, unexpected {unexpected[:2]})")
    wrong = [k for k in expected if expected[k] != got[k]]
    if wrong:
        key = wrong[0]
        was = f" (it was trained with model.features={trained_with})" if trained_with else ""
        raise ConfigError(f"{key} '{uri}': does not fit model.features="
                          f"{list(features)}{was}: {key} has shape {list(got[key])}, "
                          f"expected {list(expected[key])}")


def refuse_code(uri: str, local: str | Path, key: str = "finetune.encoder") -> None:
    """Accept only what :func:`log_encoders` writes: a ``pt2`` export and no bundled code.

    MLflow's PyTorch flavour can also hold a pickled model (loading it runs code; MLflow 3
    refuses it by default, MLflow 2 does not) or ``code_paths`` it puts on ``sys.path``;
    either would let whoever can write to the model registry run code here."""
    from mlflow.models import Model

    flavor = Model.load(str(local)).flavors.get("pytorch")
    if flavor is None:
        raise ConfigError(f"{key} '{uri}': not an MLflow PyTorch model")
    data = Path(local, flavor.get("model_data") or "data")
    if flavor.get("code") or not (data / "model.pt2").is_file() or (data / "model.pth").exists():
        raise ConfigError(f"{key} '{uri}': refused, only a 'pt2' export without "
                          f"bundled code is loaded (a pickled model or code files would run "
                          f"code here); log it with serialization_format='pt2'")


def load_encoder(cfg: Config, key: str = "finetune.encoder") -> GivenEncoder:
    """Fetch the encoder that config key ``key`` names (``finetune.encoder``, or
    ``control.encoder`` for the positive control) from the tracking server/store of ``cfg``
    and check that it fits ``model.features``; any problem is one ConfigError naming the key
    and the URI."""
    section, name = key.split(".")
    uri = getattr(getattr(cfg, section), name)
    try:
        import mlflow
        import mlflow.artifacts
        import mlflow.pytorch
    except ImportError:
        raise ConfigError(f"{key} '{uri}': loading it needs MLflow "
                          f"(pip install mlflow)") from None
    store = resolve_uri(cfg)
    mlflow.set_tracking_uri(store)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri)
        refuse_code(uri, local, key)
        model = mlflow.pytorch.load_model(local, map_location="cpu")
    except ConfigError:
        raise
    except Exception as err:   # noqa: BLE001  (MlflowException, OSError, bad archives ...)
        raise ConfigError(f"{key} '{uri}': cannot load it from {redact(store)}: "
                          f"{_first_line(err)}") from None
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"{key} '{uri}': not a PyTorch module "
                          f"({type(model).__name__})")
    state = model.state_dict()
    trained_with = None
    try:
        trained_with = (mlflow.models.get_model_info(uri).metadata or {}).get("features")
    except Exception:   # noqa: BLE001  (only makes the error message more helpful)
        pass
    check_fits(state, cfg.model.features, uri, trained_with, key)
    return GivenEncoder(uri, encoder_label(uri),
                        {k: v.detach().cpu().numpy() for k, v in state.items()})


# ----------------------------------------------------------------------------- logging
def encoder_files(out_dir: str | Path) -> list[tuple[str, int, Optional[int], dict]]:
    """(method, fold, client or None, state) of every encoder in ``<out_dir>/encoders``;
    client is set for methods that pre-train locally (one encoder per client)."""
    found = []
    for path in sorted(Path(out_dir, "encoders").glob("*.pt")):
        match = ENCODER_FILE.match(path.name)
        if match is None:
            continue
        saved = torch.load(path, map_location="cpu", weights_only=True)
        method, fold = match["method"], int(match["fold"])
        if all(re.fullmatch(r"client\d+", k) for k in saved):
            found += [(method, fold, int(k[len("client"):]), v) for k, v in saved.items()]
        else:
            found.append((method, fold, None, saved))
    return found


def log_encoders(cfg: Config, out_dir: str | Path, run_id: str,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Log every encoder of ``out_dir`` as an MLflow model of the active run (and register it
    when ``tracking.register_as`` is set). Returns one dict per model: method, fold, client,
    model_uri, and registered_model/version when registered."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    features = list(cfg.model.features)
    size = cfg.data.image_size
    example = np.random.default_rng(0).standard_normal((2, 1, size, size)).astype(np.float32)
    config_file = Path(out_dir) / "config.yaml"
    client = mlflow.MlflowClient()
    # Only this run's encoders (an output folder may keep older runs' files).
    from fcl_ray.methods import REGISTRY

    ours = {(m, f) for m in method_rows(cfg) if REGISTRY.get(m) for f in cfg.finetune.folds}
    logged = []
    for method, fold, site, state in encoder_files(out_dir):
        if (method, fold) not in ours:
            continue
        encoder = Encoder(features)
        encoder.load_state_dict(state)
        encoder.eval()
        with torch.no_grad():
            output = encoder(torch.from_numpy(example)).numpy()
        name = f"encoder-{method}-fold{fold}" + ("" if site is None else f"-client{site}")
        tags = {"method": method, "fold": str(fold), "features": str(features),
                **({} if site is None else {"client": str(site)})}
        registered = f"{cfg.tracking.register_as}-{method}" if cfg.tracking.register_as else None
        info = mlflow.pytorch.log_model(
            encoder, name=name, signature=infer_signature(example, output),
            input_example=example, serialization_format="pt2",
            # Stated, not inferred: inference re-loads the model in a subprocess (slow).
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            extra_files=[str(config_file)] if config_file.is_file() else None,
            metadata={"features": features, "image_size": size, "method": method,
                      "fold": fold, "client": site, "source_run": run_id},
            tags=tags, registered_model_name=registered)
        entry = {"method": method, "fold": fold, "client": site, "name": name,
                 "model_uri": info.model_uri}
        if registered:
            version = str(info.registered_model_version)
            for key, value in {**tags, "source_run": run_id}.items():
                client.set_model_version_tag(registered, version, key, value)
            client.update_model_version(
                registered, version, description=f"{method} encoder (fold {fold}"
                + ("" if site is None else f", client {site}") + f") of run {run_id}")
            entry |= {"registered_model": registered, "version": version}
            log(f"registered encoder {name} as models:/{registered}/{version}")
        logged.append(entry)
    return logged
