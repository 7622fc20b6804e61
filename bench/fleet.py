#!/usr/bin/env python3
"""Fleet mode on one machine: 4 nodes, each an `mlfs mount` in a network namespace of its own with its
own address on a bridge this script creates, read one model at once from cold caches. The S3 server
is reached through socat on the bridge address, and the origin's egress (everything the host sends
into the bridge: S3 responses) is capped with tc (tbf, default 100 MB/s in total). Node-to-node
traffic is bridged between the nodes' own links and is not capped. Redis (the holders index) runs on
the bridge address with a password.

Measured in one run, with and without fleet mode: bytes the S3 server sent (the nodes' own count of
bytes from storage) / model size, and the time until all 4 nodes have read the whole model / the time
one node alone takes. Every node's bytes are compared with the model (sha256).
    bench/fleet.py [--size-mib 256] [--cap-mbps 100] [--nodes 4]
"""
import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import MLFS, apt_install, drop_caches, ensure_mlfs, local_s3_env, machine, sh, swift_put, write_result  # noqa: E402

PEER_PORT = 7070


class Network:
    def __init__(self, nodes):
        self.id = secrets.token_hex(2)
        x, y = 100 + int(self.id[:2], 16) % 100, int(self.id[2:], 16)
        self.prefix = f"10.{x}.{y}."
        self.host = self.prefix + "1"
        self.bridge = f"mlb{self.id}"
        self.nodes = []
        sh(f"ip link add {self.bridge} type bridge && ip addr add {self.host}/24 dev {self.bridge} && ip link set {self.bridge} up")
        for i in range(nodes):
            ns, outside, inside, addr = f"mln{self.id}{i}", f"mlv{self.id}{i}h", f"mlv{self.id}{i}n", self.prefix + str(10 + i)
            sh(f"ip netns add {ns}")
            self.nodes.append((ns, addr))
            sh(f"ip link add {outside} type veth peer name {inside} && ip link set {inside} netns {ns} && ip link set {outside} master {self.bridge} up")
            sh(f"ip -n {ns} addr add {addr}/24 dev {inside} && ip -n {ns} link set {inside} up && ip -n {ns} link set lo up")

    def cap(self, mbps):
        """Caps what the host sends into the bridge (the origin's egress) at `mbps` MB/s in total."""
        sh(f"tc qdisc replace dev {self.bridge} root tbf rate {int(mbps * 8)}mbit burst 2mb latency 100ms")

    def close(self):
        for ns, _ in self.nodes:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def start_node(net, i, manifest, work, env, fleet):
    ns, addr = net.nodes[i]
    mp, cache, ready = (os.path.join(work, f"{k}-{i}-{time.time_ns()}") for k in ("mnt", "cache", "ready"))
    os.mkdir(mp)
    extra = ["--peer-listen", f"{addr}:{PEER_PORT}"] if fleet else []
    log = open(ready + ".log", "w")
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", MLFS, "mount", "--manifest", manifest, "--cache-dir", cache,
                             "--ready-file", ready, *extra, mp], env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(1200):
        if os.path.exists(ready):
            return proc, mp
        if proc.poll() is not None:
            raise RuntimeError(f"node {i} exited: {open(ready + '.log').read()[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"node {i} not ready: {open(ready + '.log').read()[-2000:]}")


def stop_node(proc, mp):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    subprocess.run(["umount", "-l", mp], capture_output=True)


def status(mp):
    return json.loads(subprocess.run([MLFS, "status", "--json", mp], capture_output=True, text=True, check=True).stdout)


def read_all(mps, expected_sha):
    """Reads the model through every mount at once; returns (seconds until the last one finished, all exact)."""
    t = time.monotonic()
    procs = [subprocess.Popen(f"sha256sum {mp}/m/weights.bin", shell=True, stdout=subprocess.PIPE, text=True) for mp in mps]
    exact = all(p.communicate()[0].split()[0] == expected_sha for p in procs)
    return time.monotonic() - t, exact


def scenario(net, manifest, work, env, nodes, fleet, size, expected_sha):
    started = [start_node(net, i, manifest, work, env, fleet) for i in range(nodes)]
    try:
        drop_caches()
        seconds, exact = read_all([mp for _, mp in started], expected_sha)
        statuses = [status(mp) for _, mp in started]
    finally:
        for proc, mp in started:
            stop_node(proc, mp)
    from_storage = sum(s["bytes_fetched"] for s in statuses)
    from_peers = sum(s["bytes_from_peers"] for s in statuses)
    return {"seconds": round(seconds, 2), "exact": exact, "storage_bytes": from_storage, "peer_bytes": from_peers,
            "storage_vs_model": round(from_storage / size, 3), "hedges": sum(s["fleet_hedges"] for s in statuses),
            "waits": sum(s["fleet_waits"] for s in statuses), "peer_failures": sum(s["peer_failures"] for s in statuses)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--cap-mbps", type=float, default=100)
    ap.add_argument("--nodes", type=int, default=4)
    args = ap.parse_args()
    apt_install("socat", "redis-server", "iproute2")
    ensure_mlfs()
    size = args.size_mib << 20
    work = tempfile.mkdtemp(prefix="mlfs-bench-fleet-")
    env = local_s3_env()
    net = Network(args.nodes)
    helpers = []
    try:
        model = os.path.join(work, "model")
        os.makedirs(os.path.join(model, "m"))
        local = os.path.join(model, "m", "weights.bin")
        sh(f"head -c {size} /dev/urandom > {local}")
        expected_sha = hashlib.sha256(open(local, "rb").read()).hexdigest()
        swift_put(env, "fleet", "m/weights.bin", local)

        s3_port = int(env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
        helpers.append(subprocess.Popen(["socat", f"TCP-LISTEN:{s3_port},bind={net.host},fork,reuseaddr", f"TCP:127.0.0.1:{s3_port}"]))
        password = secrets.token_hex(16)
        redis_port = 16690
        helpers.append(subprocess.Popen(["redis-server", "--bind", net.host, "--port", str(redis_port), "--requirepass", password,
                                         "--save", "", "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL))
        time.sleep(0.5)
        node_env = dict(env, AWS_ENDPOINT_URL=f"http://{net.host}:{s3_port}", MLFS_REDIS=f"{net.host}:{redis_port},password={password}",
                        MLFS_PEER_TOKEN=secrets.token_hex(24))
        manifest = os.path.join(work, "fleet.json")
        sh(f"{MLFS} generate --id fleet --version v1 --url-prefix s3://fleet {model} > {manifest}", env=env)
        net.cap(args.cap_mbps)

        one = scenario(net, manifest, work, node_env, 1, False, size, expected_sha)
        without = scenario(net, manifest, work, node_env, args.nodes, False, size, expected_sha)
        with_fleet = scenario(net, manifest, work, node_env, args.nodes, True, size, expected_sha)
        results = {
            "machine": machine(), "size_bytes": size, "nodes": args.nodes, "origin_cap_MBps": args.cap_mbps,
            "one_node": one, "without_fleet": without, "with_fleet": with_fleet,
            "measures": {
                "fleet_storage_bytes_vs_model": with_fleet["storage_vs_model"],
                "no_fleet_storage_bytes_vs_model": without["storage_vs_model"],
                "fleet_all_nodes_time_vs_one_node": round(with_fleet["seconds"] / one["seconds"], 2),
                "no_fleet_all_nodes_time_vs_one_node": round(without["seconds"] / one["seconds"], 2),
                "one_node_seconds": one["seconds"],
                "all_exact": one["exact"] and without["exact"] and with_fleet["exact"],
            },
        }
    finally:
        for h in helpers:
            h.terminate()
            h.wait()
        net.close()
        shutil.rmtree(work, ignore_errors=True)
    write_result("fleet", results)
    print(f"machine: {results['machine']}")
    for k, v in results["measures"].items():
        print(f"{k:40} {v}")


if __name__ == "__main__":
    main()
