#!/usr/bin/env bash
# Stop what services-up.sh started, in reverse order. Safe to run when nothing is up.
STATE=${ASYM_CI_STATE:-/tmp/asym-ci}
stop_pidfile() {  # TERM, then wait until the process is gone or a zombie
  local pid; pid=$(cat "$1" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 40); do
    if [[ ! -r /proc/$pid/status ]] || grep -q '^State:.*Z' "/proc/$pid/status"; then return 0; fi
    sleep 0.25
  done; }
if [[ -f $STATE/mlflow.pid ]]; then
  kill -- -"$(cat "$STATE/mlflow.pid")" 2>/dev/null; rm -f "$STATE/mlflow.pid"
fi
PGVER=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
[[ -n $PGVER ]] && pg_ctlcluster "$PGVER" main stop 2>/dev/null
stop_pidfile /run/slurm/slurmd.pid
stop_pidfile /run/slurm/slurmctld.pid
stop_pidfile /run/slurm/slurmdbd.pid
stop_pidfile /run/mysqld/mysqld.pid
pkill -x munged 2>/dev/null
rm -f "$STATE/env.sh"; rm -rf "$STATE/auth"   # the generated passwords go with the server
echo "[services-down] stopped"
