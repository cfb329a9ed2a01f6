#!/usr/bin/env bash
# Start a real single-node SLURM for tests/test_slurm.py (Debian/Ubuntu, run as root, no systemd needed).
#
#   tests/slurm_harness/start_slurm.sh        # idempotent: a no-op (apart from a readiness wait) when up
#   tests/slurm_harness/stop_slurm.sh         # stops exactly the daemons this script started
#
# What it sets up:
# - munge + slurmctld + slurmd + slurm-client from apt when missing (package scripts may not start daemons);
# - one node (this machine, 127.0.0.1) with its real CPUs and 90 % of its memory (a node that claims
#   more than slurmd measures registers as INVAL);
# - partitions `cpu` (default) and `gpu`, the names profiles/slurm/config.yaml uses;
# - $FAKE_GPUS fake GPUs: gres/gpu devices that are symlinks to /dev/null, so `--gpus=1` is scheduled,
#   recorded (AllocTRES gres/gpu=1) and gives the job CUDA_VISIBLE_DEVICES, without any GPU present;
# - no accounting daemon: squeue answers job status, so MinJobAge keeps finished jobs visible for
#   $MIN_JOB_AGE s (>= 120, the plugin's 3 x 40 s first status check) and the job completion log
#   ($BASE/log/jobcomp.log) records every finished job (partition, TRES, exit code);
# - slurm.conf/gres.conf written under $BASE and symlinked to /etc/slurm/ (the compiled-in path: the
#   slurm jobstep plugin drops SLURM_CONF before its inner srun, so only the default path works).
set -euo pipefail

BASE=${NEUS_SLURM_BASE:-/tmp/neus-stage-slurm}
FAKE_GPUS=${FAKE_GPUS:-2}
MIN_JOB_AGE=${MIN_JOB_AGE:-600}
NODE=$(hostname -s)
PKGS="munge slurmctld slurmd slurm-client"

say() { echo "[start_slurm $(date +%T)] $*"; }
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

[[ $(id -u) == 0 ]] || { echo "start_slurm: must run as root (it installs packages and starts daemons)" >&2; exit 3; }
(( MIN_JOB_AGE >= 120 )) || { echo "start_slurm: MIN_JOB_AGE must be >= 120 s" >&2; exit 3; }

