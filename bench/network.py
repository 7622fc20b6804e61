#!/usr/bin/env python3
"""Model loads at the network's limit: S3 with real round trips and per-connection caps, on one machine.

  python3 bench/network.py [--size-mib 512] [--runs 3] [--delay-ms 15] [--caps 40m,80m,160m] [--link-mbit 2000]

Set-up (root; this kernel has no netem, see shared/DESIGN.md):
  - the local S3 server (Swift + s3api, scripts/local-s3.sh) on 127.0.0.1, behind nginx, one port per cap
    level: object GETs and HEADs (signed ranged GETs of the model's files) are served by nginx from the
    same bytes on disk, every other request (bucket listings, the peers' probes) goes on to Swift. On two
    cores a Python S3 server would otherwise spend the CPU the readers need, which real S3 does not;
    each connection is capped (limit_rate: the way S3 gives one connection ~50-100 MB/s);
  - bench/tools/delay-relay.c in front of each nginx port, holding every piece of data 15 ms in each
    direction (30 ms round trips), listening on the host side of a veth pair;
  - every contender runs in a network namespace of its own (nsenter --net), reaching S3 only through the
    relay; the link-capped variant adds tc tbf on the veth (the namespace's downlink).
Contenders: mlfs (empty cache each run), s3fs (parallel_count/multireq_max 8), rclone mount
(--vfs-cache-mode full), and the plain client's ceiling: boto3 with N parallel 16 MiB ranged GETs
through the same relay, best N of 1/4/8/16 (no hashing, no writes).
Workloads (median of --runs, page cache dropped before each):
  sequential   dd bs=1M of a file, at each cap, and at the middle cap behind the link cap
  safetensors  a state dict in the safetensors format whose data is in name order (as the format's writer
               puts it), loaded the way serving stacks do: mmap, then each tensor copied in model order
               (layers 0, 1, 2, ... 10, 11: not the file's order)
  gguf         a GGUF v3 file, mmap, each tensor copied in its tensor-info order
  torch_load   Debian's torch.load of the same state dict saved by torch.save
  random_4k    4 KiB reads at cold random offsets: the first byte, against one 4 KiB ranged GET
  ranks        4 processes each reading its own quarter of one file at once (tensor-parallel ranks)
Reported: throughput / ceiling, load time / (local load + transfer at the ceiling), bytes from S3 /
bytes needed, the share of the run the link sat idle (10 ms buckets at the relay with no byte from S3),
mlfs's daemon CPU s/GiB, and how busy the machine's cores were over the run (/proc/stat: loader, daemon,
relay and nginx together; near 1.0 means the run was CPU-bound, not waiting on the network), with the
CPU seconds split into the daemon, the loader and the others (S3 server, nginx, relay, kernel network work). Writes bench/results/network.json.
"""
import argparse, json, os, random, resource, shutil, signal, statistics, struct, subprocess, tempfile, time

from benchlib import (CLK, MLFS, ROOT, apt_install, cpu_seconds, drop_caches, ensure_mlfs, local_s3_env, machine, sh,
                      swift_put, wait_for, write_result)

NS = "mlfsbench"
HOST_IP, NS_IP = "10.231.7.1", "10.231.7.2"
NGINX_BASE, RELAY_BASE = 18100, 18200
BUCKET = "netbench"

# ---- the model files ---------------------------------------------------------------------------

