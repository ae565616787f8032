"""Run by ``test_ddp.py`` under ``torch.distributed.run`` with 2 CPU processes: one tiny fit, weights to a file per rank."""

from __future__ import annotations

import sys

import torch

from eotransfer.api import fit

if __name__ == "__main__":
    data, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    res = fit(data, bands="eurosat-ms", strategy="finetune", backbone="resnet18", labels_per_class=6, head_epochs=1,
              epochs=2, batch_size=4, accelerator="cpu", devices=2, progress=False, verbose=False, seed=0)  # fmt: skip
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else -1
    torch.save({k: v.detach().clone() for k, v in res.model.state_dict().items()}, f"{out}/rank{rank}.pt")
