"""Data parallelism: two CPU processes (gloo) see different shards yet end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.slow
def test_two_processes_average_gradients(eurosat_like: Path, tmp_path: Path) -> None:
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           str(worker), str(eurosat_like), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert set(a) == set(b)
    changed = [k for k in a if k.endswith("conv1.weight")]
    differ = [k for k in a if a[k].is_floating_point() and not torch.allclose(a[k], b[k], atol=1e-6)]
    assert changed and not differ, differ
