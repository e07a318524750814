#!/usr/bin/env bash
# Start a real single-node SLURM (munge, MariaDB, slurmdbd, slurmctld, slurmd), PostgreSQL and an MLflow
# server on this machine (Debian 12, root, no systemd), then write $STATE/env.sh for the tests.
# Idempotent: a daemon already running is left alone. Stop everything with .ci/services-down.sh.
set -euo pipefail
STATE=${ASYM_CI_STATE:-/tmp/asym-ci}
MLFLOW_PORT=${ASYM_MLFLOW_PORT:-5055}
mkdir -p "$STATE"
HOST=$(hostname -s)
log() { echo "[services-up $(date +%T)] $*"; }
alive() {  # a PID file naming a live process (PID 1 here reaps orphans late: zombies count as dead)
  local pid; pid=$(cat "$1" 2>/dev/null) || return 1
  [[ -n $pid && -r /proc/$pid/status ]] && ! grep -q '^State:.*Z' "/proc/$pid/status"; }
wait_for() { local what=$1 tries=$2; shift 2
  for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "services-up: $what did not come up" >&2; exit 1; }

if ! command -v slurmctld >/dev/null || ! command -v pg_ctlcluster >/dev/null || ! command -v mariadbd >/dev/null; then
  log "installing slurm-wlm munge slurmdbd mariadb-server postgresql chromium"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    slurm-wlm munge slurmdbd mariadb-server postgresql chromium >/dev/null
fi

# munge
install -d -o munge -g munge /run/munge /var/log/munge
[[ -f /etc/munge/munge.key ]] || { runuser -u munge -- /usr/sbin/mungekey -c 2>/dev/null || /usr/sbin/create-munge-key -f; }
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged"; runuser -u munge -- /usr/sbin/munged
  wait_for munge 40 bash -c 'munge -n | unmunge'
fi

# MariaDB for slurmdbd (submitit needs sacct to see jobs killed outside Python)
install -d -o mysql -g mysql /run/mysqld /var/log/mysql
if ! mariadb -e 'select 1' >/dev/null 2>&1; then
  log "mariadbd"
  setsid mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
    --pid-file=/run/mysqld/mysqld.pid --bind-address=127.0.0.1 --log-error=/var/log/mysql/ci-error.log \
    </dev/null >/dev/null 2>&1 &
  wait_for MariaDB 60 mariadb -e 'select 1'
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# SLURM configuration
install -d -o slurm -g slurm /run/slurm /var/spool/slurmctld /var/log/slurm
install -d /var/spool/slurmd /etc/slurm
NCPU=$(nproc)
MEM=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=$HOST
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=$HOST CPUs=$NCPU RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmdbpass
StorageLoc=slurm_acct_db
CONF
chown slurm:slurm /etc/slurm/slurmdbd.conf && chmod 600 /etc/slurm/slurmdbd.conf

if ! alive /run/slurm/slurmdbd.pid; then
  log "slurmdbd"; /usr/sbin/slurmdbd
  wait_for "slurmdbd (port 6819)" 60 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6819'
fi
if ! alive /run/slurm/slurmctld.pid; then
  log "slurmctld"; /usr/sbin/slurmctld
  wait_for slurmctld 60 bash -c 'scontrol ping | grep -q UP'
fi
if ! alive /run/slurm/slurmd.pid; then
  log "slurmd"; /usr/sbin/slurmd
fi
wait_for "an idle SLURM node" 60 bash -c '[[ $(sinfo -h -o %T) == idle* ]]'

# PostgreSQL + the MLflow server (what a cluster should use; SQLite on NFS is unsafe)
PGVER=$(ls /etc/postgresql | sort -n | tail -1)
pg_ctlcluster "$PGVER" main status >/dev/null 2>&1 || { log "postgresql $PGVER"; pg_ctlcluster "$PGVER" main start; }
wait_for PostgreSQL 60 runuser -u postgres -- psql -qtAc 'select 1'
runuser -u postgres -- psql -qtAc "select 1 from pg_roles where rolname='asym'" | grep -q 1 ||
  runuser -u postgres -- psql -qc "create role asym login password 'asym'"
runuser -u postgres -- psql -qtAc "select 1 from pg_database where datname='mlflow'" | grep -q 1 ||
  runuser -u postgres -- psql -qc "create database mlflow owner asym"

MLFLOW_URI=http://127.0.0.1:$MLFLOW_PORT
BACKEND=postgresql+psycopg2://asym:asym@127.0.0.1:5432/mlflow
PY=${PYTHON:-python}
# MLflow's own authentication (the basic-auth app): an admin whose password is generated for each fresh
# server and never printed, a writer with EDIT on the study's experiment (the tests run through it) and a
# reader with READ only. Secrets live in $AUTH (mode 700, files mode 600); env.sh reads them from there.
AUTH=$STATE/auth
if ! curl -sf "$MLFLOW_URI/health" >/dev/null 2>&1; then
  log "mlflow server (basic-auth) on $MLFLOW_URI"
  rm -rf "$AUTH"; install -d -m 700 "$AUTH"; mkdir -p "$STATE/mlartifacts"
  (umask 077
   for who in admin asym-writer asym-reader flask-secret-key; do "$PY" -c 'import secrets; print(secrets.token_urlsafe(24))' > "$AUTH/$who.password"; done
   cat > "$AUTH/basic_auth.ini" <<INI
[mlflow]
default_permission = READ
database_uri = sqlite:///$AUTH/basic_auth.db
admin_username = admin
admin_password = $(cat "$AUTH/admin.password")
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 300
INI
  )
  MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$AUTH/flask-secret-key.password") \
  MLFLOW_AUTH_CONFIG_PATH=$AUTH/basic_auth.ini MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$PY" -m mlflow server \
    --app-name basic-auth --backend-store-uri "$BACKEND" \
    --default-artifact-root "$STATE/mlartifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    --allowed-hosts "localhost,localhost:*,127.0.0.1,127.0.0.1:*,$HOST,$HOST:*" \
    </dev/null >"$STATE/mlflow.log" 2>&1 &
  echo $! > "$STATE/mlflow.pid"
  wait_for "the MLflow server (see $STATE/mlflow.log)" 120 curl -sf "$MLFLOW_URI/health"
  MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=$(cat "$AUTH/admin.password") \
    "$PY" "$(dirname "$0")/mlflow-users.py" "$MLFLOW_URI" \
    "$("$PY" -c 'from asym.tracking import DEFAULT_EXPERIMENT; print(DEFAULT_EXPERIMENT)')" "$AUTH"
fi

cat > "$STATE/env.sh" <<ENV
export ASYM_TEST_SLURM=1
export ASYM_TEST_MLFLOW_URI=$MLFLOW_URI
export ASYM_TEST_MLFLOW_BACKEND=$BACKEND
export ASYM_TEST_MLFLOW_AUTH=$AUTH
export MLFLOW_TRACKING_USERNAME=asym-writer
export MLFLOW_TRACKING_PASSWORD="\$(cat $AUTH/asym-writer.password)"
ENV
chmod 600 "$STATE/env.sh"
log "ready: SLURM partition debug on $HOST, MLflow $MLFLOW_URI with basic-auth (source $STATE/env.sh)"
