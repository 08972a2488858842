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

apt_install() {  # apt_install PKG...: refresh the lists and install, as one step to retry.
  # apt 2.6 `update` exits 0 when fetches fail ("W: Failed to fetch"), so check its output
  # and that every package has a candidate before installing.
  local out pkg
  out=$(apt_get update 2>&1); echo "$out"
  if [[ $out =~ (^|$'\n')(W|E):\ (Failed\ to\ fetch|Some\ index\ files\ failed) ]]; then
    echo "apt update could not fetch every list"; return 1
  fi
  for pkg in "$@"; do  # (not a pipe into grep -q: under pipefail its SIGPIPE would fail the check)
    [[ $(apt-cache policy "$pkg") =~ Candidate:\ [^\(] ]] || { echo "no candidate for $pkg"; return 1; }
  done
  apt_get install -y --no-install-recommends -o Dpkg::Options::=--force-confold "$@"
}

egress() {  # a TCP connection to the package mirror, not just a DNS answer
  timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$APT_MIRROR_HOST" "$HTTP_PORT" 2>/dev/null
}