MAKE = r'''
import json, random, struct, sys, torch
out, mib = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
sd = {"embed.weight": torch.randn(2048, 1024)}
layers = max(1, (mib - 8) // 16)
for i in range(layers):                       # 16 MiB a layer, in four tensors
    for name, shape in (("attn.qkv", (1536, 1024)), ("attn.out", (512, 1024)), ("mlp.up", (1024, 1024)), ("mlp.down", (1024, 1024))):
        sd[f"model.layers.{i}.{name}.weight"] = torch.randn(*shape)
torch.save(sd, f"{out}/model.pt")
# safetensors: u64 header length, JSON header (keys sorted, as the format's writer emits them), data in the same (name) order.
names = sorted(sd)
header, offset = {"__metadata__": {"format": "pt"}}, 0
for name in names:
    n = sd[name].numel() * 4
    header[name] = {"dtype": "F32", "shape": list(sd[name].shape), "data_offsets": [offset, offset + n]}
    offset += n
raw = json.dumps(header, separators=(",", ":")).encode()
raw += b" " * (-len(raw) % 8)
with open(f"{out}/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(raw))); f.write(raw)
    for name in names: f.write(sd[name].contiguous().numpy().tobytes())
# GGUF v3: magic, version, tensor count, metadata count (1: general.alignment), tensor infos, aligned data.
def gstr(s):
    b = s.encode(); return struct.pack("<Q", len(b)) + b
infos, data, offset = b"", [], 0
model_order = list(sd)                         # insertion order: the model's
for name in model_order:
    t = sd[name]
    infos += gstr(name) + struct.pack("<I", t.dim()) + b"".join(struct.pack("<Q", d) for d in reversed(t.shape)) + struct.pack("<IQ", 0, offset)
    n = t.numel() * 4
    data.append(t.contiguous().numpy().tobytes())
    offset += n + (-n % 32)
meta = gstr("general.alignment") + struct.pack("<I", 4) + struct.pack("<I", 32)
head = b"GGUF" + struct.pack("<IQQ", 3, len(model_order), 1) + meta + infos
head += b"\0" * (-len(head) % 32)
with open(f"{out}/model.gguf", "wb") as f:
    f.write(head)
    for d in data: f.write(d + b"\0" * (-len(d) % 32))
with open(f"{out}/model-order.json", "w") as f: json.dump(model_order, f)
'''

# Loaders: each prints how busy the cores were and the seconds of the load itself (not of importing torch).
CORES = r'''
def cores():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)
def report(c0, t0):
    import time
    c1 = cores()
    print((c1[0] - c0[0]) / max(1, c1[1] - c0[1]), time.perf_counter() - t0)
'''

LOAD_SAFETENSORS = CORES + r'''
import json, mmap, struct, sys, time
c, t = cores(), time.perf_counter()
with open(sys.argv[1], "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    order = json.load(open(sys.argv[2]))
    total = 0
    for name in order:                         # the model's order, not the file's
        begin, end = header[name]["data_offsets"]
        total += len(bytes(mm[8 + n + begin:8 + n + end]))
report(c, t)
'''

LOAD_GGUF = CORES + r'''
import mmap, struct, sys, time
c, t = cores(), time.perf_counter()
with open(sys.argv[1], "rb") as f:
    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    assert mm[:4] == b"GGUF"
    version, count, kv = struct.unpack_from("<IQQ", mm, 4)
    pos, align = 24, 32
    def gstr(p):
        (l,) = struct.unpack_from("<Q", mm, p); return bytes(mm[p + 8:p + 8 + l]).decode(), p + 8 + l
    for _ in range(kv):
        key, pos = gstr(pos)
        (typ,) = struct.unpack_from("<I", mm, pos); pos += 4
        (val,) = struct.unpack_from("<I", mm, pos); pos += 4
        if key == "general.alignment": align = val
    tensors = []
    for _ in range(count):
        name, pos = gstr(pos)
        (dims,) = struct.unpack_from("<I", mm, pos); pos += 4
        shape = struct.unpack_from(f"<{dims}Q", mm, pos); pos += 8 * dims
        typ, off = struct.unpack_from("<IQ", mm, pos); pos += 12
        n = 4
        for d in shape: n *= d
        tensors.append((off, n))
    base = pos + (-pos % align)
    total = 0
    for off, n in tensors:                     # tensor-info order
        total += len(bytes(mm[base + off:base + off + n]))
report(c, t)
'''

LOAD_PT = CORES + r'''
import sys, time, torch
c, t = cores(), time.perf_counter()
sd = torch.load(sys.argv[1])
assert sum(v.numel() for v in sd.values()) > 0
report(c, t)
'''

RANKS = r'''
import os, sys, time
path, ranks = sys.argv[1], int(sys.argv[2])
size = os.path.getsize(path)
t = time.perf_counter()
pids = []
for r in range(ranks):
    pid = os.fork()
    if pid == 0:
        lo, hi = size * r // ranks, size * (r + 1) // ranks
        with open(path, "rb", buffering=0) as f:
            f.seek(lo)
            while lo < hi:
                got = f.read(min(1 << 20, hi - lo))
                if not got: break
                lo += len(got)
        os._exit(0)
    pids.append(pid)
for p in pids: os.waitpid(p, 0)
print(time.perf_counter() - t)
'''

