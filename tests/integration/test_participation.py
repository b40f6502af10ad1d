"""Partial participation and a bounded exchange on a real federation: a seeded, checkpointed
participant sequence (resumed mid-run: the same sequence, bitwise-equal weights) and
per-client sent/received bytes with pretrain.remote_sample."""
import json
from pathlib import Path

import pandas as pd
import pytest
import ray
import torch

from fcl_ray.config_io import load_config
from fcl_ray.federation.coordinator import FederationError
from fcl_ray.federation.driver import run_experiment

pytestmark = pytest.mark.integration

# 3 clients, 2 sampled per round; each shares 8 features (16 + 2 bytes... see ROW_BYTES) and
# receives at most 4 of the other sampled clients' rows.
SAMPLED = ["data.clients=3", "federation.clients_per_round=2", "pretrain.remote_sample=4",
           "pretrain.rounds=4", "pretrain.methods=[fcl]", "finetune.modes=[local]",
           "tracking.enabled=false"]
ROW_BYTES = 16 * 4 + 2   # one shared row: projection_dim float32 + an int16 partition label


def _rounds(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]


def test_resume_mid_run_continues_the_participant_sequence_bitwise(ray_session, tiny_overrides,
                                                                   tmp_path):
    reference = load_config(None, tiny_overrides + SAMPLED
                            + [f"experiment.output_dir={tmp_path / 'reference'}"])
    reports: list = []
    expected = run_experiment(reference, log=lambda line: None, reporter=reports.append)
    rounds = _rounds(tmp_path / "reference")
    sequence = [r["sampled"] for r in rounds]
    assert all(len(s) == 2 for s in sequence) and len({tuple(s) for s in sequence}) > 1
    # Non-sampled clients got no call: only the sampled answered, sent and received.
    for r in rounds:
        assert r["participants"] == r["sampled"] and r["dropped"] == {}
        assert sorted(map(int, r["bytes_sent_per_client"])) == r["sampled"]
    # Received: the global weights, and from round 2 on remote_sample rows, not the 8 rows the
    # other sampled client shared.
    for r, m in zip(rounds, [m for m in reports if m.phase == "pretrain"]):
        down = m.bytes_weights // (2 * m.clients_participated)
        features_in = 0 if r["round"] == 1 else 4 * ROW_BYTES
        assert set(r["bytes_received_per_client"].values()) == {down + features_in}, r
        assert r["bytes_pool"] == (0 if r["round"] == 1 else 2 * 8 * ROW_BYTES)

    # The same run, its coordinator killed after round 2, then resumed.
    out = tmp_path / "killed"
    cfg = load_config(None, tiny_overrides + SAMPLED + [f"experiment.output_dir={out}"])

    def kill_coordinator_after_round_2(m, handles: dict = {}) -> None:
        if m.phase == "ready":
            handles["coordinator"] = m.coordinator
        elif m.phase == "pretrain" and m.round == 2:
            ray.kill(handles["coordinator"])

    with pytest.raises(FederationError, match="coordinator died"):
        run_experiment(cfg, log=lambda line: None, reporter=kill_coordinator_after_round_2)
    lines: list[str] = []
    resumed = run_experiment(cfg, log=lines.append, resume=True)
    assert any("resumed after round 2" in line for line in lines)
    assert [r["round"] for r in _rounds(out)] == [1, 2, 3, 4]
    assert [r["sampled"] for r in _rounds(out)] == sequence

    a = torch.load(tmp_path / "reference" / "encoders" / "fcl-fold0.pt")
    b = torch.load(out / "encoders" / "fcl-fold0.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed encoder differs from uninterrupted"
    dice = [c for c in expected.columns if c.startswith("dice_")]
    pd.testing.assert_frame_equal(expected[dice].reset_index(drop=True),
                                  resumed[dice].reset_index(drop=True), check_exact=True)
