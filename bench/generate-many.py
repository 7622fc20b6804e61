#!/usr/bin/env python3
"""`mlfs generate` over a folder of many small files (issue #21): wall time and peak RSS, page cache warm,
median of --runs. Usage: generate-many.py [--files 100000] [--runs 3]; MLFS_BIN picks another build
(for before/after). Writes bench/results/generate-many.json."""
import argparse, os, resource, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    b.ensure_mlfs()
    work = tempfile.mkdtemp(prefix="mlfs-genmany-")
    try:
        model = os.path.join(work, "model")
        for i in range(args.files):
            d = os.path.join(model, "shards", f"d{i // 1000:03d}")
            if i % 1000 == 0: os.makedirs(d)
            with open(os.path.join(d, f"file-{i:06d}.bin"), "wb") as f: f.write(os.urandom(64))
        out = os.path.join(work, "m.json")
        walls, rss = [], []
        for _ in range(args.runs + 1):  # the first run warms the page cache and is not counted
            start = time.monotonic()
            p = subprocess.run([b.MLFS, "generate", "--id", "x", "--version", "v1", "--url-prefix", "s3://b/m", "-o", out, model],
                               capture_output=True, text=True)
            if p.returncode != 0: raise SystemExit(p.stderr)
            walls.append(time.monotonic() - start)
            rss.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)  # the largest child so far, MiB
        result = {"machine": b.machine(), "files": args.files, "runs": args.runs, "mlfs": b.MLFS,
                  "wall_s": round(b.median(walls[1:]), 2), "peak_rss_MiB": round(max(rss[1:]))}
        print(result)
        b.write_result("generate-many", result)
    finally:
        shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
