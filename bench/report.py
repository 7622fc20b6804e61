#!/usr/bin/env python3
"""Gathers bench/results/*.json into one report: a table on stdout, results/report.json, results/report.svg.

  python3 bench/report.py

Every row is a ratio of mlfs against its reference measured in the same run; rows with a target say
whether it is met. Rows whose source file is missing are skipped (run bench/run.sh for all of them).
"""
import csv, datetime, glob, json, os

from benchlib import ROOT, machine

RESULTS = f"{ROOT}/bench/results"


def load(name):
    path = f"{RESULTS}/{name}.json"
    return json.load(open(path)) if os.path.exists(path) else None


def rows():
    """(group, measure, mlfs, reference, ratio, target) where target is (">=" | "<=", value) or None."""
    out = []
    t = load("fuse-throughput")
    if t:
        m = t["measures"]
        best_peer_name = max((k for k in m if k.startswith("peer_") and k.endswith("_cold_MBps")), key=lambda k: m[k])
        best_peer = best_peer_name[len("peer_"):-len("_cold_MBps")]
        out += [
            ("throughput", "cold read, local S3 server", f"{m['cold_s3_MBps']} MB/s", f"ceiling {m['s3_ceiling_MBps']} MB/s (boto3, parallel ranged GETs)", m["cold_s3_vs_ceiling"], (">=", 0.9)),
            ("throughput", "cold read, nginx (unsigned URLs)", f"{m['cold_nginx_MBps']} MB/s", f"ceiling {m['nginx_ceiling_MBps']} MB/s (http.client, parallel ranged GETs)", m["cold_nginx_vs_ceiling"], (">=", 0.6)),
            ("throughput", "cold read vs the best peer", f"{m['cold_s3_MBps']} MB/s", f"{best_peer} {m[best_peer_name]} MB/s (s3fs {m['peer_s3fs_cold_MBps']}, s3fs use_cache {m['peer_s3fs_use_cache_cold_MBps']}, rclone off {m['peer_rclone_vfs_off_cold_MBps']}, full {m['peer_rclone_vfs_full_cold_MBps']})", m["cold_s3_vs_best_peer"], (">=", 1.5)),
            ("throughput", "warm read, passthrough (page cache dropped)", f"{m['warm_passthrough_MBps']} MB/s", f"cache file read directly {m['cache_file_direct_cold_MBps']} MB/s", m["warm_passthrough_vs_direct"], (">=", 0.9)),
            ("throughput", "warm read, --no-passthrough", f"{m['warm_daemon_read_MBps']} MB/s", f"cache file read directly {m['cache_file_direct_cold_MBps']} MB/s", m["warm_daemon_read_vs_direct"], (">=", 0.9)),
            ("throughput", "in-memory file through the FUSE layer", f"{m['memory_fuse_MBps']} MB/s", f"local file from page cache {m['local_file_page_cache_MBps']} MB/s", m["memory_fuse_vs_page_cache_read"], (">=", 0.5)),
            ("resources", f"daemon peak RSS, cold stream of {t['size_bytes'] >> 20} MiB", f"{m['cold_s3_daemon_peak_rss_MiB']} MiB", "bound 256 MiB", round(m["cold_s3_daemon_peak_rss_MiB"] / 256, 3), ("<=", 1.0)),
            ("resources", "daemon CPU per GiB, cold (S3 / nginx)", f"{m['cold_s3_daemon_cpu_s_per_GiB']} / {m['cold_nginx_daemon_cpu_s_per_GiB']} s", "", None, None),
        ]
        if "sha256_only_cpu_s_per_GiB" in m:
            peer_cpu = ", ".join(f"{k[len('peer_'):-len('_cold_cpu_s_per_GiB')]} {m[k]}" for k in m if k.startswith("peer_") and k.endswith("_cold_cpu_s_per_GiB"))
            out += [
                ("resources", "daemon CPU per GiB, cold from nginx, vs SHA-256 alone", f"{m['cold_nginx_daemon_cpu_s_per_GiB']} s", f"SHA-256 alone {m['sha256_only_cpu_s_per_GiB']} s" + (f"; BLAKE3 alone (the daemon's chunk hash) {m['blake3_only_cpu_s_per_GiB']} s" if "blake3_only_cpu_s_per_GiB" in m else ""), m["cold_nginx_daemon_cpu_vs_sha256_only"], ("<=", 1.6)),
                ("resources", "daemon CPU per GiB, cold from the S3 server, vs s3fs's on the same read", f"{m['cold_s3_daemon_cpu_s_per_GiB']} s",
                 f"s3fs {m['peer_s3fs_cold_cpu_s_per_GiB']} s", round(m["cold_s3_daemon_cpu_s_per_GiB"] / m["peer_s3fs_cold_cpu_s_per_GiB"], 2), ("<=", 0.8)),
                ("resources", "daemon CPU per GiB, cold from the S3 server, vs SHA-256 alone", f"{m['cold_s3_daemon_cpu_s_per_GiB']} s", f"SHA-256 alone {m['sha256_only_cpu_s_per_GiB']} s", m["cold_s3_daemon_cpu_vs_sha256_only"], None),
                ("resources", "CPU per GiB, cold: the others (no hashing)", f"mlfs {m['cold_s3_daemon_cpu_s_per_GiB']} s", f"{peer_cpu}; ceiling clients boto3 {m['s3_ceiling_client_cpu_s_per_GiB']}, http.client {m['nginx_ceiling_client_cpu_s_per_GiB']}", None, None),
            ]
        out += [
            ("resources", "daemon CPU per GiB, warm (passthrough / daemon reads)", f"{m['warm_passthrough_daemon_cpu_s_per_GiB']} / {m['warm_daemon_read_cpu_s_per_GiB']} s", "", None, None),
        ]
    net = load("network")
    if net:
        setup = f"S3 behind {2 * net['delay_ms_each_way']} ms round trips"
        cap = net["caps_per_connection"][len(net["caps_per_connection"]) // 2]
        seq = net.get("sequential", {})
        if cap in seq and "mlfs" in seq[cap]:
            r = seq[cap]
            out.append(("network", f"sequential, {setup}, {cap.rstrip('m')} MB/s per connection", f"{r['mlfs']['MBps']} MB/s (cores busy {r['mlfs']['cores_busy_share']})",
                        f"ceiling {r['ceiling_MBps']} MB/s (boto3, best of 1/4/8/16 parallel GETs)", r["mlfs"]["vs_ceiling"], None))
        if "link_capped" in seq:
            r = seq["link_capped"]
            out.append(("network", f"sequential, {setup}, link capped", f"{r['mlfs']['MBps']} MB/s", f"ceiling {r['ceiling_MBps']} MB/s", r["mlfs"]["vs_ceiling"], (">=", 0.95)))
        for load_name, label in (("safetensors", "safetensors mmap load"), ("gguf", "GGUF mmap load"), ("torch_load", "torch.load")):
            r = net.get(load_name)
            if not r or "mlfs" not in r:
                continue
            m = r["mlfs"]
            split = m.get("cpu_s", {})
            cpu = f"; CPU s: daemon {split.get('daemon')}, loader {split.get('loader')}, S3 side {split.get('others')}" if split else ""
            out.append(("network", f"{label}, {setup}", f"{m['s']} s (link idle {m['idle_share']}, cores busy {m['cores_busy_share']}{cpu})",
                        f"local {r['local_s']} s + transfer at the ceiling {r['transfer_at_ceiling_s']} s", m["vs_local_plus_transfer"],
                        ("<=", 0.9) if load_name != "torch_load" else None))
            if "mlfs_vs_best_peer" in r:
                peers = ", ".join(f"{p} {r[p]['s']} s" for p in ("s3fs", "rclone") if p in r)
                out.append(("network", f"{label} vs the best peer", f"{m['s']} s", peers, r["mlfs_vs_best_peer"], ("<=", 0.75)))
        if "random_4k" in net and "mlfs" in net["random_4k"]:
            r = net["random_4k"]
            out.append(("network", f"first byte, 4 KiB at a cold offset, {setup}", f"{r['mlfs']['first_byte_ms']} ms",
                        f"one 4 KiB ranged GET {r['one_4KiB_GET_ms']} ms", r["mlfs"]["vs_one_GET"], ("<=", 1.2)))
        if "ranks" in net and "mlfs" in net["ranks"]:
            r = net["ranks"]["mlfs"]
            out.append(("network", "4 ranks reading disjoint quarters: bytes from S3 / bytes needed", f"{r['MBps']} MB/s", "",
                        r["bytes_from_s3_vs_needed"], ("<=", 1.05)))
    fl = load("fleet")
    if fl:
        m, w, wo, one = fl["measures"], fl["with_fleet"], fl["without_fleet"], fl["one_node"]
        n, cap = fl["nodes"], fl["origin_cap_MBps"]
        out += [
            ("fleet", f"{n} nodes read {fl['size_bytes'] >> 20} MiB at once: bytes from storage / model", f"{m['fleet_storage_bytes_vs_model']} x",
             f"without fleet mode {m['no_fleet_storage_bytes_vs_model']} x", m["fleet_storage_bytes_vs_model"], ("<=", 1.1)),
            ("fleet", f"{n} nodes, origin capped at {cap:g} MB/s: time for all / one node alone", f"{w['seconds']} s (x {m['fleet_all_nodes_time_vs_one_node']})",
             f"one node {one['seconds']} s; without fleet mode {wo['seconds']} s (x {m['no_fleet_all_nodes_time_vs_one_node']})", m["fleet_all_nodes_time_vs_one_node"], ("<=", 1.5)),
        ]
    lat = load("latency")
    if lat:
        out += [
            ("latency", "first byte: 4 KiB at a cold offset, loopback (defaults: 1 MiB chunks)", f"{lat['first_byte_ms']} ms", f"one 4 KiB ranged GET {lat['one_4KiB_ranged_GET_ms']} ms", lat["first_byte_vs_one_GET"], ("<=", 1.5)),
            ("latency", "first byte, --demand-parts 4, nginx capped at 100 MB/s per connection", f"{lat['first_byte_capped_nginx_4_parts_ms']} ms", f"--demand-parts 1 (one stream) {lat['first_byte_capped_nginx_1_part_ms']} ms", lat["first_byte_4_parts_vs_1_part"], None),
            ("latency", "mount to ready (config + tokenizer prefetched)", f"{lat['mount_to_ready_ms']} ms", f"plain GETs of those files {lat['plain_GETs_of_prefetch_files_ms']} ms", round(lat["mount_to_ready_ms"] / lat["plain_GETs_of_prefetch_files_ms"], 2), None),
            ("latency", "listing a 100-file folder", f"{lat['listing_100_files_ms']} ms", f"local folder {lat['listing_local_folder_ms']} ms", round(lat["listing_100_files_ms"] / lat["listing_local_folder_ms"], 1), None),
        ]
        if "switch_ms" in lat:
            out += [
                ("switch", "hot version switch", f"{lat['switch_ms']} ms", f"mount to ready {lat['mount_to_ready_ms']} ms", lat["switch_vs_mount_to_ready"], None),
                ("switch", "bytes fetched to read all of v2 after the switch", f"{lat['switch_bytes_refetched'] / 2**20:.1f} MiB", f"bytes changed {lat['switch_bytes_changed'] / 2**20:.1f} MiB", lat["switch_refetched_vs_changed"], ("<=", 1.1)),
            ]
    ml = load("model-load")
    if ml:
        for loader, label in (("torch_load", "torch.load"), ("safetensors", "safetensors-style load")):
            r = ml.get(loader)
            if not r:
                continue
            size = r["file_bytes"] / 2**20
            out += [
                ("model load", f"{label} of {size:.0f} MiB, mlfs cold", f"{r['mlfs_cold_s']} s", f"local disk {r['local_s']} s + ceiling transfer {r['ceiling_transfer_s']} s", r["mlfs_cold_vs_local_plus_transfer"], ("<=", 1.2)),
                ("model load", f"{label}, mlfs warm (restarted on a full cache)", f"{r['mlfs_warm_s']} s", f"local disk {r['local_s']} s", r["mlfs_warm_vs_local"], ("<=", 1.11)),
                ("model load", f"{label}, mlfs cold vs the faster peer", f"{r['mlfs_cold_s']} s", f"s3fs {r['s3fs_s']} s, rclone full {r['rclone_vfs_full_s']} s", r["mlfs_cold_vs_best_peer"], None),
            ]
    gen = load("generate-speed")
    if gen:
        out.append(("generate", f"mlfs generate, {gen['size_MiB']} MiB (file + chunk hashes)", f"{gen['generate_MBps']} MB/s", f"sha256sum {gen['sha256sum_MBps']} MB/s", gen["generate_vs_sha256sum"], None))
    for path in sorted(glob.glob(f"{RESULTS}/micro/results/*-report.csv")):
        for b in csv.DictReader(open(path)):
            name = b.get("Method", "?") + (f" ({b['Params']})" if b.get("Params") else "")
            out.append(("micro", name, b.get("Mean", "?"), f"allocated {b.get('Allocated', '?')}", None, None))
    return out


def met(ratio, target):
    if target is None or ratio is None:
        return None
    op, value = target
    return ratio >= value if op == ">=" else ratio <= value


def table(report):
    lines = ["| group | measure | mlfs | reference (same run) | ratio | target | met |", "|---|---|---:|---|---:|---|:---:|"]
    for r in report["rows"]:
        target = f"{r['target'][0]} {r['target'][1]}" if r["target"] else ""
        ok = {True: "yes", False: "**no**", None: ""}[r["met"]]
        lines.append(f"| {r['group']} | {r['measure']} | {r['mlfs']} | {r['reference']} | {'' if r['ratio'] is None else r['ratio']} | {target} | {ok} |")
    return "\n".join(lines)


def svg(report, path):
    """A bar per ratio that has a target: the bar is the ratio, the tick the target; green met, red missed."""
    rows = [r for r in report["rows"] if r["target"] and r["ratio"] is not None]
    left, width, bar_h, gap, top = 470, 420, 18, 10, 50
    scale = width / max(2.0, max(max(r["ratio"], r["target"][1]) for r in rows) * 1.05)
    height = top + len(rows) * (bar_h + gap) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{height}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">mlfs vs its references (ratios, same run) — {report["date"]}</text>',
           f'<text x="10" y="38" fill="#555">{report["machine"]["cpus"]} cores {report["machine"]["cpu"]}, {report["machine"]["os"]}, Linux {report["machine"]["kernel"]}</text>']
    for i, r in enumerate(rows):
        y = top + i * (bar_h + gap)
        color = "#2e7d32" if r["met"] else "#c62828"
        w = r["ratio"] * scale
        tx = left + r["target"][1] * scale
        label = f"{r['measure']} ({r['target'][0]} {r['target'][1]})"
        out.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(label[:78])}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        out.append(f'<line x1="{tx:.1f}" y1="{y - 3}" x2="{tx:.1f}" y2="{y + bar_h + 3}" stroke="black" stroke-width="2"/>')
        out.append(f'<text x="{max(left + w, tx) + 5:.1f}" y="{y + 13}">{r["ratio"]}</text>')
    y = top + len(rows) * (bar_h + gap) + 10
    out.append(f'<line x1="{left}" y1="{top - 5}" x2="{left}" y2="{y}" stroke="#999"/>')
    out.append(f'<text x="{left}" y="{y + 16}" fill="#555">bar = ratio, black tick = target; green = met, red = missed</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main():
    report = {"date": datetime.date.today().isoformat(), "machine": machine(),
              "rows": [dict(group=g, measure=m, mlfs=v, reference=ref, ratio=ratio, target=list(t) if t else None, met=met(ratio, t))
                       for g, m, v, ref, ratio, t in rows()]}
    with open(f"{RESULTS}/report.json", "w") as f:
        json.dump(report, f, indent=2)
    svg(report, f"{RESULTS}/report.svg")
    m = report["machine"]
    print(f"Machine: {m['cpus']} cores {m['cpu']}, {m['memory_GiB']} GiB, {m['os']}, Linux {m['kernel']}; {report['date']}\n")
    print(table(report))
    missed = [r["measure"] for r in report["rows"] if r["met"] is False]
    print(f"\ntargets met: {sum(1 for r in report['rows'] if r['met'])} of {sum(1 for r in report['rows'] if r['met'] is not None)}"
          + (f"; missed: {'; '.join(missed)}" if missed else ""))
    print(f"wrote {RESULTS}/report.json and {RESULTS}/report.svg")


if __name__ == "__main__":
    main()
