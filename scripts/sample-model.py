#!/usr/bin/env python3
"""Writes a small sample model folder: config.json, tokenizer.json and a valid model.safetensors.

usage: sample-model.py DIR [SIZE_MB] [SEED]
The safetensors file has a real header (8-byte little-endian length, JSON with dtype/shape/offsets)
followed by float32 tensors of deterministic pseudo-random values, so loaders can parse it.
"""
import json
import os
import random
import struct
import sys


def main() -> None:
    out = sys.argv[1]
    size_mb = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    os.makedirs(out, exist_ok=True)
    rng = random.Random(seed)
    hidden = 512
    layers = max(1, size_mb * (1 << 20) // (4 * hidden * hidden * 4))
    config = {"model_type": "mlfs-demo", "hidden_size": hidden, "num_layers": layers, "seed": seed}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    vocab = {f"tok{i}": i for i in range(5000)}
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump({"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab}}, f)

    header, offset = {}, 0
    names = [f"layers.{l}.{w}" for l in range(layers) for w in ("q", "k", "v", "o")]
    nbytes = hidden * hidden * 4
    for name in names:
        header[name] = {"dtype": "F32", "shape": [hidden, hidden], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _ in names:
            f.write(rng.randbytes(nbytes))


if __name__ == "__main__":
    main()
