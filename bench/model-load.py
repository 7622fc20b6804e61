#!/usr/bin/env python3
"""A real model load through each mount, against loading the same file from local disk.

  python3 bench/model-load.py [--size-mib 512] [--runs 3]

A ~512 MiB state dict (32 x 16 MiB float32 tensors plus small ones) saved two ways and loaded the way
frameworks do, each in a fresh python3 after drop_caches (the time of the load call only, not of importing torch):
  torch.load   Debian's python3-torch reading the zip checkpoint (torch.save's format);
  safetensors  the loaders' access pattern: read the 8-byte length and the JSON header, mmap the file,
               then copy each tensor out of the mapping (torch.frombuffer(...).clone()), in file order.
Through: local disk (the reference), mlfs cold (empty cache) and warm (complete cache), s3fs and
rclone mount --vfs-cache-mode full (cold). The target for mlfs cold is <= 1.2 x (local load + the
time the S3 ceiling needs to transfer the file). Writes bench/results/model-load.json.
"""
import argparse, json, os, shutil, subprocess, tempfile

from benchlib import (MLFS, Mounts, apt_install, drop_caches, ensure_mlfs, local_s3_env, machine, median, s3_ceiling, sh,
                      swift_put, write_result)

MAKE = r'''
import json, struct, sys, torch
out, mib = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
sd = {}
for i in range(mib // 16):
    sd[f"layers.{i}.weight"] = torch.randn(2048, 2048)           # 16 MiB each
    sd[f"layers.{i}.bias"] = torch.randn(2048)
torch.save(sd, f"{out}/model.pt")
# safetensors by its spec: u64 header length, JSON header with data_offsets, then the raw little-endian data.
header, offset = {"__metadata__": {"format": "pt"}}, 0
for name, t in sd.items():
    n = t.numel() * t.element_size()
    header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + n]}
    offset += n
raw = json.dumps(header, separators=(",", ":")).encode()
raw += b" " * (-len(raw) % 8)
with open(f"{out}/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(raw))); f.write(raw)
    for t in sd.values(): f.write(t.contiguous().numpy().tobytes())
'''

LOAD_PT = r'''
import sys, time, torch
t = time.perf_counter()
sd = torch.load(sys.argv[1])
elapsed = time.perf_counter() - t
assert sum(v.numel() for v in sd.values()) > 0
print(elapsed)
'''

LOAD_SAFETENSORS = r'''
import json, mmap, struct, sys, time, warnings, torch
warnings.filterwarnings("ignore")  # frombuffer on a read-only mapping
t = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    base = 8 + n
    tensors = {}
    for name, info in sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        tensors[name] = torch.frombuffer(mm, dtype=torch.float32, count=(end - begin) // 4, offset=base + begin).clone().reshape(info["shape"])
elapsed = time.perf_counter() - t
print(elapsed)
'''

LOADERS = {"torch_load": ("model.pt", LOAD_PT), "safetensors": ("model.safetensors", LOAD_SAFETENSORS)}


def timed_load(script, path):
    drop_caches()
    return float(subprocess.run(["/usr/bin/python3", "-c", script, path], capture_output=True, text=True, check=True).stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    apt_install("python3-torch")
    ensure_mlfs()
    env = local_s3_env()
    work = tempfile.mkdtemp(prefix="mlfs-load-")
    mounts = Mounts(work, env)
    results = {"machine": machine(), "runs": args.runs}
    try:
        model = os.path.join(work, "model")
        os.makedirs(os.path.join(model, "m"))
        subprocess.run(["/usr/bin/python3", "-c", MAKE, os.path.join(model, "m"), str(args.size_mib)], check=True)
        for file, _ in LOADERS.values():
            swift_put(env, "load", f"m/{file}", os.path.join(model, "m", file))
        manifest = os.path.join(work, "m.json")
        sh(f"{MLFS} generate --id load --version v1 --url-prefix s3://load {model} > {manifest}", env=env)
        sizes = {k: os.path.getsize(os.path.join(model, "m", f)) for k, (f, _) in LOADERS.items()}
        ceiling, _ = s3_ceiling(env, "load", "m/model.pt", sizes["torch_load"])
        results["s3_ceiling_MBps"] = ceiling

        for loader, (file, script) in LOADERS.items():
            seconds = {"local": [], "mlfs_cold": [], "mlfs_warm": [], "s3fs": [], "rclone_vfs_full": []}
            for _ in range(args.runs):
                seconds["local"].append(timed_load(script, os.path.join(model, "m", file)))
                cache = tempfile.mkdtemp(prefix="cache-", dir=work)
                _, mp = mounts.mlfs(manifest, cache)
                seconds["mlfs_cold"].append(timed_load(script, os.path.join(mp, "m", file)))
                mounts.stop(mp)
                _, mp = mounts.mlfs(manifest, cache)  # a restart on the filled cache
                seconds["mlfs_warm"].append(timed_load(script, os.path.join(mp, "m", file)))
                mounts.stop(mp)
                shutil.rmtree(cache)
                for peer in ("s3fs", "rclone_vfs_full"):
                    mp = mounts.peer(peer, "load", f"m/{file}")
                    seconds[peer].append(timed_load(script, os.path.join(mp, "m", file)))
                    mounts.stop(mp)
            s = {k: median(v) for k, v in seconds.items()}
            transfer = sizes[loader] / (ceiling * 1e6)
            results[loader] = {
                "file_bytes": sizes[loader],
                **{f"{k}_s": round(v, 3) for k, v in s.items()},
                "ceiling_transfer_s": round(transfer, 3),
                "mlfs_cold_vs_local_plus_transfer": round(s["mlfs_cold"] / (s["local"] + transfer), 3),
                "mlfs_warm_vs_local": round(s["mlfs_warm"] / s["local"], 3),
                "mlfs_cold_vs_best_peer": round(s["mlfs_cold"] / min(s["s3fs"], s["rclone_vfs_full"]), 3),
            }
    finally:
        mounts.close()
        shutil.rmtree(work, ignore_errors=True)
    write_result("model-load", results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
