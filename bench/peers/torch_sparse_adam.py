#!/usr/bin/python3
"""PyTorch peer of Freshet's shard bench: SparseAdam row updates per second, optimizer step only.

Freshet's `bench shard` times `ShardCore.applyPush`: pushes of `batch` unique random existing rows
of a `rows` x `dim` table, each carrying a ready gradient, applied by Adam on one thread. The same
work in PyTorch is `SparseAdam.step()` with a ready sparse gradient on the embedding weight, so
that is all this times: the gradients are built (coalesced: unique rows) before the clock starts,
and no forward or backward pass runs.

usage: torch_sparse_adam.py [dim=16] [batch=8192] [rows=1048576] [seconds=3]
Prints one JSON line: row_updates_per_s, step_ms, ...
"""
import json
import sys
import time

import torch


def arg(i, kind, default):
    return kind(sys.argv[i]) if len(sys.argv) > i else default


dim = arg(1, int, 16)
batch = arg(2, int, 8192)
rows = arg(3, int, 1 << 20)
seconds = arg(4, float, 3.0)
torch.set_num_threads(1)  # the shard applies a push on one thread
torch.manual_seed(42)

weight = torch.nn.Parameter(torch.randn(rows, dim) * 0.01)
opt = torch.optim.SparseAdam([weight], lr=1e-3)

# 16 pre-built pushes, as the shard bench: unique random rows, gradients uniform in [-0.05, 0.05).
grads = []
for _ in range(16):
    idx = torch.randperm(rows)[:batch]
    values = (torch.rand(batch, dim) - 0.5) * 0.1
    grads.append(torch.sparse_coo_tensor(idx.unsqueeze(0), values, (rows, dim)).coalesce())


def step(g):
    weight.grad = g
    opt.step()


for k in range(8):  # warm-up (allocates the optimizer state)
    step(grads[k % len(grads)])

steps = 0
updates = 0
start = time.perf_counter()
until = start + seconds
while time.perf_counter() < until:
    g = grads[steps % len(grads)]
    step(g)
    updates += g._nnz()
    steps += 1
elapsed = time.perf_counter() - start
print(
    json.dumps(
        {
            "peer": "pytorch-" + torch.__version__ + "-sparseadam",
            "dim": dim,
            "rows": rows,
            "batch": batch,
            "threads": 1,
            "steps": steps,
            "step_ms": round(elapsed * 1000 / steps, 3),
            "row_updates_per_s": round(updates / elapsed),
        }
    )
)
