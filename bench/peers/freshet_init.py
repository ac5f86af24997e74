#!/usr/bin/python3
"""Freshet's initial weights for the Criteo wide&deep peer, read in plain Python (no dependencies).

`freshet bench train|cluster` write them (packages/bench/src/peer-init.ts) so that the peer starts
from the weights a fresh Freshet cluster starts from: the two sides then differ only in how they
train, not in their random initialisation (whose seed-to-seed spread on the 10k Criteo sample,
±0.009 progressive AUC, is larger than the differences being measured).

Files in DIR:
  init.json  {"emb_dim", "rows", "mlp": [{"in", "out", "w", "b"}]}: w is the [in, out] row-major
             float32 weight (x @ w, so PyTorch's nn.Linear weight is its transpose), b the bias;
             both little-endian, base64;
  init.keys  one categorical "field<TAB>value" per line;
  init.rows  the matching embedding rows, rows x emb_dim little-endian float32.

Run as a script it prints a JSON summary (packages/bench/test/peer-init.test.ts checks it against
the TypeScript).
"""
import base64
import json
import os
import sys
from array import array


def _floats(data):
    a = array("f")
    a.frombytes(data)
    if sys.byteorder != "little":
        a.byteswap()
    return a


def load(path):
    """(emb_dim, [(field, value)], rows as a flat array('f'), [(in, out, w, b)])."""
    with open(os.path.join(path, "init.json")) as f:
        head = json.load(f)
    with open(os.path.join(path, "init.keys"), encoding="utf-8") as f:
        keys = [tuple(line.rstrip("\n").split("\t", 1)) for line in f if line != "\n"]
    with open(os.path.join(path, "init.rows"), "rb") as f:
        rows = _floats(f.read())
    dim = head["emb_dim"]
    if len(keys) != head["rows"] or len(rows) != head["rows"] * dim:
        raise ValueError(f"{path}: {len(keys)} keys and {len(rows)} values for {head['rows']} rows of {dim}")
    mlp = []
    for layer in head["mlp"]:
        w = _floats(base64.b64decode(layer["w"]))
        b = _floats(base64.b64decode(layer["b"]))
        if len(w) != layer["in"] * layer["out"] or len(b) != layer["out"]:
            raise ValueError(f"{path}: layer {len(mlp)} is not {layer['in']} x {layer['out']}")
        mlp.append((layer["in"], layer["out"], w, b))
    return dim, keys, rows, mlp


if __name__ == "__main__":
    dim, keys, rows, mlp = load(sys.argv[1])
    print(
        json.dumps(
            {
                "emb_dim": dim,
                "keys": [list(k) for k in keys],
                "rows": [list(rows[i * dim : (i + 1) * dim]) for i in range(len(keys))],
                "mlp": [{"in": i, "out": o, "w_head": list(w[:4]), "w_sum": sum(w), "b": list(b)} for i, o, w, b in mlp],
            }
        )
    )
