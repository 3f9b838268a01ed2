"""Only safe formats load: a tampered artifact or a pickle is refused, and the flow does not trade.

Every loader of a saved model -- agents (safetensors + JSON), forecasters (XGBoost JSON),
allocators (pickle-free npz + JSON), genomes (JSON) -- checks the registered sha256 before
parsing anything, and parses only formats that cannot carry code. The pickle used here
would create a marker file if anything unpickled it; the marker must never appear.
"""

from __future__ import annotations

import ast
import hashlib
import json
import pickletools
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xgboost as xgb

from core.configs import LiveTradingConfig
from flows.live_trading import LiveTradingRefused, live_trading
from models.allocator import (
    ARRAYS,
    AllocatorParams,
    ExportedAllocator,
    allocator_sha256,
    load_allocator,
    save_allocator,
)
from models.allocator import FEATURES as ALLOCATOR_FEATURES
from models.features import FeatureScaler, FeatureSpec
from models.forecaster import MODEL_FILE, forecaster_sha256, load_forecaster, save_forecaster
from models.genome import GENES, Genome
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import (
    WEIGHTS,
    ModelLoadError,
    artifact_sha256,
    load_agent,
    load_registered_agent,
    load_registered_genome,
    save_agent,
    verify_artifact,
)
from tests.hardening.trading_world import DAY, World, build_world
from tests.integration.test_trading_flows import ledger_counts, query
from warehouse.db import connect

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("core", "adapters", "warehouse", "flows", "tasks", "models", "trading", "benchmarks")


def pickle_bomb(marker: Path) -> bytes:
    """A protocol-0 pickle that, when unpickled, calls builtins.open(marker, 'w').

    Written by hand (no pickle module anywhere in the repository); pickletools checks it.
    """
    payload = f"cbuiltins\nopen\n(V{marker}\nVw\ntR.".encode()
    ops = [op.name for op, _, _ in pickletools.genops(payload)]
    assert ops[0] == "GLOBAL" and "REDUCE" in ops and ops[-1] == "STOP"
    return payload


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# ---- artifacts of every kind ---------------------------------------------------------


def make_agent(directory: Path) -> str:
    spec = FeatureSpec(symbols=("SPY",))
    names = spec.names()
    scaler = FeatureScaler(names, [0.0] * len(names), [1.0] * len(names))
    torch.manual_seed(1)
    net = NestedLSTMQNet(len(names), Architecture(fast_hidden=4, slow_hidden=2, head_hidden=4))
    return save_agent(directory, net, spec, scaler, {"seed": 1})


def make_forecaster(directory: Path) -> str:
    spec = FeatureSpec(symbols=("BTC/USD",), return_windows=(1,), vol_windows=(5,))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, len(spec.names())))
    data = xgb.DMatrix(x, label=x[:, 0] * 0.1, feature_names=spec.names())
    booster = xgb.train({"nthread": 1, "max_depth": 2}, data, num_boost_round=2)
    return save_forecaster(directory, booster, spec, {"horizon_minutes": 40_320})


def make_allocator(directory: Path) -> str:
    n = len(ALLOCATOR_FEATURES)
    exported = ExportedAllocator(
        scaler_mean=np.zeros(n),
        scaler_scale=np.ones(n),
        support_vectors=np.eye(2, n),
        dual_coef=np.array([0.5, -0.5]),
        intercept=0.1,
        gamma=0.5,
        sigmoid_a=-1.0,
        sigmoid_b=0.0,
        params=AllocatorParams(c=1.0, gamma=0.5, threshold=0.5, cap=0.5, cost_bps=10.0),
    )
    return save_allocator(directory, exported)


