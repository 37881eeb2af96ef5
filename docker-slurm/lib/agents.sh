#!/usr/bin/env bash
# The GPU agents of the test cluster: one `computeproof agent run --node NODE` per slurmd
# node, reading the fake NVML library the tests build from C (tests/fakenvml/), each node
# with its own NVML script ($CP_CLUSTER_DIR/fakenvml/NODE.nvml).
#   agents.sh up|down|status [NODE]     NODE: that node's agent only (a compose node host)
# The scripts start idle (0 % utilization). Tests and `make demo` rewrite them to put load
# on GPUs; the fake re-reads a script when it changes. Nothing here is a real GPU reading.
set -euo pipefail
# shellcheck source=docker-slurm/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CP_FAKE_NVML_DIR="$CP_CLUSTER_DIR/fakenvml"
PYTHON="${PYTHON:-python3}"

agent_pid() {
    local file="$CP_RUN_DIR/agent-$1.pid" pid
    [[ -s "$file" ]] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "agent run --node $1 " || return 1
    echo "$pid"
}

build_fake_nvml() {
    local lib="$CP_FAKE_NVML_DIR/libnvidia-ml.so.1" src="$CP_REPO/tests/fakenvml/fakenvml.c"
    mkdir -p "$CP_FAKE_NVML_DIR"
    (
        flock 9 # compose node hosts share this directory and start together
        if [[ ! -s "$lib" || "$src" -nt "$lib" ]]; then
            log "building the fake NVML library into $CP_FAKE_NVML_DIR"
            (cd "$CP_REPO" && "$PYTHON" -c \
                "from tests.fakenvml.build import build; build('$CP_FAKE_NVML_DIR')")
        fi
    ) 9>"$CP_FAKE_NVML_DIR/.build.lock"
}

# idle_script NODE: the node's GPUs listed in NVML order, which is the REVERSE of minor
# order, as on real nodes where NVML's PCI order and the device minors disagree.
idle_script() {
    local node="$1" first i minor
    first=$(($(node_index "$node") * CP_GPUS_PER_NODE))
    echo "driver 550.54.15"
    for ((i = 0; i < CP_GPUS_PER_NODE; i++)); do
        minor=$((first + CP_GPUS_PER_NODE - 1 - i))
        printf 'gpu index=%d minor=%d uuid=GPU-fake-%04d name=Fake-A100 pci=00000000:%02X:00.0' \
            "$i" "$minor" "$minor" $((0x17 + minor))
        echo " mem_total=85899345920 util=0 mem_util=0 mem_used=0 power=60000 energy=0 energy_rate=60000"
    done
}

cmd_up() {
    build_fake_nvml
    local node script pid
    for node in "${AGENT_NODES[@]}"; do
        if pid="$(agent_pid "$node")"; then
            log "agent-$node already running (pid $pid)"
            continue
        fi
        script="$CP_FAKE_NVML_DIR/$node.nvml"
        [[ -s "$script" ]] || idle_script "$node" >"$script"
        (
            cd "$CP_REPO"
            export FAKE_NVML_SCRIPT="$script" LD_LIBRARY_PATH="$CP_FAKE_NVML_DIR"
            export COMPUTEPROOF_CONFIG="$CP_CPROOF_CONFIG" SLURMD_NODENAME="$node"
            setsid "$PYTHON" -m slurm_hooks agent run --node "$node" \
                </dev/null >>"$CP_LOG_DIR/agent-$node.log" 2>&1 &
            echo $! >"$CP_RUN_DIR/agent-$node.pid"
        )
        local sock="$CP_CPROOF_DIR/run/$node/agent.sock"
        if ! wait_for 20 "agent-$node socket" test -S "$sock"; then
            tail -n 20 "$CP_LOG_DIR/agent-$node.log" >&2 || true
            die "agent-$node did not start; see $CP_LOG_DIR/agent-$node.log"
        fi
        log "agent-$node up (pid $(agent_pid "$node"))"
    done
}

cmd_down() {
    local node pid
    for node in "${AGENT_NODES[@]}"; do
        if pid="$(agent_pid "$node")"; then
            log "stopping agent-$node (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            wait_for 15 "agent-$node to exit" bash -c "! kill -0 $pid" ||
                kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$CP_RUN_DIR/agent-$node.pid"
    done
}

cmd_status() {
    local node pid ok=0
    for node in "${AGENT_NODES[@]}"; do
        if pid="$(agent_pid "$node")"; then
            printf '%-12s running (pid %s)\n' "agent-$node" "$pid"
        else
            printf '%-12s not running\n' "agent-$node"
            ok=1
        fi
    done
    return $ok
}

AGENT_NODES=("${CP_NODES[@]}")
if [[ -n "${2:-}" ]]; then
    node_index "$2" >/dev/null # dies on an unknown node
    AGENT_NODES=("$2")
fi
case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*) die "usage: agents.sh up|down|status [NODE]" ;;
esac
