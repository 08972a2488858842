#!/bin/bash
# accountMode free (backup-mx-keepalive.service, idle scheduling priority): keep one vCPU
# busy for KEEPALIVE_BUSY_S seconds in every KEEPALIVE_PERIOD_S, so Oracle never sees the
# relay as idle (7-day CPU p95 under 20 %) and reclaims it with its queue. SCHED_IDLE: any
# other runnable task, Postfix first, takes the CPU from it at once.
set -uo pipefail
. "${BACKUP_MX_ENV:-/etc/backup-mx/backup-mx.env}"
trap 'exit 0' TERM INT
while :; do
  end=$((SECONDS + KEEPALIVE_BUSY_S))
  while [ "$SECONDS" -lt "$end" ]; do :; done
  sleep $((KEEPALIVE_PERIOD_S - KEEPALIVE_BUSY_S)) & wait $!
done
