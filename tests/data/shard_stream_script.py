"""Run under torchrun (2 ranks): stream one pass of a shard split with 2 DataLoader workers per rank and write the
keys each rank saw to OUT/rank<r>.json."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from mmfm.data.shards import ShardDataset

root, out = sys.argv[1], Path(sys.argv[2])
dist.init_process_group("gloo")
ds = ShardDataset(root, "train", shuffle=True, seed=3, buffer=4, keys=True)
seen = []
for batch in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2):
    seen.append(batch["key"])
(out / f"rank{dist.get_rank()}.json").write_text(json.dumps(seen))
dist.destroy_process_group()
