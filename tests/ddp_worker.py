"""Run by tests/test_train.py under `torchrun --nproc_per_node=2`: 2 sandwich steps, then each
process saves its weights so the test can check the replicas stayed identical."""

import sys
from pathlib import Path

import torch

from supersam_min.build import build
from supersam_min.data import synthetic_blobs
from supersam_min.supernet import SuperSAM
from supersam_min.train import TrainConfig, distributed, train

out = Path(sys.argv[1])
torch.manual_seed(0)
sup = SuperSAM(build("sam_tiny"), "sam_tiny")
cfg = TrainConfig(steps=2, batch_size=1, max_masks=2, checkpoint_every=1, warmup_steps=1)
train(sup, synthetic_blobs(4, seed=2), cfg, out, progress=False)
rank, _ = distributed()
torch.save(sup.sam.state_dict(), out / f"rank{rank}.pt")