CEILING = r'''
import boto3, sys, time, concurrent.futures as cf
from botocore.config import Config
endpoint, bucket, key, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))
def get(o, n=16 << 20):
    body = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={o}-{min(o + n, size) - 1}")["Body"]
    got = 0
    while True:
        c = body.read(1 << 20)
        if not c: return got
        got += len(c)
if sys.argv[5] == "first":                    # one 4 KiB ranged GET at a few offsets: the first-byte reference
    times = []
    for i in range(int(sys.argv[6])):
        t = time.perf_counter(); get((i * 7919 * 4096) % (size - 4096), 4096); times.append(time.perf_counter() - t)
    times.sort(); print(times[len(times) // 2]); sys.exit()
best = 0
for w in (1, 4, 8, 16):
    t = time.perf_counter()
    with cf.ThreadPoolExecutor(w) as ex: n = sum(ex.map(get, range(0, size, 16 << 20)))
    best = max(best, n / (time.perf_counter() - t) / 1e6)
print(round(best))
'''


# ---- the network ---------------------------------------------------------------------------------

def cpu_jiffies():
    """(busy, total) jiffies over all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


def busy_share(before, after):
    return (after[0] - before[0]) / max(1, after[1] - before[1])


def children_cpu_seconds():
    """CPU seconds of the children we waited for (the loader, dd): not the mounts, which run until stopped."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ns(*argv):
    return ["nsenter", f"--net=/run/netns/{NS}", *argv]


