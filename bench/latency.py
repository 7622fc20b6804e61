#!/usr/bin/env python3
"""Latency measures of mlfs, each against its reference in the same run (median of --runs):

  first byte   a 4 KiB read at a cold random offset through the mount vs one 4 KiB ranged GET (boto3), with
               the default 4 MiB chunks and with 1 MiB chunks (a read waits for its chunk to verify)
  ready        `mlfs mount` start to ready (prefetch of config.json + tokenizer.json) vs fetching those
               two files with plain GETs
  listing      walking a 100-file folder through the mount vs walking the local folder
  demand parts first byte through nginx capped at 100 MB/s per connection (as S3 caps one connection):
               --demand-parts 4 (a cold chunk as 4 parallel GETs) vs 1, same mount, cold chunks
  switch       `mlfs switch` of a mounted, fully read v1 to a v2 that changes config.json and one 16 MiB
               chunk of a 256 MiB file: its time vs mount-to-ready, and the bytes fetched to read all of v2
               vs the bytes that changed

  python3 bench/latency.py [--runs 9]      (root, /dev/fuse, scripts/local-s3.sh; writes results/latency.json)
"""
import argparse, hashlib, json, os, random, shutil, statistics, tempfile, time

from benchlib import Mounts, Nginx, ensure_mlfs, local_s3_env, machine, run_boto, sh, write_result


def read_all(root):
    """Reads every file under root; returns {relative path: sha256}."""
    out = {}
    for dp, _, fs in os.walk(root):
        for f in fs:
            with open(os.path.join(dp, f), "rb") as fh:
                out[os.path.relpath(os.path.join(dp, f), root)] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


