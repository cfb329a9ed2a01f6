#!/usr/bin/env bash
# Stop the SLURM started by start_slurm.sh: cancel its jobs, then end exactly the daemons whose pidfiles
# it wrote (checked by process name). Idempotent. PURGE=1 also removes $NEUS_SLURM_BASE and the
# /etc/slurm symlinks that point into it (the apt packages stay installed).
set -uo pipefail
BASE=${NEUS_SLURM_BASE:-/tmp/neus-stage-slurm}

stop_pid() {  # pidfile process-name
  local pf=$1 name=$2 pid
  [[ -s $pf ]] || return 0
  pid=$(cat "$pf")
  if kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
    echo "[stop_slurm] stopping $name (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "[stop_slurm] $name still running: SIGKILL"; kill -KILL "$pid"; fi
  fi
  rm -f "$pf"
}

if [[ -s $BASE/slurmctld.pid ]] && kill -0 "$(cat "$BASE/slurmctld.pid")" 2>/dev/null; then
  jobs=$(timeout 10 squeue -h -t PD,R,CG,S -o %i 2>/dev/null || true)
  if [[ -n $jobs ]]; then
    echo "[stop_slurm] cancelling jobs: $(echo $jobs)"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null || true
    for _ in $(seq 1 100); do [[ -z $(timeout 5 squeue -h -t R,CG -o %i 2>/dev/null) ]] && break; sleep 0.2; done
  fi
fi
stop_pid "$BASE/slurmd.pid" slurmd
stop_pid "$BASE/slurmctld.pid" slurmctld
stop_pid "$BASE/munge/munged.pid" munged

if [[ ${PURGE:-0} == 1 ]]; then
  for f in slurm.conf gres.conf; do
    [[ -L /etc/slurm/$f && $(readlink "/etc/slurm/$f") == "$BASE/etc/$f" ]] && rm -f "/etc/slurm/$f"
  done
  rm -rf "$BASE"
fi
echo "[stop_slurm] stopped"
