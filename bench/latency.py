#!/usr/bin/env python3
"""Latency measures of mlfs, each against its reference in the same run (median of --runs):

  first byte   a 4 KiB read at a cold random offset through the mount vs one 4 KiB ranged GET (boto3)
  ready        `mlfs mount` start to ready (prefetch of config.json + tokenizer.json) vs fetching those
               two files with plain GETs
  listing      walking a 100-file folder through the mount vs walking the local folder

  python3 bench/latency.py [--runs 9]      (root, /dev/fuse, scripts/local-s3.sh; writes results/latency.json)
"""
import argparse, json, os, random, shutil, statistics, subprocess, tempfile, time

from benchlib import ROOT, local_s3_env, run_boto, sh


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    mlfs = f"{ROOT}/artifacts/mlfs/mlfs"
    if not os.path.exists(mlfs):
        sh(f"{ROOT}/scripts/build.sh")
    env = local_s3_env()
    work = tempfile.mkdtemp(prefix="mlfs-latency-")
    procs = []
    try:
        model = os.path.join(work, "model")
        os.makedirs(os.path.join(model, "files"))
        with open(os.path.join(model, "config.json"), "w") as f: json.dump({"hidden": 768}, f)
        with open(os.path.join(model, "tokenizer.json"), "wb") as f: f.write(os.urandom(2 << 20))
        with open(os.path.join(model, "weights.bin"), "wb") as f: f.write(os.urandom(256 << 20))
        for i in range(100):
            with open(os.path.join(model, "files", f"f{i:03d}.json"), "wb") as f: f.write(os.urandom(1000))
        manifest = os.path.join(work, "m.json")
        sh(f"{mlfs} push {model} s3://latency/m --id lat --version v1 --prefetch config.json,tokenizer.json -o {manifest}", env=env)

        boto = '''
import sys, time, statistics
s3.get_object(Bucket="latency", Key="m/config.json")["Body"].read()  # warm the connection, as mlfs has one
mode = sys.argv[1]
out = []
for o in map(int, sys.argv[2:]):
    t = time.perf_counter()
    if mode == "range":
        s3.get_object(Bucket="latency", Key="m/weights.bin", Range=f"bytes={o}-{o+4095}")["Body"].read()
    else:
        for k in ("m/config.json", "m/tokenizer.json"): s3.get_object(Bucket="latency", Key=k)["Body"].read()
    out.append(time.perf_counter() - t)
print(statistics.median(out))
'''
        offsets = [random.Random(i).randrange(0, (256 << 20) - 4096) for i in range(args.runs)]
        ref_first_byte = float(run_boto(env, boto, "range", *offsets))
        ref_ready = float(run_boto(env, boto, "prefetch", *["0"] * args.runs))

        ready_times, first_bytes, listings = [], [], []
        for run in range(args.runs):
            cache = tempfile.mkdtemp(prefix="cache-", dir=work)
            mp = tempfile.mkdtemp(prefix="mnt-", dir=work)
            ready = os.path.join(work, f"ready-{run}")
            t = time.perf_counter()
            p = subprocess.Popen([mlfs, "mount", "--manifest", manifest, "--cache-dir", cache, "--ready-file", ready, mp],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append((p, mp))
            while not os.path.exists(ready):
                time.sleep(0.001)
            ready_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            n = sum(len(fs) for _, _, fs in os.walk(mp))
            listings.append(time.perf_counter() - t)
            assert n == 103, n
            fd = os.open(os.path.join(mp, "weights.bin"), os.O_RDONLY)
            t = time.perf_counter()
            assert len(os.pread(fd, 4096, offsets[run])) == 4096
            first_bytes.append(time.perf_counter() - t)
            os.close(fd)
            p.terminate(); p.wait(); procs.pop()
        t = time.perf_counter()
        for _ in range(args.runs): sum(len(fs) for _, _, fs in os.walk(model))
        local_listing = (time.perf_counter() - t) / args.runs

        r = {
            "first_byte_ms": round(statistics.median(first_bytes) * 1000, 1),
            "one_4KiB_ranged_GET_ms": round(ref_first_byte * 1000, 1),
            "first_byte_vs_one_GET": round(statistics.median(first_bytes) / ref_first_byte, 2),
            "mount_to_ready_ms": round(statistics.median(ready_times) * 1000, 1),
            "plain_GETs_of_prefetch_files_ms": round(ref_ready * 1000, 1),
            "listing_100_files_ms": round(statistics.median(listings) * 1000, 2),
            "listing_local_folder_ms": round(local_listing * 1000, 2),
        }
    finally:
        for p, mp in procs:
            p.kill()
            subprocess.run(["umount", "-l", mp], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(f"{ROOT}/bench/results", exist_ok=True)
    with open(f"{ROOT}/bench/results/latency.json", "w") as f:
        json.dump(r, f, indent=2)
    for k, v in r.items():
        print(f"{k:36} {v}")


if __name__ == "__main__":
    main()