def first_byte(path, offset):
    """Seconds for a 4 KiB pread at offset (the open is not timed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        t = time.perf_counter()
        assert len(os.pread(fd, 4096, offset)) == 4096
        return time.perf_counter() - t
    finally:
        os.close(fd)


def demand_parts_measure(mlfs, mounts, work, model, runs):
    """Median first byte at cold offsets (distinct chunks, one mount) through a per-connection-capped nginx, for 1 and 4 demand parts."""
    nginx = Nginx(model, work, limit_rate="100m")
    try:
        manifest = os.path.join(work, "nginx.json")
        sh(f"{mlfs} generate --id lat --version v1 --url-prefix {nginx.url} {model} > {manifest}")
        chunks = os.path.getsize(os.path.join(model, "weights.bin")) // (4 << 20)
        out = {}
        for parts in (1, 4):
            _, mp = mounts.mlfs(manifest, tempfile.mkdtemp(prefix="cache-", dir=work), "--demand-parts", str(parts))
            out[parts] = statistics.median(
                first_byte(os.path.join(mp, "weights.bin"), (run * 7 + 3) % chunks * (4 << 20) + random.Random(run).randrange(0, (4 << 20) - 4096))
                for run in range(runs))
            mounts.stop(mp)
        return out
    finally:
        nginx.stop()


def switch_measure(mlfs, mounts, env, work, model, manifest, runs):
    """Median switch time and the bytes fetched to read all of v2 after switching from a fully read v1."""
    v2 = os.path.join(work, "model-v2")
    shutil.copytree(model, v2)
    with open(os.path.join(v2, "config.json"), "w") as f: json.dump({"hidden": 1024}, f)
    with open(os.path.join(v2, "weights.bin"), "r+b") as f:
        f.seek(64 << 20); f.write(os.urandom(16 << 20))  # one 16 MiB chunk changes
    changed = (16 << 20) + os.path.getsize(os.path.join(v2, "config.json"))
    manifest2 = os.path.join(work, "m2.json")
    sh(f"{mlfs} push {v2} s3://latency/m2 --id lat --version v2 --prefetch config.json,tokenizer.json -o {manifest2}", env=env)
    expected = read_all(v2)
    times, refetched = [], []
    for _ in range(runs):
        _, mp = mounts.mlfs(manifest, tempfile.mkdtemp(prefix="cache-", dir=work))
        read_all(mp)
        before = json.loads(sh(f"{mlfs} status --json {mp}"))["bytes_fetched"]
        t = time.perf_counter()
        sh(f"{mlfs} switch --manifest {manifest2} {mp}")
        times.append(time.perf_counter() - t)
        assert read_all(mp) == expected, "v2 read through the switched mount differs from v2"
        refetched.append(json.loads(sh(f"{mlfs} status --json {mp}"))["bytes_fetched"] - before)
        mounts.stop(mp)
    return statistics.median(times), statistics.median(refetched), changed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    mlfs = ensure_mlfs()
    env = local_s3_env()
    work = tempfile.mkdtemp(prefix="mlfs-latency-")
    mounts = Mounts(work, env)
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

        def fresh_cache():
            return tempfile.mkdtemp(prefix="cache-", dir=work)

        ready_times, first_bytes, listings = [], [], []
        for run in range(args.runs):
            t = time.perf_counter()
            _, mp = mounts.mlfs(manifest, fresh_cache())
            ready_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            n = sum(len(fs) for _, _, fs in os.walk(mp))
            listings.append(time.perf_counter() - t)
            assert n == 103, n
            first_bytes.append(first_byte(os.path.join(mp, "weights.bin"), offsets[run]))
            mounts.stop(mp)
        # The same first-byte read with 1 MiB verification chunks (requests stay up to 16 MiB): a cold read
        # then waits for its own 1 MiB chunk instead of the default 4 MiB one.
        manifest_1m = os.path.join(work, "m1m.json")
        sh(f"{mlfs} push {model} s3://latency/m1m --id lat --version v1 --chunk-size 1M -o {manifest_1m}", env=env)
        first_bytes_1m = []
        for run in range(args.runs):
            _, mp = mounts.mlfs(manifest_1m, fresh_cache())
            first_bytes_1m.append(first_byte(os.path.join(mp, "weights.bin"), offsets[run]))
            mounts.stop(mp)

        t = time.perf_counter()
        for _ in range(args.runs): sum(len(fs) for _, _, fs in os.walk(model))
        local_listing = (time.perf_counter() - t) / args.runs

        switch_s, refetched, changed = switch_measure(mlfs, mounts, env, work, model, manifest, min(args.runs, 3))
        parts = demand_parts_measure(mlfs, mounts, work, model, args.runs)

        r = {
            "machine": machine(),
            "first_byte_ms": round(statistics.median(first_bytes) * 1000, 1),
            "one_4KiB_ranged_GET_ms": round(ref_first_byte * 1000, 1),
            "first_byte_vs_one_GET": round(statistics.median(first_bytes) / ref_first_byte, 2),
            "first_byte_1MiB_chunks_ms": round(statistics.median(first_bytes_1m) * 1000, 1),
            "first_byte_1MiB_chunks_vs_one_GET": round(statistics.median(first_bytes_1m) / ref_first_byte, 2),
            "mount_to_ready_ms": round(statistics.median(ready_times) * 1000, 1),
            "plain_GETs_of_prefetch_files_ms": round(ref_ready * 1000, 1),
            "listing_100_files_ms": round(statistics.median(listings) * 1000, 2),
            "listing_local_folder_ms": round(local_listing * 1000, 2),
            "first_byte_capped_nginx_1_part_ms": round(parts[1] * 1000, 1),
            "first_byte_capped_nginx_4_parts_ms": round(parts[4] * 1000, 1),
            "first_byte_4_parts_vs_1_part": round(parts[4] / parts[1], 2),
            "switch_ms": round(switch_s * 1000, 1),
            "switch_vs_mount_to_ready": round(switch_s / statistics.median(ready_times), 2),
            "switch_bytes_refetched": refetched,
            "switch_bytes_changed": changed,
            "switch_refetched_vs_changed": round(refetched / changed, 3),
        }
    finally:
        mounts.close()
        shutil.rmtree(work, ignore_errors=True)
    write_result("latency", r)
    for k, v in r.items():
        print(f"{k:36} {v}")


if __name__ == "__main__":
    main()
