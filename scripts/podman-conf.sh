# Sourced: makes Debian 12's podman (4.3) run rootful containers on hosts like ours. Two settings
# (measured, shared/DESIGN.md): the runc runtime, because crun fails with "cgroups in hybrid mode not
# supported"; and no default ulimits, because both runtimes otherwise fail on setrlimit RLIMIT_NOFILE.
# A CONTAINERS_CONF the caller set is kept.
if [[ -z ${CONTAINERS_CONF:-} ]]; then
  _mlfs_conf_dir="${XDG_RUNTIME_DIR:-${HOME:-/root}/.cache}/mlfs-podman"
  mkdir -p -m 700 "$_mlfs_conf_dir"
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' >"$_mlfs_conf_dir/containers.conf"
  export CONTAINERS_CONF="$_mlfs_conf_dir/containers.conf"
  unset _mlfs_conf_dir
fi
