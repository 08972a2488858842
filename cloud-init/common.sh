# Sourced by the backup-mx scripts.
export DEBIAN_FRONTEND=noninteractive

step() { echo "== backup-mx: $* ($(date -Is))"; }

retry() {  # retry N CMD...: the OCI route and the mirrors can lag first boot
  local n=$1 i; shift
  for i in $(seq 1 "$n"); do "$@" && return 0; echo "attempt $i/$n failed: $*"; sleep $((i * 10)); done
  return 1
}

apt_get() {  # wait for unattended-upgrades or another apt rather than failing on its lock
  apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 -q "$@"
}
