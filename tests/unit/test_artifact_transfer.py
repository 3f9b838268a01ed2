"""Artifacts travel as bytes from a worker that shares no disk; threads per task share the cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.features import FeatureScaler, FeatureSpec
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import (
    ModelLoadError,
    artifact_sha256,
    folder_sha256,
    load_agent,
    pack_folder,
    save_agent,
    unpack_folder,
)
from models.threads import task_threads, threads_for_tasks, use_threads


def _saved(tmp_path: Path) -> tuple[Path, str]:
    spec = FeatureSpec()
    n = len(spec.names())
    torch.manual_seed(0)
    net = NestedLSTMQNet(n, Architecture(fast_hidden=4, slow_hidden=4))
    scaler = FeatureScaler(spec.names(), mean=[0.0] * n, std=[1.0] * n)
    sha = save_agent(tmp_path / "worker" / "m", net, spec, scaler, {"seed": 1})
    return tmp_path / "worker" / "m", sha


def test_a_packed_artifact_lands_checked_and_loads(tmp_path: Path) -> None:
    folder, sha = _saved(tmp_path)
    files = pack_folder(folder)
    assert sorted(files) == ["meta.json", "weights.safetensors"]
    target = tmp_path / "store" / "m"
    unpack_folder(files, target, sha)
    assert artifact_sha256(target) == sha == folder_sha256(target)
    assert load_agent(target, sha).spec == FeatureSpec()
    # Idempotent: the same artifact again leaves the folder as it is.
    before = (target / "meta.json").stat().st_mtime_ns
    unpack_folder(files, target, sha)
    assert (target / "meta.json").stat().st_mtime_ns == before
    assert not list((tmp_path / "store").glob(".*incoming"))


def test_an_altered_transfer_never_lands(tmp_path: Path) -> None:
    folder, sha = _saved(tmp_path)
    files = pack_folder(folder)
    files["weights.safetensors"] = files["weights.safetensors"][:-8] + b"\0" * 8
    target = tmp_path / "store" / "m"
    with pytest.raises(ModelLoadError, match=r"not the .* it was saved with; nothing written"):
        unpack_folder(files, target, sha)
    assert not target.exists()
    assert not list((tmp_path / "store").iterdir())


def test_a_file_name_that_climbs_out_is_refused(tmp_path: Path) -> None:
    folder, sha = _saved(tmp_path)
    files = {**pack_folder(folder), "../evil.json": b"{}"}
    with pytest.raises(ModelLoadError, match="not a plain file name"):
        unpack_folder(files, tmp_path / "store" / "m", sha)
    assert not (tmp_path / "store" / "evil.json").exists()


def test_a_changed_artifact_in_place_is_replaced_by_the_checked_one(tmp_path: Path) -> None:
    folder, sha = _saved(tmp_path)
    target = tmp_path / "store" / "m"
    unpack_folder(pack_folder(folder), target, sha)
    (target / "meta.json").write_text("{}")
    unpack_folder(pack_folder(folder), target, sha)
    assert folder_sha256(target) == sha


def test_tasks_share_the_cores_and_the_count_is_restored() -> None:
    assert task_threads(2, cores=2) == 1
    assert task_threads(2, cores=16) == 8
    assert task_threads(3, cores=2) == 1  # never below one
    assert task_threads(1, cores=4) == 4
    with pytest.raises(ValueError, match="tasks_at_once"):
        task_threads(0)
    with pytest.raises(ValueError, match="threads"):
        use_threads(0)
    before = torch.get_num_threads()
    with threads_for_tasks(10**6) as threads:
        assert threads == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_nightly_gives_every_task_one_thread_count_from_the_runner() -> None:
    from core.configs import NightlyRetrainConfig
    from tasks.nightly import task_threads_of

    assert task_threads_of(NightlyRetrainConfig(workers=2)) == task_threads(2)
    assert task_threads_of(NightlyRetrainConfig(workers=1)) == task_threads(1)
    # An existing Dask cluster: Dask's own rule, one thread per task.
    cluster = NightlyRetrainConfig(runner="dask", dask_address="tcp://127.0.0.1:8786")
    assert task_threads_of(cluster) == 1
    assert task_threads_of(NightlyRetrainConfig(runner="dask", threads=3)) == 3
    # The count shapes speed, not the recipe: the same models whatever the threads.
    assert (
        NightlyRetrainConfig(threads=4, forecaster_threads=2).recipe_key()
        == NightlyRetrainConfig().recipe_key()
    )