class Network:
    """The namespace, the veth, nginx proxies with per-connection caps, and a delaying relay per cap."""

    def __init__(self, work, env, caps, delay_ms, files):
        self.work, self.caps, self.procs = work, caps, []
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
        subprocess.run(["ip", "link", "del", "mlfsb0"], capture_output=True)
        for cmd in (f"ip netns add {NS}", "ip link add mlfsb0 type veth peer name mlfsb1", f"ip link set mlfsb1 netns {NS}",
                    f"ip addr add {HOST_IP}/24 dev mlfsb0", "ip link set mlfsb0 up",
                    f"ip netns exec {NS} ip addr add {NS_IP}/24 dev mlfsb1", f"ip netns exec {NS} ip link set mlfsb1 up",
                    f"ip netns exec {NS} ip link set lo up"):
            sh(cmd)
        relay = os.path.join(work, "delay-relay")
        sh(f"gcc -O2 -pthread -o {relay} {ROOT}/bench/tools/delay-relay.c")
        s3 = env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]
        servers = "".join(f"""
  server {{ listen 127.0.0.1:{NGINX_BASE + i}; limit_rate {cap};
    location /{BUCKET}/m/ {{ alias {files}/; limit_except GET {{ deny all; }} }}
    location / {{ proxy_pass http://swift; proxy_set_header Host $http_host; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering on; proxy_max_temp_file_size 0; proxy_buffers 64 64k; }} }}""" for i, cap in enumerate(caps))
        conf = os.path.join(work, "nginx-proxy.conf")
        with open(conf, "w") as f:
            f.write(f"""user root; daemon on; worker_processes 2; pid {work}/nginx-proxy.pid; error_log {work}/nginx-proxy.log;
events {{ worker_connections 1024; }}
http {{ access_log off; client_max_body_size 0; keepalive_requests 100000; sendfile on; types {{ }} default_type application/octet-stream;
  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work}; uwsgi_temp_path {work}; scgi_temp_path {work};
  upstream swift {{ server 127.0.0.1:{s3}; keepalive 64; }}{servers} }}
""")
        sh(f"nginx -c {conf} -p {work}")
        self.nginx_conf = conf
        self.stats = {}
        for i, cap in enumerate(caps):
            stats = os.path.join(work, f"relay-{cap}.stats")
            p = subprocess.Popen([relay, HOST_IP, str(RELAY_BASE + i), "127.0.0.1", str(NGINX_BASE + i), str(delay_ms), stats],
                                 stdout=subprocess.PIPE, text=True)
            assert p.stdout.readline().strip() == "ready"
            self.procs.append(p)
            self.stats[cap] = (p, stats)

    def endpoint(self, cap):
        return f"http://{HOST_IP}:{RELAY_BASE + self.caps.index(cap)}"

    def link_cap(self, mbit):
        """A total cap on the namespace's downlink (None: lift it)."""
        subprocess.run(["tc", "qdisc", "del", "dev", "mlfsb0", "root"], capture_output=True)
        if mbit:
            sh(f"tc qdisc add dev mlfsb0 root tbf rate {mbit}mbit burst 1mb latency 50ms")

    def reset(self, cap):
        """Starts a relay's timeline (and byte counts) afresh."""
        p, path = self.stats[cap]
        p.send_signal(signal.SIGUSR1)
        wait_for_change(path)

    def take(self, cap):
        """Bytes from S3 since the last reset, and the share of 10 ms buckets in which none came."""
        p, path = self.stats[cap]
        p.send_signal(signal.SIGUSR1)
        wait_for_change(path)
        lines = open(path).read().split("\n")
        down = int(lines[0].split()[1])
        buckets = [int(x) for x in lines[3:] if x]
        # Idle inside the run: from the first to the last bucket that carried anything.
        busy = [i for i, b in enumerate(buckets) if b > 0]
        span = buckets[busy[0]:busy[-1] + 1] if busy else []
        idle = sum(1 for b in span if b == 0) / len(span) if span else 1.0
        return down, idle

    def close(self):
        for p in self.procs:
            p.kill()
        subprocess.run(["nginx", "-c", self.nginx_conf, "-p", self.work, "-s", "stop"], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
        subprocess.run(["ip", "link", "del", "mlfsb0"], capture_output=True)


def wait_for_change(path, timeout=10):
    before = os.path.getmtime(path) if os.path.exists(path) else 0
    t = time.time()
    while time.time() - t < timeout:
        if os.path.exists(path) and os.path.getmtime(path) != before and open(path).read().count("\n") >= 3:
            return
        time.sleep(0.01)


# ---- contenders ----------------------------------------------------------------------------------

class Contenders:
    """Mounts in the namespace: mlfs (a fresh cache each time), s3fs, rclone. Unmounted on close."""

    def __init__(self, work, env):
        self.work, self.env, self.live = work, env, []

    def mlfs(self, manifest, endpoint, *extra, binary=MLFS):
        mp = tempfile.mkdtemp(prefix="mnt-", dir=self.work)
        cache = tempfile.mkdtemp(prefix="cache-", dir=self.work)
        ready = os.path.join(self.work, f"ready-{time.time_ns()}")
        log = open(os.path.join(self.work, "mlfs.log"), "a")
        p = subprocess.Popen(ns(binary, "mount", "--manifest", manifest, "--endpoint", endpoint, "--cache-dir", cache,
                                "--ready-file", ready, *extra, mp), env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(ready, p)
        self.live.append((p, mp, cache))
        return p, mp

    def peer(self, name, endpoint, bucket, probe):
        mp = tempfile.mkdtemp(prefix=f"{name}-", dir=self.work)
        cache = tempfile.mkdtemp(prefix=f"{name}-cache-", dir=self.work)
        env = self.env
        if name == "s3fs":
            argv = ["s3fs", bucket, mp, "-o", f"url={endpoint},use_path_request_style,ro,endpoint=us-east-1,parallel_count=8,multireq_max=8"]
            penv = dict(env, AWSACCESSKEYID=env["AWS_ACCESS_KEY_ID"], AWSSECRETACCESSKEY=env["AWS_SECRET_ACCESS_KEY"])
        else:
            argv = ["rclone", "mount", f"s:{bucket}", mp, "--read-only", "--vfs-cache-mode", "full", "--cache-dir", cache, "--daemon"]
            penv = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}
            penv.update(RCLONE_CONFIG_S_TYPE="s3", RCLONE_CONFIG_S_PROVIDER="Other", RCLONE_CONFIG_S_ENDPOINT=endpoint,
                        RCLONE_CONFIG_S_ACCESS_KEY_ID=env["AWS_ACCESS_KEY_ID"], RCLONE_CONFIG_S_SECRET_ACCESS_KEY=env["AWS_SECRET_ACCESS_KEY"],
                        RCLONE_CONFIG_S_REGION="us-east-1", RCLONE_CONFIG_S_FORCE_PATH_STYLE="true")
        subprocess.run(ns(*argv), env=penv, check=True, capture_output=True)
        self.live.append((None, mp, cache))
        for _ in range(100):
            if os.path.exists(os.path.join(mp, probe)):
                break
            time.sleep(0.1)
        return None, mp

    def stop(self, mp):
        for i, (p, m, cache) in enumerate(self.live):
            if m == mp:
                if p:
                    p.terminate()
                    p.wait()
                else:
                    subprocess.run(["fusermount3", "-u", mp], capture_output=True)
                    time.sleep(0.2)
                subprocess.run(["umount", "-l", mp], capture_output=True)
                shutil.rmtree(cache, ignore_errors=True)
                del self.live[i]
                return

    def close(self):
        for p, mp, cache in self.live:
            if p:
                p.kill()
            subprocess.run(["umount", "-l", mp], capture_output=True)
        self.live.clear()


LOADER_CORES_BUSY = [None]  # what the last loader measured over its load alone (without starting Python, importing torch)


def py(script, *args):
    """Runs a loader (Debian's python3, for torch) and returns what it printed last, as a float (a loader
    printing two numbers gives the cores' busy share over its load first)."""
    out = subprocess.run(["/usr/bin/python3", "-c", script, *map(str, args)], capture_output=True, text=True, check=True).stdout.split()
    LOADER_CORES_BUSY[0] = float(out[-2]) if len(out) >= 2 else None
    return float(out[-1])


def dd_seconds(path):
    t = time.perf_counter()
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M"], capture_output=True, check=True)
    return time.perf_counter() - t


def first_bytes(path, offsets):
    times = []
    for o in offsets:
        fd = os.open(path, os.O_RDONLY)
        try:
            t = time.perf_counter()
            assert len(os.pread(fd, 4096, o)) == 4096
            times.append(time.perf_counter() - t)
        finally:
            os.close(fd)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--delay-ms", type=int, default=15)
    ap.add_argument("--caps", default="40m,80m,160m")
    ap.add_argument("--link-mbit", type=int, default=2000)
    ap.add_argument("--chunk-size", default="", help="chunk size of the manifest (default: mlfs generate's)")
    ap.add_argument("--only", default="", help="comma-separated workloads to run (default: all)")
    ap.add_argument("--contenders", default="mlfs,s3fs,rclone",
                    help="comma-separated; NAME=PATH[|ARG|ARG...] adds another mlfs build or mount options (e.g. before=/tmp/old/mlfs, m16=|--max-connections|16)")
    args = ap.parse_args()
    caps = args.caps.split(",")
    main_cap = caps[len(caps) // 2]
    only = set(filter(None, args.only.split(",")))
    want = lambda w: not only or w in only
    apt_install("python3-torch", "python3-boto3", "nginx-light", "s3fs", "rclone", "iproute2", "gcc", "fuse3")
    ensure_mlfs()
    env = local_s3_env()
    work = tempfile.mkdtemp(prefix="mlfs-net-")
    os.chmod(work, 0o700)
    net = None
    mounts = Contenders(work, env)
    results = {"machine": machine(), "runs": args.runs, "delay_ms_each_way": args.delay_ms, "caps_per_connection": caps,
               "link_mbit": args.link_mbit, "main_cap": main_cap}
    try:
        model = os.path.join(work, "model")
        os.makedirs(os.path.join(model, "m"))
        files = os.path.join(model, "m")
        subprocess.run(["/usr/bin/python3", "-c", MAKE, files, str(args.size_mib)], check=True)
        sh(f"head -c {args.size_mib << 20} /dev/urandom > {files}/weights.bin")
        order = os.path.join(files, "model-order.json")
        for f in ("weights.bin", "model.safetensors", "model.gguf", "model.pt"):
            swift_put(env, BUCKET, f"m/{f}", os.path.join(files, f))
        manifest = os.path.join(work, "m.json")
        sh(f"{MLFS} generate --id net --version v1 --url-prefix s3://{BUCKET}"
           + (f" --chunk-size {args.chunk_size}" if args.chunk_size else "") + f" {model} > {manifest}", env=env)
        sizes = {f: os.path.getsize(os.path.join(files, f)) for f in ("weights.bin", "model.safetensors", "model.gguf", "model.pt")}
        net = Network(work, env, caps, args.delay_ms, files)

        def ceiling(cap, key="m/weights.bin"):
            return int(subprocess.run(ns("/usr/bin/python3", "-c", CEILING, net.endpoint(cap), BUCKET, key, str(sizes[key[2:]]), "best"),
                                      env=env, capture_output=True, text=True, check=True).stdout)

        def one_run(kind, cap, action, needed):
            """Cold: drop caches, mount, reset the relay, act; returns (seconds, bytes from S3 / needed, idle share, daemon CPU s/GiB,
            share of the cores busy)."""
            endpoint = net.endpoint(cap)
            drop_caches()
            proc, mp = (mounts.mlfs(manifest, endpoint, *builds[kind][1:], binary=builds[kind][0]) if kind in builds
                        else mounts.peer(kind, endpoint, BUCKET, "m/weights.bin"))
            try:
                net.reset(cap)
                cpu0, machine0, loader0 = (cpu_seconds(proc.pid) if proc else 0), cpu_jiffies(), children_cpu_seconds()
                LOADER_CORES_BUSY[0] = None
                seconds = action(os.path.join(mp, "m"))
                machine1 = cpu_jiffies()
                busy = LOADER_CORES_BUSY[0] if LOADER_CORES_BUSY[0] is not None else busy_share(machine0, machine1)
                daemon = cpu_seconds(proc.pid) - cpu0 if proc else None
                # Where the two cores went: the daemon, the loader (with its start: Python, torch's import), and
                # everything else (the S3 server, nginx, the relay, the kernel's network work; for a peer, its daemon too).
                split = {"daemon": daemon, "loader": children_cpu_seconds() - loader0, "total": (machine1[0] - machine0[0]) / CLK}
                cpu = daemon / (needed / (1 << 30)) if proc else None
                down, idle = net.take(cap)
                return seconds, down / needed, idle, cpu, busy, split
            finally:
                mounts.stop(mp)

        def measure(kind, cap, action, needed):
            runs = [one_run(kind, cap, action, needed) for _ in range(args.runs)]
            med = lambda i: statistics.median(r[i] for r in runs)
            out = {"s": round(med(0), 3), "bytes_from_s3_vs_needed": round(med(1), 3), "idle_share": round(med(2), 3),
                   "cores_busy_share": round(med(4), 3)}
            split = {k: statistics.median(r[5][k] for r in runs) for k in ("loader", "total")}
            if runs[0][5]["daemon"] is not None:
                split["daemon"] = statistics.median(r[5]["daemon"] for r in runs)
            split["others"] = split["total"] - split["loader"] - split.get("daemon", 0)
            out["cpu_s"] = {k: round(v, 2) for k, v in split.items()}
            if runs[0][3] is not None:
                out["daemon_cpu_s_per_GiB"] = round(med(3), 2)
            return out

        builds = {"mlfs": [MLFS]} | {c.split("=", 1)[0]: c.split("=", 1)[1].split("|") for c in args.contenders.split(",") if "=" in c}
        for argv in builds.values():
            argv[0] = argv[0] or MLFS
        contenders = [c.split("=", 1)[0] for c in args.contenders.split(",")]
        peers = [c for c in contenders if c in ("s3fs", "rclone")]

        if want("sequential"):
            seq = {}
            for cap in caps:
                ceil = ceiling(cap)
                row = {"ceiling_MBps": ceil}
                for kind in contenders:
                    m = measure(kind, cap, lambda d: dd_seconds(f"{d}/weights.bin"), sizes["weights.bin"])
                    m["MBps"] = round(sizes["weights.bin"] / m["s"] / 1e6)
                    m["vs_ceiling"] = round(m["MBps"] / ceil, 3)
                    row[kind] = m
                seq[cap] = row
                print(f"sequential {cap}: ceiling {ceil} MB/s; " + "; ".join(f"{k} {row[k]['MBps']} MB/s ({row[k]['vs_ceiling']}), idle {row[k]['idle_share']}" for k in contenders), flush=True)
            net.link_cap(args.link_mbit)
            try:
                ceil = ceiling(main_cap)
                m = measure("mlfs", main_cap, lambda d: dd_seconds(f"{d}/weights.bin"), sizes["weights.bin"])
                m["MBps"] = round(sizes["weights.bin"] / m["s"] / 1e6)
                seq["link_capped"] = {"ceiling_MBps": ceil, "mlfs": dict(m, vs_ceiling=round(m["MBps"] / ceil, 3))}
                print(f"sequential, link capped at {args.link_mbit} Mbit/s: ceiling {ceil}, mlfs {m['MBps']} ({seq['link_capped']['mlfs']['vs_ceiling']})", flush=True)
            finally:
                net.link_cap(None)
            results["sequential"] = seq

        ceil = ceiling(main_cap)
        results["ceiling_MBps_at_main_cap"] = ceil
        loads = {"safetensors": ("model.safetensors", lambda d: py(LOAD_SAFETENSORS, f"{d}/model.safetensors", order)),
                 "gguf": ("model.gguf", lambda d: py(LOAD_GGUF, f"{d}/model.gguf")),
                 "torch_load": ("model.pt", lambda d: py(LOAD_PT, f"{d}/model.pt"))}
        for name, (file, action) in loads.items():
            if not want(name):
                continue
            local, local_busy = [], []
            for _ in range(args.runs):
                drop_caches()
                local.append(action(files))
                local_busy.append(LOADER_CORES_BUSY[0])
            local_s = statistics.median(local)
            transfer = sizes[file] / (ceil * 1e6)
            row = {"local_s": round(local_s, 3), "local_cores_busy_share": round(statistics.median(local_busy), 3),
                   "transfer_at_ceiling_s": round(transfer, 3)}
            for kind in contenders:
                m = measure(kind, main_cap, action, sizes[file])
                m["vs_local_plus_transfer"] = round(m["s"] / (local_s + transfer), 3)
                m["vs_larger_of_local_and_transfer"] = round(m["s"] / max(local_s, transfer), 3)  # the floor if both overlapped perfectly
                row[kind] = m
            if peers and "mlfs" in row:
                row["mlfs_vs_best_peer"] = round(row["mlfs"]["s"] / min(row[p]["s"] for p in peers), 3)
            results[name] = row
            print(f"{name}: local {local_s:.2f} s + transfer {transfer:.2f} s; " +
                  "; ".join(f"{k} {row[k]['s']} s ({row[k]['vs_local_plus_transfer']}), idle {row[k]['idle_share']}, cores busy {row[k]['cores_busy_share']}" for k in contenders) +
                  (f"; mlfs / best peer {row['mlfs_vs_best_peer']}" if "mlfs_vs_best_peer" in row else ""), flush=True)

        if want("random_4k"):
            size = sizes["weights.bin"]
            offsets = [random.Random(i).randrange(0, size - 4096) // 4096 * 4096 for i in range(16)]
            get = float(subprocess.run(ns("/usr/bin/python3", "-c", CEILING, net.endpoint(main_cap), BUCKET, "m/weights.bin", str(size), "first", "16"),
                                       env=env, capture_output=True, text=True, check=True).stdout)
            row = {"one_4KiB_GET_ms": round(get * 1000, 1)}
            for kind in contenders:
                m = measure(kind, main_cap, lambda d: first_bytes(f"{d}/weights.bin", offsets), 4096 * len(offsets))
                m["first_byte_ms"] = round(m.pop("s") * 1000, 1)
                m["vs_one_GET"] = round(m["first_byte_ms"] / row["one_4KiB_GET_ms"], 2)
                row[kind] = m
            results["random_4k"] = row
            print("random 4 KiB: one GET " + f"{row['one_4KiB_GET_ms']} ms; " + "; ".join(f"{k} {row[k]['first_byte_ms']} ms ({row[k]['vs_one_GET']})" for k in contenders), flush=True)

        if want("ranks"):
            row = {}
            for kind in contenders:
                m = measure(kind, main_cap, lambda d: py(RANKS, f"{d}/weights.bin", 4), sizes["weights.bin"])
                m["MBps"] = round(sizes["weights.bin"] / m["s"] / 1e6)
                row[kind] = m
            results["ranks"] = row
            print("4 ranks: " + "; ".join(f"{k} {row[k]['MBps']} MB/s, bytes from S3 / needed {row[k]['bytes_from_s3_vs_needed']}" for k in contenders), flush=True)
    finally:
        mounts.close()
        if net:
            net.close()
        shutil.rmtree(work, ignore_errors=True)
    write_result("network", results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
