#!/usr/bin/python3
"""PyTorch peer of Freshet's Criteo wide&deep, trained online with progressive validation.

The model is @freshet/model's `criteoPeerWideDeepConfig()`:
  - the 13 integer fields as log1p(x) (0 when missing or <= 0), the 26 categorical fields hashed
    as "C<k>:<value>" (an empty value is a value) into one 2^20-row table;
  - a dim-16 embedding per categorical (N(0, 0.01)), concatenated with the 13 numerics:
    MLP 429 -> 128 -> 64 -> 1 with ReLU (PyTorch's default Linear init);
  - plus a wide part: one scalar per hashed categorical (zeros), summed;
  - BCE with logits; SparseAdam on both tables, Adam on the MLP, one learning rate.

The file is streamed in order, `passes` times, in mini-batches; each batch is scored before it is
trained on, so the first pass's predictions measure generalisation (progressive validation).
The timed part is the training loop over examples already in memory, as Freshet's train bench.

With `dense_delay` D > 0 the MLP's gradient is computed on its weights of D batches ago and
applied to the current ones (the embeddings stay fresh): the dense staleness a cluster's pushes
carry, reproduced in PyTorch. On the Criteo 10k sample (batch 64, lr 0.003, seed 0): AUC 0.7146
at D = 0, 0.7019 at 1, 0.680 at 2; delaying the embeddings instead by 2 costs ≤ 0.003.

With INIT (a folder `freshet bench` writes, read by freshet_init.py) the embedding rows of the
data's values and the MLP start from Freshet's initial weights instead of PyTorch's own (the seed
then only seeds PyTorch's rows no value uses): both sides start from the same point.

usage: torch_online.py DATA [passes=1] [batch=256] [threads=2] [lr=0.001] [seed=0] [dense_delay=0] [INIT]
Prints one JSON line: examples_per_s, progressive_auc_pass1, progressive_logloss_pass1, ...
"""
import copy
import json
import math
import sys
import time
import zlib

import numpy as np
import torch
from torch import nn

ROWS = 1 << 20
DIM = 16
N_INT = 13
N_CAT = 26


def arg(i, kind, default):
    return kind(sys.argv[i]) if len(sys.argv) > i else default


path = sys.argv[1]
passes = arg(2, int, 1)
batch = arg(3, int, 256)
threads = arg(4, int, 2)
lr = arg(5, float, 1e-3)
seed = arg(6, int, 0)
dense_delay = arg(7, int, 0)
init_dir = arg(8, str, "")
torch.set_num_threads(threads)
torch.manual_seed(seed)


def bucket(field, value):
    # crc32 of "C<k>:<value>": stable across runs and processes (Python's hash() is salted).
    return zlib.crc32(f"C{field + 1}:{value}".encode()) & (ROWS - 1)


def parse(path):
    labels, numeric, cats = [], [], []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 1 + N_INT + N_CAT or parts[0] not in ("0", "1"):
                continue  # a header or a malformed line, as parseCriteoLine skips it
            labels.append(float(parts[0]))
            row = []
            for v in parts[1 : 1 + N_INT]:
                x = float(v) if v else 0.0
                row.append(math.log1p(x) if x > 0 else 0.0)
            numeric.append(row)
            cats.append([bucket(k, v) for k, v in enumerate(parts[1 + N_INT :])])
    return torch.tensor(labels), torch.tensor(numeric), torch.tensor(cats, dtype=torch.long)


