"""``pretrain.health_source``: health read from the training steps' own batch (``steps``)
against a forward pass over the probe slices (``probe``), on real methods and tiny slices."""
import pytest
import torch

from fcl_ray.methods import get_method_class, registered_methods
from fcl_ray.methods.health import is_collapsed

from method_fixtures import build_method, remote_features

METHODS = [m for m in registered_methods() if get_method_class(m) is not None]
STEP_METHODS = [m for m in METHODS if get_method_class(m).health_from_steps]
GUARD = {"max_cosine": 0.99, "min_rank": 1.5}   # the config's default thresholds


def _steps(name, overrides=()):
    torch.set_num_threads(1)
    return build_method(name, overrides=["pretrain.health_source=steps", *overrides])


def _run_round(method, steps=2):
    method.train_round(steps, remote_features(method))


def test_only_fedrotation_reads_the_probe_whatever_the_source():
    assert sorted(set(METHODS) - set(STEP_METHODS)) == ["fedrotation"]


@pytest.mark.parametrize("name", STEP_METHODS)
def test_steps_on_the_probe_slices_give_the_probes_figures(name):
    """Fed the probe's own slices as its batch, ``steps`` must read exactly what the probe
    reads: the head in eval mode on the step's encoder features (the head in training mode,
    BatchNorm on batch statistics, would read other figures)."""
    method = _steps(name)
    _run_round(method)
    idx = method.probe_index
    method.net.train()
    method.embed(method.slices.images[idx], method.slices.partition[idx])
    steps, probe = method.health(), method.probe_health()
    for key in probe:
        assert steps[key] == pytest.approx(probe[key], abs=1e-4, nan_ok=True), key


@pytest.mark.parametrize("name", ["fcl", "local_cl"])
def test_steps_read_a_healthy_network_close_to_the_probe(name):
    # Batches of 4 volumes x 2 partitions: the steps read 8 augmented slices, the probe all 18.
    method = _steps(name, ["pretrain.volumes_per_batch=4"])
    _run_round(method, steps=3)
    steps, probe = method.health(), method.probe_health()
    assert len(method.step_features[1]) == 8        # the last step's batch, not the round's
    assert not is_collapsed(steps, **GUARD) and not is_collapsed(probe, **GUARD)
    assert steps["mean_cosine"] == pytest.approx(probe["mean_cosine"], abs=0.15)
    assert steps["effective_rank"] > 2 and steps["live_units"] > 0.5


@pytest.mark.parametrize("name", ["fcl", "fedsimclr"])
def test_steps_flag_a_collapsed_network(name):
    method = _steps(name)
    _run_round(method)
    assert not is_collapsed(method.health(), **GUARD)
    # Collapse only eval mode can see: a hidden layer whose running variance is huge gives
    # every slice the same hidden vector (its BatchNorm shift), hence one embedding, while
    # the step's batch statistics still spread the training-mode embeddings.
    norm = method.net.head.mlp[1]
    assert isinstance(norm, torch.nn.BatchNorm1d)
    norm.running_var.fill_(1e12)
    with torch.no_grad():
        norm.bias.uniform_(0.5, 1.0)                 # units stay alive, all constant
    steps = method.health()
    assert is_collapsed(steps, **GUARD) and is_collapsed(method.probe_health(), **GUARD)
    assert steps["mean_cosine"] > 0.999


@pytest.mark.parametrize("name", METHODS)
def test_keeping_the_step_features_changes_no_step(name):
    """``steps`` only keeps what the step computed: every weight after a round is what
    ``probe`` (today's code path) gives, bit for bit."""
    by_source = {}
    for source in ("probe", "steps"):
        method = build_method(name, overrides=[f"pretrain.health_source={source}"])
        torch.set_num_threads(1)
        _run_round(method)
        by_source[source] = method
    probe, steps = by_source["probe"], by_source["steps"]
    for key, value in probe.shared_state().items():
        assert torch.equal(value, steps.shared_state()[key]), key
    assert probe.step_features is None               # probe keeps nothing from the steps
    assert probe.health() == probe.probe_health()


def test_fedrotation_and_a_method_before_any_step_fall_back_to_the_probe():
    rotation = _steps("fedrotation")
    _run_round(rotation)
    assert rotation.step_features is None and rotation.health() == rotation.probe_health()
    fresh = _steps("fcl")
    assert fresh.step_features is None and fresh.health() == fresh.probe_health()
