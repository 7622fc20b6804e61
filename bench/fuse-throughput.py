#!/usr/bin/env python3
"""FUSE layer and read-path throughput, as ratios against references measured in the same run.

  python3 bench/fuse-throughput.py [--size-mib 1024] [--runs 3]

Measures (median of --runs, page cache dropped before each cold run):
  hashes       CPU s/GiB of SHA-256 alone (hashlib) and of BLAKE3 alone (the daemon's chunk hash, in .NET) over the same bytes
  memory-fuse  dd bs=1M of an in-memory file through our FUSE layer (no disk, no S3): pure protocol
               cost, vs dd of a local file already in the page cache; daemon CPU seconds per GiB.
  cold         dd of the file through `mlfs mount` with an empty cache, from the local S3 server and from
               nginx (unsigned URLs), each vs its ceiling: the best of 1/4/8 parallel 16 MiB ranged GETs
               by a plain client (boto3, http.client) from the same server; daemon CPU s/GiB, peak RSS.
  peers        the same cold dd through s3fs (with and without use_cache) and rclone mount (vfs cache off, full).
  warm         a complete, verified file read with FUSE passthrough (cold page cache: from disk), vs reading
               the cache file directly; and with --no-passthrough (every READ through the daemon).
Needs root, /dev/fuse and the local S3 server (scripts/local-s3.sh). Writes bench/results/fuse-throughput.json.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

from benchlib import (MLFS, PEERS, ROOT, Mounts, Nginx, cpu_seconds, dd, drop_caches, ensure_mlfs, local_s3_env, machine,
                      pid_serving, sha256_cpu_s_per_gib,
                      median, peak_rss_mib, s3_ceiling, sh, swift_put, write_result)


def measure(path, runs, cold, pid=None, size=None):
    """Median MB/s of dd over `runs` (page cache dropped first when cold) and median daemon CPU s/GiB."""
    rates, cpu = [], []
    for _ in range(runs):
        if cold:
            drop_caches()
        before = cpu_seconds(pid) if pid else 0
        rates.append(dd(path))
        if pid:
            cpu.append((cpu_seconds(pid) - before) / (size / (1 << 30)))
    return median(rates), (median(cpu) if cpu else None)


def cold_mlfs(mounts, manifest, work, runs, size):
    """Median MB/s, CPU s/GiB and peak RSS of dd through a fresh mlfs mount with an empty cache."""
    rates, cpu, rss = [], [], []
    for _ in range(runs):
        cache = tempfile.mkdtemp(prefix="cache-", dir=work)
        proc, mp = mounts.mlfs(manifest, cache)
        drop_caches()
        before = cpu_seconds(proc.pid)
        rates.append(dd(os.path.join(mp, "m", "weights.bin")))
        cpu.append((cpu_seconds(proc.pid) - before) / (size / (1 << 30)))
        rss.append(peak_rss_mib(proc.pid))
        mounts.stop(mp)
        shutil.rmtree(cache)
    return median(rates), median(cpu), max(rss)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    size = args.size_mib << 20
    work = tempfile.mkdtemp(prefix="mlfs-bench-")
    results = {"machine": machine(), "size_bytes": size, "runs": args.runs}
    env = local_s3_env()
    mounts = Mounts(work, env)
    nginx = None
    mem = None
    try:
        sh(f"dotnet build -c Release {ROOT}/bench/MlArtifactFs.Benchmarks -v q")
        ensure_mlfs()
        bench_bin = f"{ROOT}/bench/MlArtifactFs.Benchmarks/bin/Release/net10.0/MlArtifactFs.Benchmarks"

        model = os.path.join(work, "model")
        os.makedirs(os.path.join(model, "m"))
        local = os.path.join(model, "m", "weights.bin")
        sh(f"head -c {size} /dev/urandom > {local}")
        local_warm, _ = measure(local, args.runs + 1, cold=False)
        sha_cpu = median(sha256_cpu_s_per_gib(local) for _ in range(args.runs))
        # BLAKE3 alone: the daemon's own chunk hash (the default kind), over the same bytes in memory.
        blake3_cpu = float(sh(f"{bench_bin} hash-cpu {local} blake3"))

        # 1. pure FUSE: an in-memory file
        mnt = os.path.join(work, "mem")
        os.mkdir(mnt)
        mem = subprocess.Popen([bench_bin, "serve-memory", mnt, str(size)], stdout=subprocess.PIPE, text=True)
        mem.stdout.readline()
        mem_rate, mem_cpu = measure(os.path.join(mnt, "data.bin"), args.runs, cold=False, pid=mem.pid, size=size)
        mem.terminate(); mem.wait(); mem = None

        # 2. cold reads, empty cache: from the S3 server and from nginx, each vs its own ceiling
        swift_put(env, "bench", "m/weights.bin", local)
        nginx = Nginx(model, work)
        s3_ceil, s3_ceil_cpu = s3_ceiling(env, "bench", "m/weights.bin", size)
        nginx_ceil, nginx_ceil_cpu = nginx.ceiling("/m/weights.bin", size)
        manifest = os.path.join(work, "s3.json")
        sh(f"{MLFS} generate --id bench --version v1 --url-prefix s3://bench {model} > {manifest}", env=env)
        manifest_nginx = os.path.join(work, "nginx.json")
        sh(f"{MLFS} generate --id bench --version v1 --url-prefix {nginx.url} {model} > {manifest_nginx}", env=env)
        # the manifests name m/weights.bin; reads below go through <mount>/m/weights.bin
        rates = {name: cold_mlfs(mounts, m, work, args.runs, size) for name, m in (("s3", manifest), ("nginx", manifest_nginx))}

        # 3. peers on the same object, cold
        peers, peers_cpu = {}, {}
        for name in PEERS:
            samples, cpu = [], []
            for _ in range(args.runs):
                mp = mounts.peer(name, "bench", "m/weights.bin")
                pid = pid_serving(mp)  # both peers daemonize
                drop_caches()
                before = cpu_seconds(pid) if pid else 0
                samples.append(dd(os.path.join(mp, "m", "weights.bin")))
                if pid: cpu.append((cpu_seconds(pid) - before) / (size / (1 << 30)))
                mounts.stop(mp)
            peers[name] = round(median(samples))
            if cpu: peers_cpu[name] = round(median(cpu), 2)

        # 4. warm: the file complete in the cache
        cache = os.path.join(work, "cache")
        proc, mp = mounts.mlfs(manifest, cache)
        dd(os.path.join(mp, "m", "weights.bin"))
        time.sleep(0.5)
        data_file = next(os.path.join(dp, f) for dp, _, fs in os.walk(cache) for f in fs if f.endswith(".data"))
        direct_cold, _ = measure(data_file, args.runs, cold=True)
        pt_cold, pt_cpu = measure(os.path.join(mp, "m", "weights.bin"), args.runs, cold=True, pid=proc.pid, size=size)
        status = json.loads(sh(f"{MLFS} status --json {mp}"))
        mounts.stop(mp)
        proc, mp = mounts.mlfs(manifest, cache, "--no-passthrough")
        daemon_cold, daemon_cpu = measure(os.path.join(mp, "m", "weights.bin"), args.runs, cold=True, pid=proc.pid, size=size)
        mounts.stop(mp)

        best_peer = max(peers.values())
        results["measures"] = {
            "local_file_page_cache_MBps": round(local_warm),
            "memory_fuse_MBps": round(mem_rate),
            "memory_fuse_vs_page_cache_read": round(mem_rate / local_warm, 3),
            "memory_fuse_daemon_cpu_s_per_GiB": round(mem_cpu, 3),
            "sha256_only_cpu_s_per_GiB": round(sha_cpu, 3),
            "blake3_only_cpu_s_per_GiB": round(blake3_cpu, 3),
            "s3_ceiling_MBps": s3_ceil,
            "s3_ceiling_client_cpu_s_per_GiB": round(s3_ceil_cpu, 2),
            "cold_s3_MBps": round(rates["s3"][0]),
            "cold_s3_vs_ceiling": round(rates["s3"][0] / s3_ceil, 3),
            "cold_s3_daemon_cpu_s_per_GiB": round(rates["s3"][1], 2),
            "cold_s3_daemon_cpu_vs_sha256_only": round(rates["s3"][1] / sha_cpu, 2),
            "cold_s3_daemon_peak_rss_MiB": round(rates["s3"][2]),
            "nginx_ceiling_MBps": nginx_ceil,
            "nginx_ceiling_client_cpu_s_per_GiB": round(nginx_ceil_cpu, 2),
            "cold_nginx_MBps": round(rates["nginx"][0]),
            "cold_nginx_vs_ceiling": round(rates["nginx"][0] / nginx_ceil, 3),
            "cold_nginx_daemon_cpu_s_per_GiB": round(rates["nginx"][1], 2),
            "cold_nginx_daemon_cpu_vs_sha256_only": round(rates["nginx"][1] / sha_cpu, 2),
            **{f"peer_{k}_cold_MBps": v for k, v in peers.items()},
            **{f"peer_{k}_cold_cpu_s_per_GiB": v for k, v in peers_cpu.items()},
            "cold_s3_vs_best_peer": round(rates["s3"][0] / best_peer, 3),
            "cache_file_direct_cold_MBps": round(direct_cold),
            "warm_passthrough_MBps": round(pt_cold),
            "warm_passthrough_vs_direct": round(pt_cold / direct_cold, 3),
            "warm_passthrough_daemon_cpu_s_per_GiB": round(pt_cpu, 3),
            "passthrough_opens": status["passthrough_opens"],
            "warm_daemon_read_MBps": round(daemon_cold),
            "warm_daemon_read_vs_direct": round(daemon_cold / direct_cold, 3),
            "warm_daemon_read_cpu_s_per_GiB": round(daemon_cpu, 3),
        }
    except Exception:
        print("the newest mlfs mount's output:\n" + mounts.last_log(), file=sys.stderr)
        raise
    finally:
        if mem:
            mem.kill()
            subprocess.run(["umount", "-l", os.path.join(work, "mem")], capture_output=True)
        mounts.close()
        if nginx:
            nginx.stop()
        shutil.rmtree(work, ignore_errors=True)

    write_result("fuse-throughput", results)
    print(f"machine: {results['machine']}")
    for k, v in results["measures"].items():
        print(f"{k:40} {v}")


if __name__ == "__main__":
    main()
