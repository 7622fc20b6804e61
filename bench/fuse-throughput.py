#!/usr/bin/env python3
"""FUSE layer and read-path throughput, as ratios against references measured in the same run.

  python3 bench/fuse-throughput.py [--size-mib 1024] [--runs 3]

Measures (median of --runs, page cache dropped before each cold run):
  memory-fuse  dd bs=1M of a 1 GiB in-memory file through our FUSE layer (no disk, no S3): pure protocol
               cost, vs dd of a local file already in the page cache; daemon CPU seconds per GiB.
  passthrough  a complete, verified file of an `mlfs mount` read with FUSE passthrough, vs reading the
               cache file directly (both cold: from disk).
  daemon-read  the same file with --no-passthrough (every READ through the daemon, pread from the
               cache), cold, vs the direct read; daemon CPU seconds per GiB.
Needs root, /dev/fuse and the local S3 server (scripts/local-s3.sh). Writes bench/results/fuse-throughput.json.
"""
import argparse, json, os, platform, re, shutil, statistics, subprocess, sys, tempfile, time

from benchlib import ROOT, local_s3_env, run_boto, sh
CLK = os.sysconf("SC_CLK_TCK")


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def dd(path):
    """Returns MB/s of dd bs=1M reading the whole file."""
    out = subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M"], capture_output=True, text=True, check=True).stderr
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", out)
    return int(m.group(1)) / float(m.group(2)) / 1e6


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def measure(path, runs, cold, pid=None, size=None):
    rates, cpu = [], []
    for _ in range(runs):
        if cold:
            drop_caches()
        before = cpu_seconds(pid) if pid else 0
        rates.append(dd(path))
        if pid:
            cpu.append((cpu_seconds(pid) - before) / (size / (1 << 30)))
    return statistics.median(rates), (statistics.median(cpu) if cpu else None)


def s3_ceiling(env, bucket, key, size, parts=16 << 20):
    """MB/s of 1, 4 and 8 parallel 16 MiB ranged GETs with boto3 (no hashing, no writes): the best is the ceiling."""
    body = f'''
import time, concurrent.futures as cf
def get(o):
    body = s3.get_object(Bucket="{bucket}", Key="{key}", Range=f"bytes={{o}}-{{o+{parts}-1}}")["Body"]
    n = 0
    while True:
        c = body.read(1 << 20)
        if not c: return n
        n += len(c)
best = 0
for w in (1, 4, 8):
    t = time.time()
    with cf.ThreadPoolExecutor(w) as ex: n = sum(ex.map(get, range(0, {size}, {parts})))
    best = max(best, n / (time.time() - t) / 1e6)
print(round(best))
'''
    return int(run_boto(env, body).strip())


def peer_cold_rates(env, work, bucket, key, runs):
    """Cold dd of the same object through rclone mount (vfs-cache off and full) and s3fs (with and without use_cache)."""
    missing = [p for p, b in (("rclone", "rclone"), ("s3fs", "s3fs")) if not shutil.which(b)]
    if missing:
        sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq " + " ".join(missing) + " >/dev/null")
    rates = {}
    rclone_env = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}  # rclone fails with it set
    rclone_env.update(RCLONE_CONFIG_S_TYPE="s3", RCLONE_CONFIG_S_PROVIDER="Other", RCLONE_CONFIG_S_ENDPOINT=env["AWS_ENDPOINT_URL"],
                      RCLONE_CONFIG_S_ACCESS_KEY_ID=env["AWS_ACCESS_KEY_ID"], RCLONE_CONFIG_S_SECRET_ACCESS_KEY=env["AWS_SECRET_ACCESS_KEY"],
                      RCLONE_CONFIG_S_REGION="us-east-1", RCLONE_CONFIG_S_FORCE_PATH_STYLE="true")
    s3fs_env = dict(env, AWSACCESSKEYID=env["AWS_ACCESS_KEY_ID"], AWSSECRETACCESSKEY=env["AWS_SECRET_ACCESS_KEY"])
    setups = {
        "rclone_vfs_off": (["rclone", "mount", f"s:{bucket}", "{mp}", "--read-only", "--vfs-cache-mode", "off", "--daemon"], rclone_env),
        "rclone_vfs_full": (["rclone", "mount", f"s:{bucket}", "{mp}", "--read-only", "--vfs-cache-mode", "full", "--cache-dir", "{cache}", "--daemon"], rclone_env),
        "s3fs": (["s3fs", bucket, "{mp}", "-o", f"url={env['AWS_ENDPOINT_URL']},use_path_request_style,ro,endpoint=us-east-1"], s3fs_env),
        "s3fs_use_cache": (["s3fs", bucket, "{mp}", "-o", f"url={env['AWS_ENDPOINT_URL']},use_path_request_style,ro,endpoint=us-east-1,use_cache={{cache}}"], s3fs_env),
    }
    for name, (argv, penv) in setups.items():
        samples = []
        for _ in range(runs):
            mp = tempfile.mkdtemp(prefix=f"{name}-", dir=work)
            cache = tempfile.mkdtemp(prefix=f"{name}-cache-", dir=work)  # empty: a cold read
            subprocess.run([a.replace("{mp}", mp).replace("{cache}", cache) for a in argv], env=penv, check=True, capture_output=True)
            for _ in range(100):
                if os.path.exists(os.path.join(mp, key)): break
                time.sleep(0.1)
            drop_caches()
            samples.append(dd(os.path.join(mp, key)))
            subprocess.run(["fusermount3", "-u", mp], capture_output=True)
        rates[name] = round(statistics.median(samples))
    return rates


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0


