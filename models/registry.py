"""Model artifacts and the one inference entry point: save (safetensors + JSON, sha256), load (checked), predict."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from models.actions import ActionSet
from models.ensemble import EnsembleQNet

# Re-exported: callers catch the registry's load error as models.registry.ModelLoadError.
from models.errors import ModelLoadError as ModelLoadError
from models.features import FeatureScaler, FeatureSpec
from models.genome import Genome
from models.qnet import Architecture, NestedLSTMQNet, RecurrentState, greedy_q_paths

WEIGHTS = "weights.safetensors"
META = "meta.json"
SINGLE_FILE_FORMATS = (".json",)
"""Suffixes a one-file artifact (a genome) may have: JSON only, never a pickle (.pkl/.pt)."""


def artifact_sha256(directory: Path) -> str:
    """sha256 over the weights and the metadata, in a fixed order."""
    digest = hashlib.sha256()
    for name in (WEIGHTS, META):
        path = directory / name
        if not path.exists():
            raise ModelLoadError(f"model artifact {directory} lacks {name}")
        digest.update(name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def save_agent(
    directory: Path,
    net: NestedLSTMQNet,
    spec: FeatureSpec,
    scaler: FeatureScaler,
    extra: dict[str, Any],
) -> str:
    """Write weights and metadata; returns the artifact's sha256.

    An ensemble (models.ensemble.EnsembleQNet) is one artifact like a single network: one
    weights file whose keys are member-prefixed ('members.<k>.'), the member architecture, and
    ensemble_size / ensemble_rule in the metadata. A single network's metadata has no ensemble
    keys, exactly as before ensembles existed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, directory / WEIGHTS)
    ensemble: dict[str, Any] = (
        {"ensemble_size": net.size, "ensemble_rule": net.rule}
        if isinstance(net, EnsembleQNet)
        else {}
    )
    meta = {
        "feature_spec": spec.to_dict(),
        "feature_schema_hash": spec.schema_hash(),
        "scaler": scaler.to_dict(),
        "architecture": net.arch.to_dict(),
        "n_features": net.n_features,
        "n_actions": net.n_actions,
        # The action levels (models.actions.ActionSet.to_meta): none for the legacy three.
        **net.actions.to_meta(),
        **extra,
        # After extra: the saved network, not a caller's note, says what the weights are.
        **ensemble,
    }
    (directory / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return artifact_sha256(directory)


@dataclass
class AgentPolicy:
    """A loaded agent: the one door to a model's decisions. Live trading asks it bar by bar
    through `q_step` (trading.engine.StepwiseQ); `predict` is the same step with the action
    picked; backtests ask `predict_sessions` for whole sessions in one batched pass
    (models.dqn.greedy_q_paths), with the same NaN rule, held equal to the steps by tests."""

    net: NestedLSTMQNet
    spec: FeatureSpec
    scaler: FeatureScaler
    meta: dict[str, Any]

    def q_step(
        self, features: np.ndarray, state: RecurrentState | None, episode_start: bool
    ) -> tuple[np.ndarray, RecurrentState]:
        """One bar through the LSTMs: the Q-values of every position the agent can hold
        ([n_positions, n_actions]) and the state to pass with the next bar. The NaN rule:
        a row with a NaN or infinite feature still advances the state (the LSTMs must see
        every bar, as the batched pass does, on zeros) and gives NaN Q-values, which the
        risk engine rejects. episode_start resets the state (a new session)."""
        if state is None or episode_start:
            state = self.net.initial_state(1)
        raw = np.asarray(features, dtype=np.float64)[None, :]
        finite = bool(np.isfinite(raw).all())
        x = torch.from_numpy(self.scaler.transform(np.where(np.isfinite(raw), raw, 0.0)))
        positions = torch.arange(self.net.actions.n_positions, dtype=torch.float32)
        with torch.no_grad():
            enc, state = self.net.encode_step(x, state)
            q = self.net.q(enc.expand(len(positions), -1), positions).numpy()
        return (q if finite else np.full_like(q, np.nan)), state

    def predict_sessions(
        self, raw: np.ndarray, sessions: np.ndarray, steps: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Q-values [T, P, A] of every session of raw feature rows (spec.names() order; row i
        is step steps[i] of session sessions[i]), each session in one batched pass from a fresh
        state -- q_step bar by bar, with its NaN rule: a row with a NaN or infinite feature
        advances the state on zeros and gets NaN Q-values."""
        raw = np.asarray(raw, dtype=np.float64)
        finite = np.isfinite(raw).all(axis=1)
        x = self.scaler.transform(np.where(np.isfinite(raw), raw, 0.0))
        keys, inverse, counts = np.unique(
            np.asarray(sessions), return_inverse=True, return_counts=True
        )
        steps = np.asarray(steps, dtype=np.int64)
        feats = np.zeros((len(keys), int(counts.max()) if len(keys) else 0, x.shape[1]), np.float32)
        feats[inverse, steps] = x
        bad = np.zeros(feats.shape[:2], dtype=bool)
        bad[inverse, steps] = ~finite
        q = greedy_q_paths(self.net, torch.from_numpy(feats))
        q[bad] = np.nan
        return {str(key): q[i, : int(counts[i])] for i, key in enumerate(keys)}

    def predict(
        self, obs: tuple[np.ndarray, float], state: RecurrentState | None, episode_start: bool
    ) -> tuple[int, np.ndarray, RecurrentState]:
        """obs = (raw feature row in spec.names() order, current position: a level of the
        net's action set, 0/1 for the legacy one).

        Returns (action index into net.actions: 0=flat 1=hold 2=long for the legacy set,
        else the index of the target level; Q-values; state to pass with the next bar).
        episode_start resets the recurrent state (a new session). A row with a NaN or
        infinite feature is refused (ValueError); q_step's rule is the risk engine's.
        """
        features, position = obs
        q_all, state = self.q_step(features, state, episode_start)
        if not bool(np.isfinite(q_all).all()):
            raise ValueError("feature row contains NaN or infinite values")
        index = self.net.actions.index_of(float(position))
        q = q_all[index]
        return int(q.argmax()), q, state


def load_agent(
    directory: Path, expected_sha256: str, running_spec: FeatureSpec | None = None
) -> AgentPolicy:
    """Load after checking the sha256 and, when given, that the features match the running pipeline."""
    if not directory.exists():
        raise ModelLoadError(f"model artifact {directory} does not exist")
    actual = artifact_sha256(directory)
    if actual != expected_sha256:
        raise ModelLoadError(
            f"model artifact {directory} does not match its registered sha256 "
            f"(expected {expected_sha256[:12]}..., found {actual[:12]}...); refusing to load it"
        )
    try:
        meta = json.loads((directory / META).read_text())
        spec = FeatureSpec.from_dict(meta["feature_spec"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"model artifact {directory} has unreadable metadata: {exc}") from None
    if running_spec is not None and spec.schema_hash() != running_spec.schema_hash():
        raise ModelLoadError(
            f"model in {directory} was trained on features {spec.schema_hash()} but this pipeline "
            f"computes {running_spec.schema_hash()}; retrain it (train-agent) or run the matching version"
        )
    try:
        net = _network(meta)
        # safetensors: tensors only, never code (a pickle here fails to parse).
        net.load_state_dict(load_file(directory / WEIGHTS))
        scaler = FeatureScaler.from_dict(meta["scaler"])
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 -- any damage is one refusal
        raise ModelLoadError(
            f"model artifact {directory} is unreadable ({type(exc).__name__}: {str(exc)[:200]}); "
            "refusing to load it"
        ) from None
    net.eval()
    return AgentPolicy(net, spec, scaler, meta)


def _network(meta: dict[str, Any]) -> NestedLSTMQNet:
    """The untrained network an artifact's metadata describes: a single net, or an ensemble of
    ensemble_size members (metadata without ensemble_size: a single net, as saved before)."""

    def member() -> NestedLSTMQNet:
        return NestedLSTMQNet(
            int(meta["n_features"]),
            Architecture.from_dict(meta["architecture"]),
            int(meta["n_actions"]),
            # Artifacts from before #17 carry no levels: the legacy flat / hold / long.
            actions=ActionSet.from_meta(meta),
        )

    size = int(meta.get("ensemble_size", 1))
    if size == 1:
        return member()
    return EnsembleQNet([member() for _ in range(size)], str(meta["ensemble_rule"]))


def load_registered_agent(
    row: dict[str, Any], running_spec: FeatureSpec | None = None
) -> AgentPolicy:
    """Load the artifact a `models` row points at, checked against the row's sha256."""
    return load_agent(Path(str(row["artifact_path"])), str(row["artifact_sha256"]), running_spec)


def folder_sha256(directory: Path) -> str:
    """The sha256 of a model folder, by its layout: an agent (weights.safetensors + meta.json),
    an XGBoost forecaster (model.json + meta.json) or an SVM allocator (arrays.npz + meta.json).

    Each layout is hashed by its own module's function, so the digests are the ones
    registered when the artifact was saved.
    """
    if (directory / WEIGHTS).exists():
        return artifact_sha256(directory)
    # Imported here: sklearn and xgboost load only when a forecaster or allocator folder is hashed.
    from models.allocator import ARRAYS, allocator_sha256
    from models.forecaster import MODEL_FILE, forecaster_sha256

    if (directory / MODEL_FILE).exists():
        return forecaster_sha256(directory)
    if (directory / ARRAYS).exists():
        return allocator_sha256(directory)
    raise ModelLoadError(
        f"model artifact {directory} holds none of {WEIGHTS}, {MODEL_FILE} or {ARRAYS}"
    )


def pack_folder(directory: Path) -> dict[str, bytes]:
    """A model folder's files as bytes, by name: how a worker that shares no disk with the flow
    returns an artifact (models.registry.unpack_folder writes it back where the flow stores models)."""
    files = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
    if not files:
        raise ModelLoadError(f"model artifact {directory} is empty")
    return files


def unpack_folder(files: dict[str, bytes], directory: Path, sha256: str) -> None:
    """Write a packed artifact to `directory`, checked against `sha256` before it is in place.

    The files go to a sibling folder first and are renamed into place only when their
    sha256 (folder_sha256, by layout) is the one the worker reported: a truncated or altered
    transfer never lands. Idempotent: a folder already there with the same sha256 is kept.
    """
    for name in files:
        if not name or "/" in name or "\\" in name or name in {".", ".."}:
            raise ModelLoadError(f"artifact file name {name!r} is not a plain file name")
    if directory.is_dir():
        try:
            if folder_sha256(directory) == sha256:
                return
        except ModelLoadError:
            pass
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.with_name(f".{directory.name}.incoming")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    for name, data in files.items():
        (staging / name).write_bytes(data)
    actual = folder_sha256(staging)
    if actual != sha256:
        shutil.rmtree(staging)
        raise ModelLoadError(
            f"artifact for {directory.name} arrived with sha256 {actual[:12]}..., "
            f"not the {sha256[:12]}... it was saved with; nothing written"
        )
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)


def verify_artifact(row: dict[str, Any]) -> None:
    """Check a registry row's artifact (a model folder of any kind, or a single file) against its sha256."""
    path = Path(str(row["artifact_path"]))
    if path.is_dir():
        actual = folder_sha256(path)
    elif path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_FORMATS:
            raise ModelLoadError(
                f"artifact {path} of {row['model_id']} is not a JSON file; only safetensors, "
                "XGBoost JSON, pickle-free npz and JSON artifacts load"
            )
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        raise ModelLoadError(f"artifact {path} of {row['model_id']} does not exist")
    if actual != row["artifact_sha256"]:
        raise ModelLoadError(
            f"artifact {path} of {row['model_id']} does not match its registered sha256"
        )


def load_registered_genome(row: dict[str, Any]) -> Genome:
    """A genome registered by the architecture search, checked against its sha256."""
    verify_artifact(row)
    path = Path(str(row["artifact_path"]))
    try:
        return Genome.from_dict(json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"genome artifact {path} is unreadable: {exc}") from None
