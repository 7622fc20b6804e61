"""Helpers shared by the bench scripts: shell calls, page-cache drops, /proc sampling, the local S3
server (uploads and a plain boto3 client: the reference every S3 figure is compared with), nginx
serving the same bytes unsigned, and the peers (rclone mount, s3fs) mounted on the same objects."""
import os
import re
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLFS = os.environ.get("MLFS_BIN", f"{ROOT}/artifacts/mlfs/mlfs")  # MLFS_BIN: another build, for before/after runs
CLK = os.sysconf("SC_CLK_TCK")
NGINX_PORT = 18070  # local-s3.sh takes 18080 and 18090-18093


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, text=True, capture_output=True, **kw).stdout


def apt_install(*packages):
    """Installs the Debian packages not yet installed (idempotent; scripts/ensure-packages.sh)."""
    subprocess.run([f"{ROOT}/scripts/ensure-packages.sh", *packages], check=True, stdout=subprocess.DEVNULL)


def ensure_mlfs():
    """The AOT build users run (scripts/build.sh), built if missing."""
    if not os.path.exists(MLFS):
        sh(f"{ROOT}/scripts/build.sh")
    return MLFS


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def dd(path):
    """MB/s of dd bs=1M reading the whole file."""
    out = subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M"], capture_output=True, text=True, check=True).stderr
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", out)
    return int(m.group(1)) / float(m.group(2)) / 1e6


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def children_cpu_seconds():
    """User + system CPU of this process's waited-for children so far (the ceiling clients run as one)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def sha256_cpu_s_per_gib(path):
    """CPU seconds per GiB of SHA-256 alone (hashlib: OpenSSL, as the daemon's .NET uses) over the file's
    bytes already in memory, 4 MiB at a time: the floor under any verifying reader's cost."""
    import hashlib
    chunk = 4 << 20
    with open(path, "rb") as f:
        data = f.read()
    view = memoryview(data)
    def one_pass():
        t = time.process_time()
        for o in range(0, len(data), chunk):
            hashlib.sha256(view[o:o + chunk]).digest()
        return time.process_time() - t
    # The first pass over freshly read memory costs 3-4 x the next ones on this guest (measured 2.1-2.6 vs
    # 0.6-0.7 s/GiB): the floor is hashing itself, so the best of three passes counts.
    return min(one_pass() for _ in range(3)) / (len(data) / (1 << 30))


def pid_serving(mp):
    """The pid of the FUSE daemon whose command line names mount point `mp` (peers that daemonize)."""
    out = subprocess.run(["pgrep", "-f", mp], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


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
        time.sleep(0.001)  # latency.py times mount-to-ready with this


def median(xs):
    return statistics.median(xs)


# ---- the local S3 server ---------------------------------------------------------------------

def local_s3_env():
    """Starts scripts/local-s3.sh (idempotent) and returns os.environ plus its AWS_* exports."""
    env = dict(os.environ)
    for line in sh(f"{ROOT}/scripts/local-s3.sh start").splitlines():
        key, value = line.replace("export ", "").split("=", 1)
        env[key] = value
    return env


def swift_put(env, bucket, key, path):
    """Uploads a file with Swift's own API (one PUT, no multipart limits): the same object S3 serves."""
    auth = subprocess.run(["curl", "-fsS", "-D", "-", "-o", "/dev/null", "-H", f"X-Auth-User: {env['AWS_ACCESS_KEY_ID']}",
                           "-H", f"X-Auth-Key: {env['AWS_SECRET_ACCESS_KEY']}", env["AWS_ENDPOINT_URL"] + "/auth/v1.0"],
                          capture_output=True, text=True, check=True).stdout
    headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in auth.splitlines() if ":" in l}
    token, storage = headers["x-auth-token"], headers["x-storage-url"]
    sh(f"curl -fsS -X PUT -H 'X-Auth-Token: {token}' {storage}/{bucket} -o /dev/null")
    sh(f"curl -fsS -X PUT -H 'X-Auth-Token: {token}' -T {path} {storage}/{bucket}/{key} -o /dev/null")


def run_boto(env, body, *args):
    """Runs `body` in Debian's python3 with `s3` bound to a path-style boto3 client of the local
    server (installing python3-boto3 if missing); returns its stdout."""
    apt_install("python3-boto3")
    preamble = f'''
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="{env['AWS_ENDPOINT_URL']}", aws_access_key_id="{env['AWS_ACCESS_KEY_ID']}",
    aws_secret_access_key="{env['AWS_SECRET_ACCESS_KEY']}", region_name="us-east-1",
    config=Config(s3={{"addressing_style": "path"}}, max_pool_connections=16))
'''
    return subprocess.run(["/usr/bin/python3", "-c", preamble + body, *map(str, args)],
                          capture_output=True, text=True, check=True).stdout


def ceiling_script(size, parts=16 << 20):
    """The ceiling both plain clients measure, given `open_range(offset, length)` returning a readable body:
    MB/s of 1, 4 and 8 parallel 16 MiB ranged GETs (no hashing, no writes); prints the best."""
    return f'''
import time, concurrent.futures as cf
def get(o):
    body, n = open_range(o, {parts}), 0
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


def s3_ceiling(env, bucket, key, size):
    """The ceiling from the S3 server with boto3."""
    body = f'''
def open_range(o, n):
    return s3.get_object(Bucket="{bucket}", Key="{key}", Range=f"bytes={{o}}-{{o+n-1}}")["Body"]
'''
    before = children_cpu_seconds()
    rate = int(run_boto(env, body + ceiling_script(size)).strip())
    return rate, (children_cpu_seconds() - before) / (3 * size / (1 << 30))  # it reads the object 3 times


# ---- nginx: the same bytes over plain, unsigned HTTP ------------------------------------------

class Nginx:
    """nginx on 127.0.0.1:NGINX_PORT serving `root` (byte ranges on), with its own config and pid file."""

    def __init__(self, root, work, limit_rate=None):
        """limit_rate (e.g. "100m" bytes/s) caps each connection, as S3 does (~100 MB/s per connection)."""
        apt_install("nginx-light")
        self.url = f"http://127.0.0.1:{NGINX_PORT}"
        self.dir = tempfile.mkdtemp(prefix="nginx-", dir=work)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""user root; daemon on; worker_processes 2;  # root: the bench work dir is private (0700)
 pid {self.dir}/nginx.pid; error_log {self.dir}/error.log;
events {{ worker_connections 256; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {self.dir}; proxy_temp_path {self.dir}; fastcgi_temp_path {self.dir}; uwsgi_temp_path {self.dir}; scgi_temp_path {self.dir};
  server {{ listen 127.0.0.1:{NGINX_PORT}; root {root}; {f"limit_rate {limit_rate};" if limit_rate else ""} }} }}
""")
        started = subprocess.run(["nginx", "-c", conf, "-p", self.dir], capture_output=True, text=True)
        if started.returncode != 0:
            raise SystemExit(f"nginx did not start (port {NGINX_PORT} taken by a leftover?): {started.stderr.strip()}")
        self.conf = conf

    def ceiling(self, path, size):
        """The ceiling from nginx with a plain HTTP client (http.client, a keep-alive connection per thread)."""
        body = f'''
import http.client, threading
local = threading.local()
def open_range(o, n):
    if not hasattr(local, "c"): local.c = http.client.HTTPConnection("127.0.0.1", {NGINX_PORT})
    local.c.request("GET", "{path}", headers={{"Range": f"bytes={{o}}-{{o+n-1}}"}})
    return local.c.getresponse()
''' + ceiling_script(size)
        before = children_cpu_seconds()
        rate = int(subprocess.run(["/usr/bin/python3", "-c", body], capture_output=True, text=True, check=True).stdout.strip())
        return rate, (children_cpu_seconds() - before) / (3 * size / (1 << 30))  # it reads the object 3 times

    def stop(self):
        subprocess.run(["nginx", "-c", self.conf, "-p", self.dir, "-s", "stop"], capture_output=True)


# ---- mounts: mlfs and the peers ---------------------------------------------------------------

class Mounts:
    """Starts mounts in `work` and unmounts every one (lazily) on close, whatever happened."""

    def __init__(self, work, env):
        self.work, self.env, self.live, self.log = work, env, [], None

    def mlfs(self, manifest, cache, *extra):
        mp = tempfile.mkdtemp(prefix="mnt-", dir=self.work)
        ready = os.path.join(self.work, f"ready-{time.time_ns()}")
        self.log = ready + ".log"  # the newest mount's output, for a failing run's error message
        with open(self.log, "w") as log:
            proc = subprocess.Popen([MLFS, "mount", "--manifest", manifest, "--cache-dir", cache, "--ready-file", ready, *extra, mp],
                                    env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.live.append((proc, mp))
        wait_for(ready, proc)
        return proc, mp

    def peer(self, name, bucket, probe):
        """rclone mount (vfs cache off / full) or s3fs (with or without use_cache) of `bucket`, with an empty cache."""
        apt_install("rclone", "s3fs", "fuse3")  # fuse3: fusermount3, which unmounts them
        env = self.env
        mp = tempfile.mkdtemp(prefix=f"{name}-", dir=self.work)
        cache = tempfile.mkdtemp(prefix=f"{name}-cache-", dir=self.work)
        rclone_env = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}  # rclone fails with it set
        rclone_env.update(RCLONE_CONFIG_S_TYPE="s3", RCLONE_CONFIG_S_PROVIDER="Other", RCLONE_CONFIG_S_ENDPOINT=env["AWS_ENDPOINT_URL"],
                          RCLONE_CONFIG_S_ACCESS_KEY_ID=env["AWS_ACCESS_KEY_ID"], RCLONE_CONFIG_S_SECRET_ACCESS_KEY=env["AWS_SECRET_ACCESS_KEY"],
                          RCLONE_CONFIG_S_REGION="us-east-1", RCLONE_CONFIG_S_FORCE_PATH_STYLE="true")
        s3fs_env = dict(env, AWSACCESSKEYID=env["AWS_ACCESS_KEY_ID"], AWSSECRETACCESSKEY=env["AWS_SECRET_ACCESS_KEY"])
        s3fs_opts = f"url={env['AWS_ENDPOINT_URL']},use_path_request_style,ro,endpoint=us-east-1"
        argv, penv = {
            "rclone_vfs_off": (["rclone", "mount", f"s:{bucket}", mp, "--read-only", "--vfs-cache-mode", "off", "--daemon"], rclone_env),
            "rclone_vfs_full": (["rclone", "mount", f"s:{bucket}", mp, "--read-only", "--vfs-cache-mode", "full", "--cache-dir", cache, "--daemon"], rclone_env),
            "s3fs": (["s3fs", bucket, mp, "-o", s3fs_opts], s3fs_env),
            "s3fs_use_cache": (["s3fs", bucket, mp, "-o", f"{s3fs_opts},use_cache={cache}"], s3fs_env),
        }[name]
        subprocess.run(argv, env=penv, check=True, capture_output=True)
        self.live.append((None, mp))
        for _ in range(100):
            if os.path.exists(os.path.join(mp, probe)):
                break
            time.sleep(0.1)
        return mp

    def stop(self, mp):
        for i, (proc, m) in enumerate(self.live):
            if m == mp:
                if proc:
                    proc.terminate()
                    proc.wait()
                else:
                    subprocess.run(["fusermount3", "-u", mp], capture_output=True)
                del self.live[i]
                return

    def last_log(self):
        return open(self.log).read()[-3000:] if self.log and os.path.exists(self.log) else ""

    def close(self):
        for proc, mp in self.live:
            if proc:
                proc.kill()
            subprocess.run(["umount", "-l", mp], capture_output=True)
        self.live.clear()


PEERS = ("s3fs", "s3fs_use_cache", "rclone_vfs_off", "rclone_vfs_full")


def machine():
    return {"cpus": os.cpu_count(), "kernel": os.uname().release,
            "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
            "memory_GiB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)),
            "os": sh(". /etc/os-release; echo $PRETTY_NAME").strip()}


def write_result(name, data):
    os.makedirs(f"{ROOT}/bench/results", exist_ok=True)
    with open(f"{ROOT}/bench/results/{name}.json", "w") as f:
        import json
        json.dump(data, f, indent=2)
