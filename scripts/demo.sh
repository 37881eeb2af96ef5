#!/usr/bin/env bash
# `make demo`: bring up the local Slurm test cluster (real slurmctld, slurmd, slurmdbd,
# MariaDB, munge) with the ComputeProof hooks and a GPU agent per node, run GPU jobs as
# several users, forward their events into the ledger, show and verify receipts offline,
# and write a usage report; then a witness cosigns the ledger's checkpoint, a local EVM
# chain anchors it, a receipt is verified against all three trust roots, and the dashboard
# is left running (its sign-in link is printed last). The GPUs are fake: character devices
# for Slurm and a scripted NVML library (tests/fakenvml) for the agents; every figure shown
# is what that scripted NVML reported, never an invented value. The cluster stays up
# afterwards (stop it with `docker-slurm/cluster down`), and so do the witness, the dev
# chain and the dashboard.
set -euo pipefail
cd "$(dirname "$0")/.."
START="$(date -u +%Y-%m-%dT%H:%M:%S)"
REPO="$PWD"
OUT="${DEMO_OUT:-$REPO/demo-out}"
PY="$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')" # the real interpreter, not a shim
# `make demo` installs the project into a virtual environment (.venv) and sets PYTHON to it;
# Debian's own python3 is externally managed (PEP 668) and has none of the dependencies.
"$PY" -c 'import click, cryptography, orjson, rich' 2>/dev/null ||
    { echo "demo: $PY lacks the project's dependencies; run 'make demo' (it installs them into .venv)" >&2; exit 1; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# the witness, dev chain and dashboard an earlier demo left running
for f in "$OUT"/.pids/*.pid; do
    [[ -f "$f" ]] && kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
done
# wait_for FILE PATTERN: until a background service has written PATTERN to FILE (60 s)
wait_for() {
    for _ in $(seq 1 600); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "demo: no '$2' in $1 after 60 s:" >&2
    tail -n 20 "$1" >&2
    exit 1
}
# background NAME CMD...: run a service of the demo in the background, logging to $OUT/NAME.log
background() {
    local name="$1"
    shift
    mkdir -p "$OUT/.pids"
    PYTHONUNBUFFERED=1 nohup "$@" >"$OUT/$name.log" 2>&1 &
    echo $! >"$OUT/.pids/$name.pid"
}

say "bringing up the test cluster (docker-slurm/cluster up)"
docker-slurm/cluster up
eval "$(docker-slurm/cluster env)"
# bin/computeproof-job as the cluster installed it for job users: stdlib only, world-readable
JOBTOOL="$CP_CLUSTER_DIR/bin/computeproof-job"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
cp() { "$PY" -m slurm_hooks "$@"; }
FAKE="${CP_CLUSTER_DIR:-/var/tmp/computeproof-cluster}/fakenvml"
mkdir -p "$OUT"

say "scripting GPU load in the fake NVML: c1 busy at 85 %, c2 at 40 %"
sed -i -E 's/util=[0-9]+ mem_util=[0-9]+ mem_used=[0-9]+ power=[0-9]+/util=85 mem_util=50 mem_used=34359738368 power=320000/; s/energy_rate=[0-9]+/energy_rate=320000/' "$FAKE/c1.nvml"
sed -i -E 's/util=[0-9]+ mem_util=[0-9]+ mem_used=[0-9]+ power=[0-9]+/util=40 mem_util=20 mem_used=8589934592 power=180000/; s/energy_rate=[0-9]+/energy_rate=180000/' "$FAKE/c2.nvml"

# jobs run as the test users: they work in a directory they can reach, not the checkout
JOBDIR="$CP_CLUSTER_DIR/demo-jobs"
mkdir -p "$JOBDIR" && chmod 1777 "$JOBDIR"
say "submitting GPU jobs as cpalice (physics), cpbob (biology), cpcarol (chemistry)"
sub() { sbatch --parsable -D "$JOBDIR" -o "$JOBDIR/slurm-%j.out" "$@"; }
train=$(sub --uid=cpalice -A physics -w c1 --gres=gpu:a100:2 -J train-llm --wrap "
    sleep 5; $JOBTOOL progress --percent 50 --epoch 1/2 --message 'loss 0.42'
    echo weights-after-epoch-2 > $JOBDIR/model-\$SLURM_JOB_ID.ckpt; sleep 5
    $JOBTOOL progress --percent 100 --epoch 2/2 --message 'loss 0.17'
    $JOBTOOL artifact $JOBDIR/model-\$SLURM_JOB_ID.ckpt")
multi=$(sub --uid=cpbob -A biology -N2 --gres=gpu:a100:1 -J fold-protein --wrap 'sleep 10')
fail=$(sub --uid=cpcarol -A chemistry --gres=gpu:1 -J bad-input --wrap 'sleep 3; exit 3')
array=$(sub --uid=cpalice -A biology --gres=gpu:1 --array=0-1 -J sweep --wrap 'sleep 4')
echo "jobs: $train (2 GPUs), $multi (2 nodes), $fail (fails), ${array}_0 ${array}_1 (array)"

say "a progress report from outside any job is refused (the agent ties callers to jobs)"
su cpalice -s /bin/sh -c "SLURMD_NODENAME=c1 $JOBTOOL progress --percent 99" || true

say "waiting for the jobs and for Slurm's final states"
for _ in $(seq 1 90); do
    [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break
    sleep 1
done
sleep 4 # EpilogSlurmctld's watcher records the final state once sacct has it

say "forwarding spooled events into the ledger (computeproof forward)"
for _ in 1 2 3 4 5; do
    cp forward
    [[ "$(cp jobs show "$train" --json 2>/dev/null | grep -c '"final_state"')" -ge 1 ]] &&
        [[ "$(cp jobs show "${array}_1" --json 2>/dev/null | grep -c '"final_state"')" -ge 1 ]] && break
    sleep 3
done

say "jobs with receipts (computeproof jobs list --since $START)"
cp jobs list --since "$START"

say "lifecycle of job $train (computeproof jobs show $train)"
cp jobs show "$train"

say "exporting and verifying receipts offline (no database, no network), against the ledger key"
# the trust root: the ledger's public key, taken from the ledger, not from the receipt
KEY="$(cp ledger checkpoint --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["ledger_key"])')"
for j in "$train" "$multi" "$fail" "${array}_0"; do
    cp receipt export "$j" -o "$OUT/receipt-$j.json"
    (cd /tmp && env -i PATH=/usr/bin:/bin PYTHONPATH="$REPO" "$PY" -m slurm_hooks \
        receipt verify "$OUT/receipt-$j.json" --ledger-key "$KEY")
done

say "whole-ledger check and a signed checkpoint"
cp ledger verify
cp ledger checkpoint >"$OUT/checkpoint.txt"
cat "$OUT/checkpoint.txt"

say "usage report for the demo's jobs, by account and user (HTML + JSON), then verified"
END="$(date -u +%Y-%m-%dT%H:%M:%S -d '+1 minute')"
cp report --from "$START" --to "$END" --group-by account,user \
    --ratecard conf/ratecard.toml --grants conf/grants.toml -o "$OUT/report.html"
cp report --from "$START" --to "$END" --group-by account,user \
    --ratecard conf/ratecard.toml --grants conf/grants.toml -o "$OUT/report.json"
cp report verify "$OUT/report.json" --ledger-key "$KEY"

say "reconcile against Slurm accounting (sacct)"
cp reconcile --since "$START" || echo "(reconcile found differences: see above)"

say "a witness cosigns the ledger's checkpoints (computeproof witness serve; docs/trust.md)"
# The witness would run on someone else's host; here it is a local process with its own key.
WDIR="$OUT/witness"
mkdir -p "$WDIR"
background witness "$PY" -m slurm_hooks witness serve --key "$WDIR/witness.key" \
    --state "$WDIR/state" --name demo-witness/cp --port 0 --log "$(cp witness log-key)"
wait_for "$OUT/witness.log" "^listening on "
WKEY="$(sed -n 's/^witness //p' "$OUT/witness.log")"
WURL="$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$OUT/witness.log")"
echo "witness $WKEY at $WURL"
# the ledger submits each new checkpoint to the witnesses its config lists
CONF="$OUT/config-with-witness.toml"
{ cat "$COMPUTEPROOF_CONFIG"; echo "witnesses = [\"$WURL $WKEY\"]"; } >"$CONF"
export COMPUTEPROOF_CONFIG="$CONF"

say "anchoring the checkpoint on a local EVM chain (ERC-7053 registry; docs/anchoring.md)"
# A py-evm chain in memory (Numbers Mainnet in production): its anchors verify while it runs.
CHAIN="$OUT/devchain"
rm -rf "$CHAIN"
background devchain "$PY" -m slurm_hooks anchor devchain --dir "$CHAIN" --port 0 --exit-after 3600
wait_for "$CHAIN/devchain.json" rpc_url
RPC="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["rpc_url"])' "$CHAIN/devchain.json")"
cp ledger checkpoint >/dev/null # signed now, so that the witness cosigns it
cp anchor evm --dev "$CHAIN"

say "receipt of job $train: cosigned by the witness and anchored on chain, verified offline"
cp receipt export "$train" -o "$OUT/receipt-$train.json"
(cd /tmp && env -i PATH=/usr/bin:/bin PYTHONPATH="$REPO" "$PY" -m slurm_hooks receipt verify \
    "$OUT/receipt-$train.json" --ledger-key "$KEY" --witness "$WKEY" --check-anchors "$RPC")

say "the dashboard (computeproof dashboard): jobs, receipts verified in the browser, analytics"
background dashboard "$PY" -m slurm_hooks dashboard --listen 127.0.0.1:${DEMO_DASHBOARD_PORT:-8765} \
    --ratecard conf/ratecard.toml --grants conf/grants.toml
wait_for "$OUT/dashboard.log" "^sign in as admin: "
LINK="$(sed -n 's/^sign in as admin: //p' "$OUT/dashboard.log")"

say "done"
echo "receipts, checkpoint and reports are in $OUT; open $OUT/report.html in a browser."
echo "dashboard: $LINK (sign-in link; stop it with: kill \$(cat $OUT/.pids/dashboard.pid))"
echo "The witness and the dev chain keep running too (their pids are in $OUT/.pids; the chain stops after an hour)."
echo "The cluster is still up: eval \"\$(docker-slurm/cluster env)\" to use it; docker-slurm/cluster down to stop it."