# ------------------------------------------------------------------------------------ 1. packages
need=()
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if (( ${#need[@]} )); then
  command -v apt-get >/dev/null || { echo "start_slurm: ${need[*]} missing and no apt-get" >&2; exit 4; }
  say "installing ${need[*]} (apt)"
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # keep maintainer scripts from starting daemons
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1
  fi
  rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${need[@]}"; } >"${TMPDIR:-/tmp}/neus-stage-slurm-apt.log" 2>&1 || rc=$?
  (( own_policy )) && rm -f /usr/sbin/policy-rc.d
  (( rc == 0 )) || { echo "start_slurm: apt-get install failed (log: ${TMPDIR:-/tmp}/neus-stage-slurm-apt.log)" >&2; exit 4; }
fi

# -------------------------------------------------------------------------------------- 2. config
mkdir -p "$BASE"/{etc,state,spool,log,munge,fakedev}
chown munge:munge "$BASE/munge"; chmod 0755 "$BASE/munge"
if [[ ! -s $BASE/munge/munge.key ]]; then
  mungekey --create --keyfile="$BASE/munge/munge.key"
  chown munge:munge "$BASE/munge/munge.key"; chmod 0600 "$BASE/munge/munge.key"
fi

read -r CPUS BOARDS SPB CPS TPC MEM < <(slurmd -C | head -1 | sed -E \
  's/.*CPUs=([0-9]+) Boards=([0-9]+) SocketsPerBoard=([0-9]+) CoresPerSocket=([0-9]+) ThreadsPerCore=([0-9]+) RealMemory=([0-9]+).*/\1 \2 \3 \4 \5 \6/')
MEM=$(( MEM * 9 / 10 ))

gres_types="" node_gres=""
: >"$BASE/etc/gres.conf"
if (( FAKE_GPUS > 0 )); then
  for ((i = 0; i < FAKE_GPUS; i++)); do ln -sfn /dev/null "$BASE/fakedev/nvidia$i"; done
  gres_types="GresTypes=gpu"   # (AccountingStorageTRES=gres/gpu would need slurmdbd: scontrol's JOB_GRES shows it)
  node_gres="Gres=gpu:fake:$FAKE_GPUS"
  printf 'AutoDetect=off\nNodeName=%s Name=gpu Type=fake File=%s/fakedev/nvidia[0-%d]\n' \
    "$NODE" "$BASE" $((FAKE_GPUS - 1)) >"$BASE/etc/gres.conf"
fi

cat >"$BASE/etc/slurm.conf" <<CONF
# written by tests/slurm_harness/start_slurm.sh
ClusterName=neusstage
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$BASE/munge/munge.socket.2
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=$MIN_JOB_AGE
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.log
$gres_types
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SPB CoresPerSocket=$CPS ThreadsPerCore=$TPC RealMemory=$MEM $node_gres State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
CONF

mkdir -p /etc/slurm
for f in slurm.conf gres.conf; do
  if [[ -e /etc/slurm/$f && ! -L /etc/slurm/$f ]]; then mv "/etc/slurm/$f" "/etc/slurm/$f.bak.$(date +%s)"; fi
  ln -sfn "$BASE/etc/$f" "/etc/slurm/$f"
done

# ------------------------------------------------------------------------------------- 3. daemons
# (their stdio goes to a file: a daemon holding the caller's pipe would keep `subprocess.run` waiting)
if ! alive "$BASE/munge/munged.pid"; then
  say "starting munged"
  setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged \
    --key-file="$BASE/munge/munge.key" --socket="$BASE/munge/munge.socket.2" \
    --pid-file="$BASE/munge/munged.pid" --log-file="$BASE/munge/munged.log" \
    --seed-file="$BASE/munge/munged.seed" --force </dev/null >>"$BASE/log/daemons.out" 2>&1
fi
if ! alive "$BASE/slurmctld.pid"; then
  say "starting slurmctld"
  slurmctld -c </dev/null >>"$BASE/log/daemons.out" 2>&1   # -c: forget the jobs of an earlier run
fi
if ! alive "$BASE/slurmd.pid"; then
  say "starting slurmd"
  slurmd </dev/null >>"$BASE/log/daemons.out" 2>&1
fi

# ------------------------------------------------------------------------------ 4. wait for node
state=""
deadline=$((SECONDS + 60))
while (( SECONDS < deadline )); do
  if (( SECONDS > deadline - 55 )) && ! alive "$BASE/slurmctld.pid"; then state="slurmctld exited"; break; fi
  state=$(timeout 5 sinfo -h -n "$NODE" -p cpu -o %t 2>/dev/null || true)
  [[ $state == idle || $state == mix || $state == alloc ]] && break
  if [[ $state == drain* || $state == inval* || $state == down* ]]; then
    timeout 5 scontrol update nodename="$NODE" state=resume 2>/dev/null || true
  fi
  sleep 0.5
done
if [[ $state != idle && $state != mix && $state != alloc ]]; then
  echo "start_slurm: node not ready (state '$state')" >&2
  tail -n 20 "$BASE/log/slurmctld.log" "$BASE/log/slurmd.log" >&2 || true
  "$(dirname "$0")/stop_slurm.sh" >&2   # leave nothing half-started behind
  exit 5
fi
timeout 10 sinfo -o '%P %a %D %t %c %m %G %N'
say "SLURM ready: node $NODE, $CPUS CPUs, ${MEM} MB, $FAKE_GPUS fake GPU(s), MinJobAge $MIN_JOB_AGE s, state in $BASE"
