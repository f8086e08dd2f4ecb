#!/usr/bin/env bash
# The cluster path on a real scheduler: starts a one-node SLURM cluster on this machine
# (Debian's slurm-wlm and munge, installed with apt-get when missing; needs root), runs
#  1. the full test profile through it (-profile test,local,slurm: every method, cell2location
#     trained to convergence, the consensus, the report), and checks from the trace and the
#     .command.run job scripts that every task ran as a SLURM job whose CPU and memory requests
#     follow its label (conf/base.config, capped), and the results against the generated truth;
#  2. a -stub run with the gpu profile added, and checks that the job scripts of the
#     process_gpu steps, and only those, carry the GPU request (--gres=gpu:1). The node
#     declares one GPU in gres.conf (backed by /dev/null: the jobs are stubs and use none),
#     so those jobs can be scheduled;
# then stops the daemons it started. About 15-20 minutes on 2 cores.
# Usage: tools/test_slurm.sh [workdir]     (default: a new folder under ${TMPDIR:-/tmp})
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_dir=${1:-$(mktemp -d "${TMPDIR:-/tmp}/spatialmap-slurm.XXXXXX")}
mkdir -p "$run_dir"
run_dir=$(cd "$run_dir" && pwd)
cache=${SPATIALMAP_CACHE:-$HOME/.cache/spatialmap}
python="$cache/env/bin/python"
log() { echo "[test_slurm] $*" >&2; }
die() { echo "[test_slurm] ERROR: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (apt-get, munged and slurmd)"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; }
fi
bash "$repo/tools/setup.sh" >/dev/null

# ---- a one-node cluster: 2 CPUs, 20 GB, one (declared) GPU ---------------------------------
conf="$run_dir/slurm"
mkdir -p "$conf/state" "$conf/spool"
node=$(hostname -s)
cat > "$conf/slurm.conf" <<EOF
ClusterName=spatialmaptest
SlurmctldHost=$node
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$conf/state
SlurmdSpoolDir=$conf/spool
SlurmctldPidFile=$conf/slurmctld.pid
SlurmdPidFile=$conf/slurmd.pid
SlurmctldLogFile=$conf/slurmctld.log
SlurmdLogFile=$conf/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=3600
GresTypes=gpu
NodeName=$node CPUs=2 RealMemory=20000 Gres=gpu:1 State=UNKNOWN
PartitionName=spatialmap Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
echo "NodeName=$node Name=gpu File=/dev/null" > "$conf/gres.conf"
export SLURM_CONF="$conf/slurm.conf"

started=()
stop_daemons() {
    for pidfile in "$conf/slurmd.pid" "$conf/slurmctld.pid" "$conf/munged.pid"; do
        if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    log "daemons stopped"
}
trap stop_daemons EXIT

mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
if [[ -S /run/munge/munge.socket.2 ]] && munge -n </dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running: used as it is"
else
    [[ -s /etc/munge/munge.key ]] || { mungekey --create >/dev/null 2>&1 || create-munge-key -f >/dev/null; chown munge:munge /etc/munge/munge.key; }
    runuser -u munge -- /usr/sbin/munged || die "munged did not start"
    sleep 1
    cp /run/munge/munged.pid "$conf/munged.pid"
fi
/usr/sbin/slurmctld -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"
for _ in $(seq 1 30); do
    sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed)' && break
    sleep 1
done
sinfo -N -o '%N %c %m %G %T' >&2
sinfo -h -N -o '%T' | grep -qE '^(idle|mixed)' || die "the node did not come up; see $conf/slurmd.log"
srun -N1 -c1 --mem=100M true || die "srun failed"
log "cluster up (SLURM_CONF=$SLURM_CONF)"

# quicker polling than the profile's, for the test's many short jobs
printf 'executor {\n    pollInterval      = "2 sec"\n    queueStatInterval = "5 sec"\n}\n' > "$conf/poll.config"

# ---- 1. the test profile through SLURM ------------------------------------------------------
cd "$run_dir"
export PATH="$cache/env/bin:$PATH"
log "1/2: -profile test,local,slurm"
bash "$repo/tools/nextflow" run "$repo/main.nf" -profile test,local,slurm -c "$conf/poll.config" -work-dir "$run_dir/work" \
    --max_memory 16.GB --outdir "$run_dir/results" > "$run_dir/run.log" 2>&1 || { tail -40 "$run_dir/run.log" >&2; die "the SLURM run failed"; }

# ---- 2. the graph with the gpu profile (stub) -----------------------------------------------
log "2/2: -profile test,local,slurm,gpu -stub"
bash "$repo/tools/nextflow" run "$repo/main.nf" -profile test,local,slurm,gpu -stub -c "$conf/poll.config" -work-dir "$run_dir/work_gpu" \
    --max_memory 16.GB --outdir "$run_dir/results_gpu" > "$run_dir/run_gpu.log" 2>&1 \
    || { tail -40 "$run_dir/run_gpu.log" >&2; die "the SLURM stub run failed"; }

"$python" "$repo/tools/check_slurm_jobs.py" --repo "$repo" \
    --run "$run_dir/results:$run_dir/work" --gpu-run "$run_dir/results_gpu:$run_dir/work_gpu" \
    --max-cpus 2 --max-memory-gb 16 --test-data "$repo/assets/test_data"
log "passed"
