#!/usr/bin/python3
"""Batch-trains Freshet's Criteo lr or fm model in PyTorch and writes a warm-start file.

The file is what `freshet model import` and `freshet bench warm` read (docs/warm-start.md): a
safetensors file, written here without the safetensors package. The model is @freshet/model's
`criteoWideDeepConfig({kind})` forward pass, exactly, so the weights mean the same in Freshet:
  - numerics I1..I13: log1p(x) for x > 0, else 0 (missing is 0; clipped to +-1e9 first);
  - categoricals C1..C26, an empty value included, as Freshet's 64-bit feature ids
    (`freshet_keys.py`: featureId(field, value) of packages/protocol/src/keys.ts), so each row of
    the vocabulary is the row Freshet's encoder looks up for that string;
  - logit = sum over fields of wide[id] + lin[:13] . x + lin[13]
            (+ fm: 1/2 sum_k ((sum_f emb[id_f, k])^2 - sum_f emb[id_f, k]^2)).
Tables written: `wide.keys` U32 [n, 2] (lo, hi), `wide.values` F32 [n, 1], `emb.keys`,
`emb.values` F32 [n, dim] (fm), `lin` F32 [14]. Only ids seen in the training rows are written;
every other id keeps Freshet's deterministic initial row.

Training is batch: the first `rows` examples of DATA, `epochs` shuffled passes on mini-batches,
BCE with logits; Adam (lr) on emb and lin, and on wide Adagrad (wide_lr, initial accumulator 0.1)
on the batch's summed loss, as Freshet's Criteo configs train it (`criteoWideOptimizer`:
a wide weight under Adam barely moves in a few thousand examples); wide_lr 0 puts wide on Adam
too. The embeddings start N(0, 0.01), wide and lin at zero (as Freshet initialises them).

usage: torch_export.py DATA OUT [model=fm] [rows=5000] [epochs=1] [batch=64] [lr=0.003] [dim=16]
                       [seed=0] [threads=2] [l2=0] [wide_lr=0.05]
Prints one JSON line: rows, keys per table, final training logloss, seconds.
"""
import json
import math
import struct
import sys
import time

import numpy as np
import torch
from torch import nn

from freshet_keys import feature_id

N_INT = 13
N_CAT = 26
NUMERIC_LIMIT = 1e9


def arg(i, kind, default):
    return kind(sys.argv[i]) if len(sys.argv) > i else default


path, out = sys.argv[1], sys.argv[2]
kind = arg(3, str, "fm")
max_rows = arg(4, int, 5000)
epochs = arg(5, int, 1)
batch = arg(6, int, 64)
lr = arg(7, float, 0.003)
dim = arg(8, int, 16)
seed = arg(9, int, 0)
threads = arg(10, int, 2)
l2 = arg(11, float, 0.0)
wide_lr = arg(12, float, 0.05)
if kind not in ("fm", "lr"):
    sys.exit(f"model {kind}: lr or fm")
torch.set_num_threads(threads)
torch.manual_seed(seed)
def parse(path, limit):
    """The first `limit` lines parseCriteoLine accepts (40 columns, label 0 or 1)."""
    labels, numeric, cats = [], [], []
    with open(path) as f:
        for line in f:
            if len(labels) >= limit:
                break
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 1 + N_INT + N_CAT or parts[0] not in ("0", "1"):
                continue
            labels.append(float(parts[0]))
            row = []
            for v in parts[1 : 1 + N_INT]:
                x = float(v) if v.strip() else 0.0
                x = min(max(x, -NUMERIC_LIMIT), NUMERIC_LIMIT)
                row.append(math.log1p(x) if x > 0 else 0.0)
            numeric.append(row)
            cats.append([feature_id(f"C{k + 1}", v) for k, v in enumerate(parts[1 + N_INT :])])
    return labels, numeric, cats


labels, numeric, cats = parse(path, max_rows)
vocab = {}
index = [[vocab.setdefault(key, len(vocab)) for key in row] for row in cats]
y = torch.tensor(labels)
x = torch.tensor(numeric, dtype=torch.float32)
c = torch.tensor(index, dtype=torch.long)


class Model(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.wide = nn.Embedding(n, 1)
        nn.init.zeros_(self.wide.weight)
        self.lin = nn.Parameter(torch.zeros(N_INT + 1))
        if kind == "fm":
            self.emb = nn.Embedding(n, dim)
            nn.init.normal_(self.emb.weight, std=0.01)

    def forward(self, c, x):
        z = self.wide(c).sum((1, 2)) + x @ self.lin[:N_INT] + self.lin[N_INT]
        if kind == "fm":
            e = self.emb(c)
            z = z + 0.5 * (e.sum(1).square() - e.square().sum(1)).sum(1)
        return z


model = Model(len(vocab))
adam_params = [p for name, p in model.named_parameters() if wide_lr == 0 or not name.startswith("wide")]
opts = [torch.optim.Adam(adam_params, lr=lr, weight_decay=l2)]
if wide_lr > 0:
    opts.append(torch.optim.Adagrad(model.wide.parameters(), lr=wide_lr, initial_accumulator_value=0.1, eps=1e-10))
loss_fn = nn.BCEWithLogitsLoss()
n = len(y)
t0 = time.perf_counter()
for _ in range(epochs):
    perm = torch.randperm(n)
    for s in range(0, n, batch):
        b = perm[s : s + batch]
        loss = loss_fn(model(c[b], x[b]), y[b])
        for o in opts:
            o.zero_grad()
        loss.backward()
        if wide_lr > 0:
            model.wide.weight.grad *= len(b)  # the summed loss's gradient, as Freshet's Adagrad sees it
        for o in opts:
            o.step()
elapsed = time.perf_counter() - t0
with torch.no_grad():
    train_logloss = float(loss_fn(model(c, x), y))

keys = np.zeros((len(vocab), 2), dtype="<u4")
for (lo, hi), i in vocab.items():
    keys[i] = (lo, hi)
tensors = {
    "lin": model.lin.detach().numpy().astype("<f4"),
    "wide.keys": keys,
    "wide.values": model.wide.weight.detach().numpy().astype("<f4"),
}
if kind == "fm":
    tensors["emb.keys"] = keys
    tensors["emb.values"] = model.emb.weight.detach().numpy().astype("<f4")

# safetensors: u64 LE header length, JSON header (offsets into the data section), raw tensors
header = {"__metadata__": {"freshet.format": "warm-start/1", "freshet.model": f"criteo-{kind}", "trainer": "torch_export.py"}}
offset = 0
blobs = []
for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    b = a.tobytes()
    header[name] = {"dtype": "F32" if a.dtype.kind == "f" else "U32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
    blobs.append(b)
    offset += len(b)
head = json.dumps(header).encode()
head += b" " * ((8 - (8 + len(head)) % 8) % 8)
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(head)))
    f.write(head)
    for b in blobs:
        f.write(b)

print(
    json.dumps(
        {
            "trainer": "pytorch-" + torch.__version__,
            "model": kind,
            "rows": n,
            "keys": len(vocab),
            "epochs": epochs,
            "batch": batch,
            "lr": lr,
            "dim": dim if kind == "fm" else None,
            "l2": l2,
            "wide_lr": wide_lr,
            "seed": seed,
            "train_logloss": round(train_logloss, 4),
            "seconds": round(elapsed, 3),
            "out": out,
        }
    )
)
