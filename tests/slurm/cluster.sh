#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, in a directory of its own (no system files touched).
#
#   tests/slurm/cluster.sh start DIR   # writes DIR/slurm.conf, starts munged, slurmctld, slurmd;
#                                      # prints SLURM_CONF=DIR/slurm.conf once the node is idle
#   tests/slurm/cluster.sh stop DIR    # stops the three daemons started by `start DIR`
#
# Needs root and the Debian packages slurmctld slurmd slurm-client munge (SLURM 22.05).
# No cgroups (proctrack/linuxproc, task/none), no accounting. Ports: SLURM_TEST_PORT (default
# 16817) for slurmctld and the next one for slurmd.
set -euo pipefail
cmd=${1:?usage: cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: cluster.sh start|stop DIR}")

stop() {
  # Cancel what is still queued or running first: a job step (slurmstepd) outlives its slurmd.
  if [[ -f $dir/slurmctld.pid && -f $dir/slurm.conf ]]; then
    SLURM_CONF=$dir/slurm.conf scancel --full --quiet --user "$(id -un)" 2>/dev/null || true
    for _ in $(seq 50); do
      [[ -z $(SLURM_CONF=$dir/slurm.conf squeue --noheader 2>/dev/null) ]] && break
      sleep 0.1
    done
  fi
  for name in slurmd slurmctld munged; do
    if [[ -f $dir/$name.pid ]]; then
      pid=$(cat "$dir/$name.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$name.pid"
    fi
  done
}

if [[ $cmd == stop ]]; then stop; exit 0; fi
[[ $cmd == start ]] || { echo "usage: cluster.sh start|stop DIR" >&2; exit 2; }

for tool in munged slurmctld slurmd sbatch; do
  command -v "$tool" >/dev/null || { echo "SLURM not installed: no $tool on PATH (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 3; }
done
[[ $(id -u) == 0 ]] || { echo "the local SLURM cluster needs root (slurmd runs jobs as their user)" >&2; exit 3; }

port=${SLURM_TEST_PORT:-16817}
node=$(hostname -s)
cpus=${SLURM_TEST_CPUS:-2}
mkdir -p "$dir"/{spool,state,munge,log}
chmod 700 "$dir/munge"
# munged refuses a key that others can read, and a socket dir it does not own
if [[ ! -f $dir/munge/munge.key ]]; then
  head -c 1024 /dev/urandom > "$dir/munge/munge.key"
fi
chmod 600 "$dir/munge/munge.key"

cat > "$dir/slurm.conf" <<CONF
ClusterName=adaptr-test
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=600
JobRequeue=1
SlurmctldParameters=idle_on_node_suspend
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
export SLURM_CONF=$dir/slurm.conf

munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed" --force
slurmctld -f "$SLURM_CONF" -c -i
slurmd -f "$SLURM_CONF"

for _ in $(seq 100); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -n1 || true)
  if [[ $state == idle ]]; then echo "SLURM_CONF=$SLURM_CONF"; exit 0; fi
  sleep 0.2
done
echo "the local SLURM cluster did not come up (node state: ${state:-none}); logs in $dir/log" >&2
tail -n 5 "$dir"/log/*.log >&2 || true
stop
exit 4