def wait_for(path, proc, timeout=120):
    t = time.time()
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode}")
        if time.time() - t > timeout:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    size = args.size_mib << 20
    work = tempfile.mkdtemp(prefix="mlfs-bench-")
    results = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                           "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()},
               "size_bytes": size, "runs": args.runs}
    procs = []
    try:
        sh(f"dotnet build -c Release {ROOT}/bench/MlArtifactFs.Benchmarks -v q")
        if not os.path.exists(f"{ROOT}/artifacts/mlfs/mlfs"):
            sh(f"{ROOT}/scripts/build.sh")
        bench_bin = f"{ROOT}/bench/MlArtifactFs.Benchmarks/bin/Release/net10.0/MlArtifactFs.Benchmarks"
        mlfs = f"{ROOT}/artifacts/mlfs/mlfs"

        local = os.path.join(work, "local.bin")
        sh(f"head -c {size} /dev/urandom > {local}")
        local_warm, _ = measure(local, args.runs + 1, cold=False)
        local_cold, _ = measure(local, args.runs, cold=True)

        # 1. pure FUSE: in-memory file
        mnt = os.path.join(work, "mem")
        os.mkdir(mnt)
        p = subprocess.Popen([bench_bin, "serve-memory", mnt, str(size)], stdout=subprocess.PIPE, text=True)
        procs.append((p, mnt))
        p.stdout.readline()
        mem_rate, mem_cpu = measure(os.path.join(mnt, "data.bin"), args.runs, cold=False, pid=p.pid, size=size)
        p.terminate(); p.wait(); procs.pop()

        # 2. mlfs with a complete cached file: passthrough and daemon reads
        env = local_s3_env()
        auth = subprocess.run(["curl", "-fsS", "-D", "-", "-o", "/dev/null", "-H", f"X-Auth-User: {env['AWS_ACCESS_KEY_ID']}",
                               "-H", f"X-Auth-Key: {env['AWS_SECRET_ACCESS_KEY']}", env["AWS_ENDPOINT_URL"] + "/auth/v1.0"],
                              capture_output=True, text=True, check=True).stdout
        headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in auth.splitlines() if ":" in l}
        token, storage = headers["x-auth-token"], headers["x-storage-url"]
        sh(f"curl -fsS -X PUT -H 'X-Auth-Token: {token}' {storage}/bench -o /dev/null")
        model = os.path.join(work, "model")
        os.mkdir(model)
        os.link(local, os.path.join(model, "weights.bin"))
        sh(f"curl -fsS -X PUT -H 'X-Auth-Token: {token}' -T {local} {storage}/bench/m/weights.bin -o /dev/null")
        # The ceiling: the best parallel ranged-GET throughput a plain client gets from the same server.
        ceiling = s3_ceiling(env, "bench", "m/weights.bin", size)
        manifest = os.path.join(work, "m.json")
        sh(f"{mlfs} generate --id bench --version v1 --url-prefix s3://bench/m {model} > {manifest}", env=env)
        cache = os.path.join(work, "cache")

        def mount(extra):
            mp = tempfile.mkdtemp(prefix="mnt-", dir=work)
            ready = os.path.join(work, f"ready-{time.time_ns()}")
            proc = subprocess.Popen([mlfs, "mount", "--manifest", manifest, "--cache-dir", cache, "--ready-file", ready, *extra, mp],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append((proc, mp))
            wait_for(ready, proc)
            return proc, mp

        peers = peer_cold_rates(env, work, "bench", "m/weights.bin", args.runs)
        cold = []
        for _ in range(args.runs):
            shutil.rmtree(cache, ignore_errors=True)
            proc, mp = mount([])
            drop_caches()
            t = time.time(); dd(os.path.join(mp, "weights.bin")); cold.append(time.time() - t)
            proc.terminate(); proc.wait(); procs.pop()
        proc, mp = mount([])
        t = time.time(); dd(os.path.join(mp, "weights.bin")); fetch_seconds = statistics.median(cold)
        fetch_peak_rss = peak_rss_mib(proc.pid)
        time.sleep(0.5)
        data_file = next(os.path.join(dp, f) for dp, _, fs in os.walk(cache) for f in fs if f.endswith(".data"))
        direct_cold, _ = measure(data_file, args.runs, cold=True)
        pt_cold, pt_cpu = measure(os.path.join(mp, "weights.bin"), args.runs, cold=True, pid=proc.pid, size=size)
        status = json.loads(sh(f"{mlfs} status --json {mp}"))
        proc.terminate(); proc.wait(); procs.pop()

        proc, mp = mount(["--no-passthrough"])
        daemon_cold, daemon_cpu = measure(os.path.join(mp, "weights.bin"), args.runs, cold=True, pid=proc.pid, size=size)
        daemon_warm, _ = measure(os.path.join(mp, "weights.bin"), args.runs, cold=False)
        proc.terminate(); proc.wait(); procs.pop()

        results["measures"] = {
            "local_file_page_cache_MBps": round(local_warm),
            "local_file_cold_MBps": round(local_cold),
            "memory_fuse_MBps": round(mem_rate),
            "memory_fuse_vs_page_cache_read": round(mem_rate / local_warm, 3),
            "memory_fuse_daemon_cpu_s_per_GiB": round(mem_cpu, 3),
            "s3_ceiling_parallel_ranged_gets_MBps": ceiling,
            "cold_fetch_from_local_s3_MBps": round(size / fetch_seconds / 1e6),
            "cold_fetch_vs_ceiling": round(size / fetch_seconds / 1e6 / ceiling, 3),
            **{f"peer_{k}_cold_MBps": v for k, v in peers.items()},
            "cold_fetch_vs_best_peer": round(size / fetch_seconds / 1e6 / max(peers.values()), 3),
            "cold_fetch_daemon_peak_rss_MiB": round(fetch_peak_rss),
            "cache_file_direct_cold_MBps": round(direct_cold),
            "passthrough_cold_MBps": round(pt_cold),
            "passthrough_vs_direct": round(pt_cold / direct_cold, 3),
            "passthrough_daemon_cpu_s_per_GiB": round(pt_cpu, 3),
            "passthrough_opens": status["passthrough_opens"],
            "daemon_read_cold_MBps": round(daemon_cold),
            "daemon_read_vs_direct": round(daemon_cold / direct_cold, 3),
            "daemon_read_cpu_s_per_GiB": round(daemon_cpu, 3),
            "daemon_read_warm_MBps": round(daemon_warm),
        }
    finally:
        for proc, mp in procs:
            proc.kill()
            subprocess.run(["umount", "-l", mp], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    os.makedirs(f"{ROOT}/bench/results", exist_ok=True)
    with open(f"{ROOT}/bench/results/fuse-throughput.json", "w") as f:
        json.dump(results, f, indent=2)
    print(f"machine: {results['machine']}")
    for k, v in results["measures"].items():
        print(f"{k:40} {v}")


if __name__ == "__main__":
    main()
