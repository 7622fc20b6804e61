#!/usr/bin/env python3
"""Mount-to-ready time and daemon RSS for large manifests (issue #21): 100,000 files, and one file of
1,000,000 chunk hashes, against a one-file manifest (the reference: what any mount costs). Nothing is
fetched (the URLs point at a closed loopback port). Usage: manifest-scale.py [--runs 3] [--mlfs PATH]."""
import argparse, hashlib, json, os, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b

def digest(i): return hashlib.sha256(str(i).encode()).hexdigest()

def manifest(kind):
    m = {"artifact_id": "scale", "version": "v1", "chunk_size": 1 << 20, "chunk_hash": "blake3", "prefetch": []}
    if kind == "one-file":
        m["files"] = [{"path": "a.bin", "url": "http://127.0.0.1:9/m/a.bin", "size": 10, "sha256": digest(1), "chunks": [digest(2)]}]
    elif kind == "100k-files":
        m["files"] = [{"path": f"shards/d{i // 1000:03d}/file-{i:06d}.bin", "url": f"http://127.0.0.1:9/m/shards/d{i // 1000:03d}/file-{i:06d}.bin",
                       "size": 4096 + i, "sha256": digest(i), "compression": "none", "chunks": [digest(-i)]} for i in range(100_000)]
    else:
        n = 1_000_000
        m["files"] = [{"path": "model.bin", "url": "http://127.0.0.1:9/m/model.bin", "size": n << 20, "sha256": digest(1),
                       "chunks": [digest(i) for i in range(n)]}]
    return m

def mount_once(mlfs, path, work):
    cache, mp, ready = (os.path.join(work, x) for x in ("cache", "mnt", "ready"))
    os.makedirs(cache, exist_ok=True); os.makedirs(mp, exist_ok=True)
    start = time.monotonic()
    p = subprocess.Popen([mlfs, "mount", "--manifest", path, "--cache-dir", cache, "--ready-file", ready, mp],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        b.wait_for(ready, p)
        elapsed = time.monotonic() - start
        rss = next(int(l.split()[1]) for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS:")) * 1024
        return elapsed, rss
    finally:
        p.terminate(); p.wait()
        subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)
        os.remove(ready) if os.path.exists(ready) else None
        shutil.rmtree(cache, ignore_errors=True)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mlfs", default=b.MLFS)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mlfs-scale-", dir="/tmp")
    rows = []
    try:
        paths = {}
        for kind in ("one-file", "100k-files", "1M-chunks"):
            paths[kind] = os.path.join(work, kind + ".json")
            with open(paths[kind], "w") as f: json.dump(manifest(kind), f)
        results = {k: [] for k in paths}
        for _ in range(a.runs):
            for kind, path in paths.items(): results[kind].append(mount_once(a.mlfs, path, work))
        for kind, runs in results.items():
            t = sorted(r[0] for r in runs)[len(runs) // 2]
            rss = sorted(r[1] for r in runs)[len(runs) // 2]
            size = os.path.getsize(paths[kind])
            print(f"{kind:11s} manifest {size / 1e6:6.1f} MB: ready in {t:5.2f} s (median of {len(runs)}), daemon RSS {rss / 1e6:5.0f} MB")
            rows.append({"manifest": kind, "json_bytes": size, "ready_s": round(t, 3), "rss_bytes": rss,
                         "runs": [[round(x, 3), r] for x, r in runs]})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    b.write_result("manifest-scale", {"machine": b.machine(), "rows": rows})

if __name__ == "__main__":
    main()