class WideDeep(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(ROWS, DIM, sparse=True)
        self.wide = nn.Embedding(ROWS, 1, sparse=True)
        nn.init.normal_(self.emb.weight, std=0.01)
        nn.init.zeros_(self.wide.weight)
        self.mlp = nn.Sequential(
            nn.Linear(N_CAT * DIM + N_INT, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 1)
        )

    def forward(self, cats, numeric):
        deep = self.mlp(torch.cat([self.emb(cats).flatten(1), numeric], 1)).squeeze(1)
        return deep + self.wide(cats).sum(1).squeeze(1)


def auc(scores, labels):
    """Mann-Whitney AUC with tied scores sharing their mean rank."""
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = labels == 1
    npos, nneg = pos.sum(), len(labels) - pos.sum()
    if npos == 0 or nneg == 0:
        return float("nan")
    return float((ranks[pos].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def load_freshet_init(model, path):
    """Freshet's initial rows and MLP (freshet_init.py) in place of PyTorch's; returns the rows set."""
    import freshet_init

    dim, keys, rows, mlp = freshet_init.load(path)
    if dim != DIM or len(mlp) != 3:
        raise ValueError(f"{path}: not this model's initial weights (dim {dim}, {len(mlp)} layers)")
    linears = [m for m in model.mlp if isinstance(m, nn.Linear)]
    with torch.no_grad():
        if keys:
            # A value's row is where this peer hashes it. Values sharing a bucket share a row (as
            # in training); from a hashed Freshet model (hashBuckets) they share their initial
            # weights too, from a collision-free one the last value's weights win.
            idx = torch.tensor([bucket(int(f[1:]) - 1, v) for f, v in keys], dtype=torch.long)
            model.emb.weight[idx] = torch.frombuffer(rows, dtype=torch.float32).reshape(len(keys), dim)
        for lin, (n_in, n_out, w, b) in zip(linears, mlp):
            if tuple(lin.weight.shape) != (n_out, n_in):
                raise ValueError(f"{path}: layer {n_in}x{n_out} does not fit {tuple(lin.weight.shape)}")
            lin.weight.copy_(torch.frombuffer(w, dtype=torch.float32).reshape(n_in, n_out).t())
            lin.bias.copy_(torch.frombuffer(b, dtype=torch.float32))
    return len(keys)


y, numeric, cats = parse(path)
model = WideDeep()
init_rows = load_freshet_init(model, init_dir) if init_dir else None
sparse_opt = torch.optim.SparseAdam(list(model.emb.parameters()) + list(model.wide.parameters()), lr=lr)
dense_opt = torch.optim.Adam(model.mlp.parameters(), lr=lr)
loss_fn = nn.BCEWithLogitsLoss()

n = len(y)
first_pass = []
seen = 0
stale = copy.deepcopy(model.mlp)
history = [copy.deepcopy(model.mlp.state_dict())]
t0 = time.perf_counter()
for p in range(passes):
    for s in range(0, n, batch):
        c, d, t = cats[s : s + batch], numeric[s : s + batch], y[s : s + batch]
        if dense_delay > 0:
            # the MLP as it was dense_delay batches ago computes this batch's logits and gradient
            stale.load_state_dict(history[0])
            stale.zero_grad()
            x = torch.cat([model.emb(c).flatten(1), d], 1)
            logits = stale(x).squeeze(1) + model.wide(c).sum(1).squeeze(1)
        else:
            logits = model(c, d)
        if p == 0:
            first_pass.append(torch.sigmoid(logits).detach().numpy().copy())
        loss = loss_fn(logits, t)
        sparse_opt.zero_grad()
        dense_opt.zero_grad()
        loss.backward()
        if dense_delay > 0:
            for w, g in zip(model.mlp.parameters(), stale.parameters()):
                w.grad = g.grad
        sparse_opt.step()
        dense_opt.step()
        if dense_delay > 0:
            history = (history + [copy.deepcopy(model.mlp.state_dict())])[-(dense_delay + 1) :]
        seen += len(t)
elapsed = time.perf_counter() - t0

pred = np.clip(np.concatenate(first_pass), 1e-7, 1 - 1e-7) if first_pass else np.zeros(0)
lab = y.numpy()
logloss = float(-np.mean(lab * np.log(pred) + (1 - lab) * np.log(1 - pred))) if n else float("nan")
print(
    json.dumps(
        {
            "peer": "pytorch-" + torch.__version__,
            "model": "wide-deep (criteoPeerWideDeepConfig)",
            "threads": threads,
            "batch": batch,
            "lr": lr,
            "seed": seed,
            "dense_delay": dense_delay,
            "init": "freshet" if init_dir else "pytorch",
            "init_rows": init_rows,
            "passes": passes,
            "examples": seen,
            "seconds": round(elapsed, 3),
            "examples_per_s": round(seen / elapsed) if elapsed > 0 else None,
            "progressive_auc_pass1": round(auc(pred, lab), 4) if n else None,
            "progressive_logloss_pass1": round(logloss, 4) if n else None,
        }
    )
)
