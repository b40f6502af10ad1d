"""Results are never silently mixed or replaced: the resume rule (which config keys may change)
and --overwrite's move-aside, on real folders; no Ray (the checks run before it starts)."""
from pathlib import Path

import pytest

from fcl_ray.cli import main
from fcl_ray.config import ConfigError
from fcl_ray.config_io import dump_yaml, load_config
from fcl_ray.output_dir import (RUN_FILES, check_resume, config_differences, has_results,
                                may_change_on_resume, move_aside, prepare_output_dir)

QUICKSTART = str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml")


def _cfg(out: Path, *overrides: str):
    return load_config(QUICKSTART, [f"experiment.output_dir={out}", *overrides])


def _finished(out: Path, *overrides: str) -> dict[str, bytes]:
    """A folder as a finished run leaves it (config.yaml of ``overrides``, one results row,
    a checkpoint); returns its files' bytes."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_yaml(_cfg(out, *overrides)))
    (out / "results.csv").write_text("method,finetune_mode,n_labeled,fold,client,dice_mean\n"
                                     "fcl,local,1,0,0,0.5\n")
    (out / "rounds.jsonl").write_text('{"round": 1}\n')
    (out / "checkpoints" / "fcl-fold0" / "round-0001").mkdir(parents=True)
    (out / "checkpoints" / "fcl-fold0" / "round-0001" / "coordinator.npz").write_bytes(b"")
    (out / "checkpoints" / "fcl-fold0" / "LATEST").write_text('{"round": 1}')
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize("key", ["finetune.n_labeled", "pretrain.rounds", "experiment.seed",
                                 "finetune.concurrency", "federation.round_timeout_s",
                                 "federation.max_restarts", "federation.round_retries",
                                 "federation.num_cpus_per_client", "faults.delay_seconds",
                                 "probes.enabled", "data.skip_bad_cases"])
def test_keys_that_can_change_results_are_refused(key):
    assert not may_change_on_resume(key)


@pytest.mark.parametrize("key", ["tracking.uri", "tracking.enabled", "tracking.register_as",
                                 "experiment.name", "experiment.output_dir",
                                 "federation.address", "federation.placement_timeout_s",
                                 "federation.checkpoint_every", "federation.checkpoint_dir",
                                 "data.cache", "data.cache_dir"])
def test_keys_that_cannot_change_results_may_change(key):
    assert may_change_on_resume(key)


def test_differences_name_the_keys_in_schema_order_and_skip_the_harmless(tmp_path):
    saved = _cfg(tmp_path, "finetune.n_labeled=[1]", "pretrain.rounds=10")
    new = _cfg(tmp_path / "moved", "finetune.n_labeled=[2]", "pretrain.rounds=3",
               "tracking.enabled=false", "federation.address=auto", "experiment.name=other")
    assert config_differences(saved, new) == [("pretrain.rounds", 10, 3),
                                              ("finetune.n_labeled", [1], [2])]
    assert config_differences(saved, saved) == []


def test_a_count_and_a_fraction_differ(tmp_path):
    # federation.clients_per_round: 1 is one client, 1.0 is all of them.
    one = _cfg(tmp_path, "federation.clients_per_round=1")
    assert [d[0] for d in config_differences(one, _cfg(tmp_path, "federation.clients_per_round=1.0"))] \
        == ["federation.clients_per_round"]


def test_resume_with_another_config_is_one_line_naming_the_keys(tmp_path):
    out = tmp_path / "out"
    before = _finished(out, "finetune.n_labeled=[1]")
    with pytest.raises(ConfigError) as err:
        check_resume(_cfg(out, "finetune.n_labeled=[2]", "tracking.enabled=false"))
    message = str(err.value)
    assert "finetune.n_labeled [1] -> [2]" in message and "tracking" not in message
    assert "\n" not in message and "--overwrite" in message
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before                                     # nothing touched
    check_resume(_cfg(out, "finetune.n_labeled=[1]", "tracking.enabled=false"))   # harmless


def test_more_than_three_differences_are_counted(tmp_path):
    out = tmp_path / "out"
    _finished(out)
    with pytest.raises(ConfigError, match=r"pretrain\.lr 0\.001 -> 0\.002.* and 2 more\)"):
        check_resume(_cfg(out, "data.noise=0.5", "pretrain.rounds=3", "pretrain.lr=0.002",
                          "finetune.steps=5", "finetune.lr=0.01"))


def test_resume_without_a_saved_config_goes_on_as_before(tmp_path):
    check_resume(_cfg(tmp_path / "nothing-here", "pretrain.rounds=3"))


@pytest.mark.parametrize("content,why", [
    ("a: [1\n", "not valid YAML"),
    ("pretrain:\n  no_such_key: 1\n", "unknown config key 'pretrain.no_such_key'"),
    ("pretrain:\n  rounds: many\n", "config key 'pretrain.rounds': expected int"),
    ("- a list\n", "expected a mapping"),
])
def test_an_unreadable_saved_config_is_one_line(tmp_path, content, why):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text(content)
    with pytest.raises(ConfigError, match="cannot compare with the config saved in") as err:
        check_resume(_cfg(out))
    assert why in str(err.value) and "\n" not in str(err.value)


def test_a_saved_config_in_another_encoding_is_one_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_bytes("experiment:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"cannot compare with the config saved in .*: not "
                                          r"UTF-8 text \(byte 23\)"):
        check_resume(_cfg(out))


def test_has_results_needs_a_row(tmp_path):
    assert not has_results(tmp_path)
    (tmp_path / "results.csv").write_text("")
    assert not has_results(tmp_path)
    (tmp_path / "results.csv").write_text("method,dice_mean\n\n")
    assert not has_results(tmp_path)
    (tmp_path / "results.csv").write_text("method,dice_mean\nfcl,0.5\n")
    assert has_results(tmp_path)


def test_probes_of_a_probes_only_run_count_as_results(tmp_path):
    (tmp_path / "probes.csv").write_text("method,fold,client,probe,value\n")
    assert not has_results(tmp_path)
    (tmp_path / "probes.csv").write_text("method,fold,client,probe,value\nfcl,0,0,x,0.5\n")
    assert has_results(tmp_path)


def test_overwrite_moves_the_earlier_files_aside_and_keeps_the_rest(tmp_path):
    out = tmp_path / "out"
    before = _finished(out)
    (out / "probes.csv").write_text("method,fold,client,probe,value\n")
    (out / "notes.txt").write_text("mine")                     # not a run's file: stays
    target = move_aside(out, now=0.0)
    assert target.parent == out and target.name.startswith("previous-19")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", target.name]
    moved = {p.relative_to(target).as_posix(): p.read_bytes()
             for p in target.rglob("*") if p.is_file()}
    assert {k: v for k, v in moved.items() if k != "probes.csv"} == before
    assert {p.name for p in target.iterdir()} <= set(RUN_FILES)
    _finished(out)
    second = move_aside(out, now=0.0)                          # the same second: a new folder
    assert second != target and (second / "results.csv").is_file()
    assert move_aside(out) is None                             # nothing left to move


def test_prepare_refuses_a_finished_folder_unless_told(tmp_path):
    out = tmp_path / "out"
    _finished(out)
    cfg = _cfg(out)
    with pytest.raises(ConfigError, match="already holds results.*--resume.*--overwrite"):
        prepare_output_dir(cfg, resume=False, overwrite=False, log=print)
    prepare_output_dir(cfg, resume=True, overwrite=False, log=print)   # same config
    assert (out / "results.csv").is_file()
    lines = []
    prepare_output_dir(cfg, resume=False, overwrite=True, log=lines.append)
    assert not (out / "results.csv").exists() and "moved to" in lines[0]
    prepare_output_dir(cfg, resume=False, overwrite=False, log=print)   # nothing left: runs


def test_cli_refuses_before_ray_with_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    _finished(out)
    assert main(["run", QUICKSTART, "--set", f"experiment.output_dir={out}"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fcl-ray: error: experiment.output_dir") and "--overwrite" in line
    assert main(["run", QUICKSTART, "--set", f"experiment.output_dir={out}",
                 "--resume", "--set", "pretrain.rounds=2"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "pretrain.rounds 10 -> 2" in line
    assert main(["run", QUICKSTART, "--resume", "--overwrite"]) == 2
    assert "contradict" in capsys.readouterr().err