def make_genome(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    genome = Genome(tuple(0 for _ in GENES))
    path.write_text(json.dumps(genome.to_dict(), sort_keys=True))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def genome_row(path: Path, sha: str) -> dict[str, Any]:
    return {"model_id": "genome-x", "artifact_path": str(path), "artifact_sha256": sha}


Loader = Callable[[Path, str], object]
FOLDER_KINDS: dict[str, tuple[Callable[[Path], str], Loader, tuple[str, ...]]] = {
    "agent": (make_agent, lambda d, s: load_agent(d, s), (WEIGHTS, "meta.json")),
    "forecaster": (make_forecaster, lambda d, s: load_forecaster(d, s), (MODEL_FILE, "meta.json")),
    "allocator": (make_allocator, lambda d, s: load_allocator(d, s), (ARRAYS, "meta.json")),
}


@pytest.mark.parametrize("kind", sorted(FOLDER_KINDS))
def test_a_one_byte_change_in_any_file_is_refused_before_loading(kind: str, tmp_path: Path) -> None:
    make, load, files = FOLDER_KINDS[kind]
    directory = tmp_path / kind
    sha = make(directory)
    load(directory, sha)  # the untouched artifact loads
    verify_artifact({"model_id": kind, "artifact_path": str(directory), "artifact_sha256": sha})
    for name in files:
        original = (directory / name).read_bytes()
        flip_one_byte(directory / name)
        with pytest.raises(ModelLoadError, match="sha256"):
            load(directory, sha)
        with pytest.raises(ModelLoadError, match="sha256"):
            verify_artifact(
                {"model_id": kind, "artifact_path": str(directory), "artifact_sha256": sha}
            )
        (directory / name).write_bytes(original)
    load(directory, sha)


def test_a_tampered_genome_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "genome.json"
    sha = make_genome(path)
    assert isinstance(load_registered_genome(genome_row(path, sha)), Genome)
    flip_one_byte(path)
    with pytest.raises(ModelLoadError, match="sha256"):
        load_registered_genome(genome_row(path, sha))


def _replace_with_pickle(path: Path, bomb: bytes) -> None:
    path.unlink()
    path.write_bytes(bomb)


def test_a_pickle_where_an_artifact_is_expected_is_refused_and_never_unpickled(
    tmp_path: Path,
) -> None:
    """Even when whoever planted it also re-registered its sha256, nothing unpickles it."""
    marker = tmp_path / "UNPICKLED"
    bomb = pickle_bomb(marker)

    # An agent whose weights file is a pickle (sha256 re-registered to match).
    agent = tmp_path / "agent"
    make_agent(agent)
    _replace_with_pickle(agent / WEIGHTS, bomb)
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_agent(agent, artifact_sha256(agent))

    # A registry row pointing an agent at a torch-style pickle file (.pt), or a folder of one.
    for name in ("model.pt", "model.pkl"):
        (tmp_path / name).write_bytes(bomb)
        row = {
            "model_id": "dqn-x",
            "artifact_path": str(tmp_path / name),
            "artifact_sha256": hashlib.sha256(bomb).hexdigest(),
        }
        with pytest.raises(ModelLoadError):
            load_registered_agent(row)
        with pytest.raises(ModelLoadError, match="not a JSON file"):
            verify_artifact(row)
        with pytest.raises(ModelLoadError, match="not a JSON file"):
            load_registered_genome(row)
    folder = tmp_path / "pickled-folder"
    folder.mkdir()
    (folder / "model.pkl").write_bytes(bomb)
    with pytest.raises(ModelLoadError, match="holds none of"):
        verify_artifact({"model_id": "x", "artifact_path": str(folder), "artifact_sha256": "0"})

    # A forecaster whose XGBoost JSON is a pickle.
    forecaster = tmp_path / "forecaster"
    make_forecaster(forecaster)
    _replace_with_pickle(forecaster / MODEL_FILE, bomb)
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_forecaster(forecaster, forecaster_sha256(forecaster))

    # An allocator whose npz holds an object array: a pickle numpy would need allow_pickle for.
    allocator = tmp_path / "allocator"
    make_allocator(allocator)
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bomb
    with zipfile.ZipFile(allocator / ARRAYS, "w") as archive:
        for name in ("dual_coef", "scaler_mean", "scaler_scale", "support_vectors"):
            archive.writestr(f"{name}.npy", npy)
    with pytest.raises(ModelLoadError, match="allow_pickle"):
        load_allocator(allocator, allocator_sha256(allocator))

    # A genome that is a pickle wearing a .json name.
    genome = tmp_path / "genome.json"
    genome.write_bytes(bomb)
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_registered_genome(genome_row(genome, hashlib.sha256(bomb).hexdigest()))

    assert not marker.exists(), "a loader unpickled a planted file"


# ---- no unsafe loader in the source -------------------------------------------------

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """Lines that import a pickle module, call torch.load without weights_only=True,
    np.load without allow_pickle=False, or pandas' read_pickle."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                if name and name.split(".")[0] in PICKLE_MODULES:
                    problems.append(f"{filename}:{node.lineno}: imports {name}")
        if not isinstance(node, ast.Call):
            continue
        called = _dotted(node.func)
        last = called.rsplit(".", 1)[-1]
        if called in ("torch.load",) and _keyword(node, "weights_only") is not True:
            problems.append(f"{filename}:{node.lineno}: torch.load without weights_only=True")
        if called in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not False:
            problems.append(f"{filename}:{node.lineno}: np.load without allow_pickle=False")
        if last in ("read_pickle", "to_pickle"):
            problems.append(f"{filename}:{node.lineno}: {called}")
    return problems


def test_the_unsafe_loader_check_finds_what_it_looks_for() -> None:
    bad = (
        "import pickle\nfrom joblib import load\nimport torch, numpy as np\n"
        "torch.load('m.pt')\ntorch.load('m.pt', weights_only=False)\n"
        "np.load('a.npz')\nnp.load('a.npz', allow_pickle=True)\npd.read_pickle('x')\n"
    )
    assert [p.split(": ", 1)[0] for p in unsafe_loads(bad)] == [
        f"<source>:{n}" for n in (1, 2, 4, 5, 6, 7, 8)
    ]
    good = "torch.load('m.pt', weights_only=True)\nnp.load('a.npz', allow_pickle=False)\n"
    assert unsafe_loads(good) == []


def test_no_source_file_can_unpickle() -> None:
    files = [p for d in SOURCE_DIRS for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 50
    problems = [
        problem
        for path in files
        for problem in unsafe_loads(path.read_text(), str(path.relative_to(REPO)))
    ]
    assert problems == []


# ---- the live-trading flow ------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("artifacts"))


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_the_flow_refuses_a_tampered_or_pickled_production_model_and_places_no_order(
    world: World, tmp_path: Path
) -> None:
    config: dict[str, Any] = {"mode": "replay", "replay_date": DAY, "max_minutes": 20}
    tampered = world.copy(tmp_path / "tampered")
    with connect(tampered.warehouse) as con:
        (row,) = con.execute(
            "SELECT model_id, stage FROM models WHERE stage = 'production'"
        ).fetchall()
    assert row == (world.model_id, "production")
    flip_one_byte(tampered.artifact / WEIGHTS)
    before = ledger_counts(tampered.warehouse)
    with pytest.raises(LiveTradingRefused, match="does not match its registered sha256"):
        live_trading(LiveTradingConfig(warehouse=str(tampered.warehouse), **config))
    assert ledger_counts(tampered.warehouse) == before

    # A pickle in place of the weights, its sha256 re-registered: refused all the same.
    pickled = world.copy(tmp_path / "pickled")
    marker = tmp_path / "UNPICKLED"
    (pickled.artifact / WEIGHTS).write_bytes(pickle_bomb(marker))
    with connect(pickled.warehouse) as con:
        con.execute(
            "UPDATE models SET artifact_sha256 = ?, promoted_at = ? WHERE model_id = ?",
            [artifact_sha256(pickled.artifact), datetime.now(UTC), pickled.model_id],
        )
    with pytest.raises(LiveTradingRefused, match="unreadable"):
        live_trading(LiveTradingConfig(warehouse=str(pickled.warehouse), **config))
    assert not marker.exists()
    assert query(pickled.warehouse, "SELECT count(*) FROM orders") == [(0,)]

    # The untouched copy trades the same minutes: the refusals were the checks.
    intact = world.copy(tmp_path / "intact")
    result = live_trading(LiveTradingConfig(warehouse=str(intact.warehouse), **config))
    assert result["status"] == "traded" and result["decisions"] == 20
    assert query(intact.warehouse, "SELECT count(*) FROM decisions")[0][0] == 20
