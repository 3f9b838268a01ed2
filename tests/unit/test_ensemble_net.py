"""Ensembles of Q-networks: mean Q, majority vote, stepwise = batched, one checked artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from models.ensemble import EnsembleQNet, EnsembleState, member_seed
from models.features import FeatureScaler, FeatureSpec
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import ModelLoadError, artifact_sha256, load_agent, save_agent

SMALL = Architecture(fast_hidden=8, slow_hidden=4, head_hidden=8, slow_stride=3)
SPEC = FeatureSpec(symbols=("SPY",))
N_FEATURES = len(SPEC.names())


def members(k: int, seed: int = 0) -> list[NestedLSTMQNet]:
    out = []
    for i in range(k):
        torch.manual_seed(seed + i)
        out.append(NestedLSTMQNet(N_FEATURES, SMALL))
    return out


def fixed_q(rows: list[list[float]]) -> list[NestedLSTMQNet]:
    """Members whose Q-values are the given constants whatever they see (zero head weights)."""
    nets = members(len(rows))
    for net, row in zip(nets, rows, strict=True):
        with torch.no_grad():
            net.advantage.weight.zero_()
            net.advantage.bias.copy_(torch.tensor(row))
    return nets


def scaler() -> FeatureScaler:
    """Identity scaling: synthetic features are fed as they are."""
    frame = pl.DataFrame({n: [-1.0, 1.0] for n in SPEC.names()})
    return FeatureScaler.fit(frame, SPEC.names())


def test_mean_q_is_the_mean_of_the_members_q() -> None:
    nets = members(3)
    ens = EnsembleQNet(nets, "mean_q")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 11, N_FEATURES, generator=g)
    pos = torch.randint(0, 2, (4, 11), generator=g)
    with torch.no_grad():
        got = ens.q(ens.encode(x), pos)
        each = torch.stack([m.q(m.encode(x), pos) for m in nets])
    assert got.shape == (4, 11, 3)
    assert torch.allclose(got, each.mean(dim=0), atol=1e-6)
    # Not member 0's Q: the members differ, so the mean is a different number.
    assert not torch.allclose(got, each[0], atol=1e-3)


def test_stepwise_encoding_equals_the_batched_one() -> None:
    ens = EnsembleQNet(members(3), "vote")
    x = torch.randn(2, 10, N_FEATURES, generator=torch.Generator().manual_seed(2))
    pos = torch.ones(2, dtype=torch.long)
    with torch.no_grad():
        whole = ens.q(ens.encode(x), torch.ones(2, 10, dtype=torch.long))
        state = ens.initial_state(2)
        assert isinstance(state, EnsembleState) and len(state.members) == 3
        for t in range(10):
            enc, state = ens.encode_step(x[:, t], state)
            assert torch.allclose(ens.q(enc, pos), whole[:, t], atol=1e-5), t
    assert state.step == 10
    with pytest.raises(TypeError, match="initial_state"):
        ens.encode_step(x[:, 0], members(1)[0].initial_state(2))


def test_vote_picks_the_majority_and_breaks_ties_by_mean_q() -> None:
    # Two members say flat (0), one says long (2) by a wide margin: the mean Q says long.
    ens = EnsembleQNet(fixed_q([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 10.0]]), "vote")
    enc = ens.encode(torch.zeros(1, 5, N_FEATURES))
    pos = torch.zeros(1, 5)
    with torch.no_grad():
        assert ens.q(enc, pos).argmax(-1).flatten().tolist() == [0] * 5
        ens.rule = "mean_q"
        assert ens.q(enc, pos).argmax(-1).flatten().tolist() == [2] * 5
    # One vote each for flat and long: the higher mean Q (long, 1.5 > 0.5) wins the tie.
    tie = EnsembleQNet(fixed_q([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]]), "vote")
    with torch.no_grad():
        scores = tie.q(tie.encode(torch.zeros(1, 2, N_FEATURES)), torch.zeros(1, 2))
    assert scores.argmax(-1).flatten().tolist() == [2, 2]
    # The vote count dominates the tie-break: scores of 1 vote vs 0 votes stay ordered.
    assert bool((scores[..., 2] > scores[..., 0]).all() and (scores[..., 0] > scores[..., 1]).all())


def test_nan_in_one_member_makes_the_scores_non_finite() -> None:
    for rule in ("mean_q", "vote"):
        ens = EnsembleQNet(fixed_q([[1.0, 0.0, 0.0], [float("nan"), 0.0, 0.0]]), rule)
        with torch.no_grad():
            q = ens.q(ens.encode(torch.zeros(1, 2, N_FEATURES)), torch.zeros(1, 2))
        assert not bool(torch.isfinite(q).all()), rule


def test_members_must_agree_and_be_several() -> None:
    with pytest.raises(ValueError, match="at least two"):
        EnsembleQNet(members(1))
    with pytest.raises(ValueError, match="rule"):
        EnsembleQNet(members(2), "median")
    other = NestedLSTMQNet(N_FEATURES, Architecture(fast_hidden=4, slow_hidden=4, head_hidden=4))
    with pytest.raises(ValueError, match="share"):
        EnsembleQNet([*members(1), other])


def test_member_seeds_are_the_agent_seed_then_distinct_and_fixed() -> None:
    assert member_seed(7, 0) == 7
    seeds = {member_seed(s, k) for s in range(5) for k in range(4)}
    assert len(seeds) == 20, "neighbouring agents must not share members"
    assert member_seed(7, 2) == int(np.random.SeedSequence([7, 2]).generate_state(1)[0])


def test_ensemble_artifact_round_trips_with_one_sha256(tmp_path: Path) -> None:
    ens = EnsembleQNet(members(3), "vote")
    sha = save_agent(tmp_path / "e", ens, SPEC, scaler(), {"seed": 3})
    assert sha == artifact_sha256(tmp_path / "e")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == [
        "meta.json",
        "weights.safetensors",
    ]
    meta = json.loads((tmp_path / "e" / "meta.json").read_text())
    assert (meta["ensemble_size"], meta["ensemble_rule"]) == (3, "vote")
    assert meta["architecture"] == SMALL.to_dict()
    assert meta["feature_schema_hash"] == SPEC.schema_hash()
    keys = load_file(tmp_path / "e" / "weights.safetensors")
    assert {k.split(".")[1] for k in keys} == {"0", "1", "2"}
    assert all(k.startswith("members.") for k in keys)

    policy = load_agent(tmp_path / "e", sha, running_spec=SPEC)
    assert isinstance(policy.net, EnsembleQNet)
    assert (policy.net.size, policy.net.rule) == (3, "vote")
    x = torch.randn(2, 9, N_FEATURES, generator=torch.Generator().manual_seed(4))
    pos = torch.randint(0, 2, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(policy.net.q(policy.net.encode(x), pos), ens.q(ens.encode(x), pos))
    # predict(), bar by bar, is the batched path's answer.
    state = None
    with torch.no_grad():
        batched = ens.q(ens.encode(x[:1]), torch.zeros(1, 9))[0]
    for t in range(9):
        action, q, state = policy.predict((x[0, t].numpy(), 0.0), state, episode_start=(t == 0))
        assert np.allclose(q, batched[t].numpy(), atol=1e-5), t
        assert action == int(batched[t].argmax())


def test_a_tampered_or_mislabelled_ensemble_is_refused(tmp_path: Path) -> None:
    sha = save_agent(tmp_path / "e", EnsembleQNet(members(3)), SPEC, scaler(), {})
    weights = tmp_path / "e" / "weights.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(ModelLoadError, match="sha256"):
        load_agent(tmp_path / "e", sha)
    # Metadata that disagrees with the weights (even under a matching sha256): refused.
    weights.write_bytes(original)
    meta_path = tmp_path / "e" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "ensemble_size": 2}))
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_agent(tmp_path / "e", artifact_sha256(tmp_path / "e"))


def test_a_single_network_artifact_is_what_it_was(tmp_path: Path) -> None:
    net = members(1)[0]
    sha = save_agent(tmp_path / "s", net, SPEC, scaler(), {"seed": 1})
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert "ensemble_size" not in meta and "ensemble_rule" not in meta
    assert not any(
        k.startswith("members.") for k in load_file(tmp_path / "s" / "weights.safetensors")
    )
    policy = load_agent(tmp_path / "s", sha)
    assert type(policy.net) is NestedLSTMQNet
