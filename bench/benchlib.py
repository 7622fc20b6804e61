"""Helpers shared by the bench scripts: shell calls, the local S3 server, and a plain boto3 client
(the reference "plain client" every S3 figure is compared with)."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, text=True, capture_output=True, **kw).stdout


def local_s3_env():
    """Starts scripts/local-s3.sh (idempotent) and returns os.environ plus its AWS_* exports."""
    env = dict(os.environ)
    for line in sh(f"{ROOT}/scripts/local-s3.sh start").splitlines():
        key, value = line.replace("export ", "").split("=", 1)
        env[key] = value
    return env


def run_boto(env, body, *args):
    """Runs `body` in Debian's python3 with `s3` bound to a path-style boto3 client of the local
    server (installing python3-boto3 if missing); returns its stdout."""
    if subprocess.run(["/usr/bin/python3", "-c", "import boto3"], capture_output=True).returncode != 0:
        sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-boto3 >/dev/null")
    preamble = f'''
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="{env['AWS_ENDPOINT_URL']}", aws_access_key_id="{env['AWS_ACCESS_KEY_ID']}",
    aws_secret_access_key="{env['AWS_SECRET_ACCESS_KEY']}", region_name="us-east-1",
    config=Config(s3={{"addressing_style": "path"}}, max_pool_connections=16))
'''
    return subprocess.run(["/usr/bin/python3", "-c", preamble + body, *map(str, args)],
                          capture_output=True, text=True, check=True).stdout
