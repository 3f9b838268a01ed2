"""Tiny nightly-retrain budgets shared by the nightly tests: minutes of work instead of hours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.configs import NightlyRetrainConfig

SMALL_ARCH = {"fast_hidden": 8, "slow_hidden": 4, "head_hidden": 8, "slow_stride": 15}


def tiny_nightly(warehouse: Path, models: Path, **over: Any) -> NightlyRetrainConfig:
    """A 12-hour horizon, 20 trees, 4 training cycles, a one-point allocator grid, 14 held-out days.

    14 held-out days (issue 16): the allocator is fitted on the agents' outputs on the earlier
    held-out days and judged on the later ones.
    """
    base: dict[str, Any] = dict(
        agent_test_days=14,
        horizon_minutes=720,
        forecast_every_minutes=60,
        refit_every_days=2.0,
        forecaster_return_windows=[15, 60, 240],
        forecaster_vol_windows=[60],
        forecaster={"n_folds": 3, "n_estimators": 20, "min_train_rows": 50},
        cycles=4,
        seeds=[1],
        architecture=SMALL_ARCH,
        params={"train_every": 2, "batch_sessions": 2, "replay_capacity": 16},
        allocator={
            # A 3% hurdle: the SYNTHETIC coins rise about 2% a day and the 4-cycle agents hold
            # them; a lower one leaves a single label in the few days the allocator fits on.
            "cost_bps": 300.0,
            "calibration_fraction": 0.5,  # the sigmoid needs two days or more of each label
            "c_grid": [1.0],
            "gamma_grid": [0.2],
            "threshold_grid": [0.0],
            "cap_grid": [0.5],
        },
        warehouse=str(warehouse),
        models_dir=str(models),
    )
    return NightlyRetrainConfig(**{**base, **over})
