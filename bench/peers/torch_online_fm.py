#!/usr/bin/python3
"""PyTorch peer of Freshet's online FM: the same model, optimizer, batches and order.

Reads a TSV whose header names the label column (`label`) and the categorical fields; every
other row is one labelled example in stream order. Model (as @freshet/model's `fm`):

    logit = b + sum_f w[x_f] + 1/2 * ((sum_f v[x_f])^2 - sum_f v[x_f]^2) summed over dim

with an exact vocabulary per field:value (no hashing, no collisions), w initialised to 0,
v ~ N(0, std), b = 0; SparseAdam on w and v (one step count per table), Adam on b. Each batch
is scored first, then trained on (progressive validation). Writes one prediction per example
to PRED_OUT and prints one JSON line.

usage: torch_online_fm.py DATA PRED_OUT [batch=32] [lr=0.01] [dim=8] [std=0.01] [threads=2]
"""
import json
import sys
import time

import numpy as np
import torch
from torch import nn

path, pred_out = sys.argv[1], sys.argv[2]
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 32
lr = float(sys.argv[4]) if len(sys.argv) > 4 else 0.01
dim = int(sys.argv[5]) if len(sys.argv) > 5 else 8
std = float(sys.argv[6]) if len(sys.argv) > 6 else 0.01
threads = int(sys.argv[7]) if len(sys.argv) > 7 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)

vocab = {}
labels, rows = [], []
with open(path) as f:
    header = f.readline().rstrip("\n").split("\t")
    li = header.index("label")
    fields = [i for i in range(len(header)) if i != li]
    for line in f:
        parts = line.rstrip("\n").split("\t")
        labels.append(float(parts[li]))
        rows.append([vocab.setdefault(f"{header[i]}:{parts[i]}", len(vocab)) for i in fields])
y = torch.tensor(labels)
x = torch.tensor(rows, dtype=torch.long)


class FM(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.w = nn.Embedding(n, 1, sparse=True)
        self.v = nn.Embedding(n, dim, sparse=True)
        self.b = nn.Parameter(torch.zeros(1))
        nn.init.zeros_(self.w.weight)
        nn.init.normal_(self.v.weight, std=std)

    def forward(self, c):
        e = self.v(c)
        inter = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1)
        return self.b + self.w(c).sum((1, 2)) + inter


model = FM(max(1, len(vocab)))
sparse_opt = torch.optim.SparseAdam(list(model.w.parameters()) + list(model.v.parameters()), lr=lr)
dense_opt = torch.optim.Adam([model.b], lr=lr)
lossf = nn.BCEWithLogitsLoss()

n = len(labels)
preds = np.zeros(n, dtype=np.float32)
t0 = time.perf_counter()
for s in range(0, n, batch):
    c, t = x[s : s + batch], y[s : s + batch]
    logits = model(c)
    preds[s : s + len(t)] = torch.sigmoid(logits).detach().numpy()
    loss = lossf(logits, t)
    sparse_opt.zero_grad()
    dense_opt.zero_grad()
    loss.backward()
    sparse_opt.step()
    dense_opt.step()
el = time.perf_counter() - t0
np.savetxt(pred_out, preds, fmt="%.6f")
print(json.dumps({"peer": "pytorch-" + torch.__version__, "model": "fm", "threads": threads, "batch": batch,
                  "lr": lr, "dim": dim, "examples": n, "seconds": round(el, 3),
                  "examples_per_s": round(n / max(el, 1e-9))}))
