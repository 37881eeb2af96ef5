#!/usr/bin/env bash
# Capture, byte for byte, the JSON of `squeue --json`, `scontrol show job --json` and
# `sacct --json` for a small set of real jobs (a two-node GPU job, a failing job, an array,
# a job cancelled while it runs), while they run and once they ended, for the unit tests'
# fixtures of each Slurm release. Run on a test cluster host (as root):
#   capture-json.sh OUTDIR
set -euo pipefail
out="$1"
mkdir -p "$out"
scratch=/tmp/cp-capture-json
mkdir -p "$scratch" && chmod 1777 "$scratch"
sub() { sbatch --parsable -D "$scratch" -o /dev/null "$@" | cut -d';' -f1; }
two_node=$(sub --uid=cpalice -A physics -N2 --gres=gpu:a100:1 -J two-node --wrap 'sleep 8')
failing=$(sub --uid=cpbob -A biology --gres=gpu:1 -J failing --wrap 'sleep 4; exit 3')
array=$(sub --uid=cpalice -A biology --array=0-1 -J array --wrap 'sleep 6')
cancelled=$(sub --uid=cpcarol -A chemistry -J cancelled --wrap 'sleep 300')
ids="$two_node,$failing,$array,$cancelled"
for _ in $(seq 1 60); do
    [[ "$(squeue -h -j "$two_node" -o %T)" == RUNNING && "$(squeue -h -j "$cancelled" -o %T)" == RUNNING ]] && break
    sleep 0.5
done
squeue --json >"$out/squeue.running.json"
scontrol show job --json >"$out/scontrol_show_job.running.json"
scancel --signal=TERM "$cancelled"
for _ in $(seq 1 60); do
    [[ -z "$(squeue -h -j "$ids" -o %i 2>/dev/null)" ]] && break
    sleep 0.5
done
scontrol show job --json >"$out/scontrol_show_job.ended.json"
squeue --json -t all >"$out/squeue.ended.json"
sleep 3 # slurmdbd receives the end records after slurmctld
sacct --json -j "$ids" >"$out/sacct.json"
printf '{"slurm": "%s", "two_node": %s, "failing": %s, "array": %s, "cancelled": %s}\n' \
    "$(sinfo -V)" "$two_node" "$failing" "$array" "$cancelled" >"$out/jobs.json"
echo "captured into $out: $(ls "$out" | tr '\n' ' ')"
