"""Training under ``torchrun --nproc_per_node 2`` (DistributedDataParallel, gloo on CPU).

Two checks: the CLI runs under torchrun with only rank 0 writing; and 2 ranks at
batch 16 take the same steps as 1 process at batch 32 (strided shards +
gradient averaging), so the final weights agree. This file doubles as the
script that torchrun launches (``python -m torch.distributed.run ... test_ddp.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve()
EQUIVALENCE = dict(epochs=2, batch_size=16, lr=3e-3, max_train_windows=128, progress=False, seed=7,
                   threads=1, eval_batch_size=64)


def _torchrun(args: list[str], tmp_path: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def lidar_dataset(tmp_path_factory):
    from edgekd.host.data import write_recording
    from edgekd.host.data.synth import load_scene_config, synthesize

    recording = synthesize(load_scene_config(), windows=240, seed=1, image_size=32)
    return write_recording(tmp_path_factory.mktemp("synth") / "scene", recording)


def test_cli_train_under_torchrun_writes_once(lidar_dataset, tmp_path):
    out = tmp_path / "ddp.pt"
    _torchrun(["-m", "edgekd.cli", "train", "--model", "lidar_student", "--data", str(lidar_dataset),
               "--out", str(out), "--epochs", "2", "--batch-size", "8", "--threads", "1", "--no-progress"],
              tmp_path)
    from edgekd.host.checkpoint import load_checkpoint

    ck = load_checkpoint(out, expect_model="lidar_student")
    lines = [json.loads(x) for x in out.with_suffix(".log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]            # one writer: not one line per rank
    assert all(r["world_size"] == 2 for r in lines)
    assert ck.teacher_stats["count"] > 0 and len(ck.metrics["val"]["top1"]) == 4
    assert not list(tmp_path.glob(".*.tmp"))                 # no half-written files left behind


def test_two_ranks_match_one_process_at_double_batch(lidar_dataset, tmp_path):
    ddp_out = tmp_path / "ddp_weights.pt"
    _torchrun([str(HERE), str(lidar_dataset), str(ddp_out)], tmp_path)
    from edgekd.host.distill import TrainConfig, train_model

    torch.set_num_threads(1)
    single, _ = train_model("lidar_student", lidar_dataset, TrainConfig(**{**EQUIVALENCE, "batch_size": 32}),
                            model_kwargs={"dropout": 0.0})
    distributed = torch.load(ddp_out, weights_only=True)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-4, atol=1e-5)


def _rank_main(data: str, out: str) -> None:
    """Run by torchrun: train with 2 ranks and save the final weights from rank 0."""
    from edgekd.host.distill import TrainConfig, train_model

    model, _ = train_model("lidar_student", data, TrainConfig(**EQUIVALENCE), model_kwargs={"dropout": 0.0})
    if int(os.environ["RANK"]) == 0:
        torch.save(model.state_dict(), out)


if __name__ == "__main__":
    _rank_main(sys.argv[1], sys.argv[2])
