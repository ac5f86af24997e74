#!/usr/bin/python3
"""Freshet's 64-bit feature ids in plain Python (no dependencies), for exporters.

featureId(field, value) of packages/protocol/src/keys.ts: the UTF-8 bytes of
field + "\\x01" + value, hashed twice with FNV-1a (seeds 0x9747b28c and 0x5bd1e995), each
finished with the murmur3 32-bit finaliser; (lo, hi). A batch trainer that names its rows this
way writes warm-start files whose rows are the ones Freshet's encoder looks up.

Run as a script it reads JSON [[field, value], ...] on stdin and prints [[lo, hi], ...]
(packages/cli/test/warm-start-file.test.ts checks it against the TypeScript).
"""
import json
import sys

M32 = 0xFFFFFFFF


def fmix32(h):
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    h ^= h >> 16
    return h


def hash32(data, seed):
    h = (0x811C9DC5 ^ seed) & M32
    for b in data:
        h ^= b
        h = (h * 0x01000193) & M32
    return fmix32(h)


def feature_id(field, value):
    """(lo, hi) of Freshet's featureId(field, value)."""
    data = f"{field}\u0001{value}".encode()
    return hash32(data, 0x9747B28C), hash32(data, 0x5BD1E995)


if __name__ == "__main__":
    print(json.dumps([list(feature_id(f, v)) for f, v in json.load(sys.stdin)]))
