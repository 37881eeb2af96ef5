#!/usr/bin/env bash
# Write the cluster's configuration under $CP_CLUSTER_DIR: munge key, fake GPU devices,
# slurm.conf, gres.conf, slurmdbd.conf, the ComputeProof config.toml, and the
# /etc/computeproof/config.toml symlink the hooks read. Idempotent: files are rewritten only
# when their content changes. Run by `cluster up` and by every compose container at start.
set -euo pipefail
# shellcheck source=docker-slurm/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# put_file DEST MODE: write stdin to DEST (atomically, mode MODE) unless DEST already holds it.
put_file() {
    local dest="$1" mode="$2" tmp
    tmp="$(mktemp "$dest.XXXXXX")"
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f "$dest" ]] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        chmod "$mode" "$dest"
    else
        mv -f "$tmp" "$dest"
    fi
}

check_hooks() {
    case "$CP_HOOKS" in
        1) ;;
        0 | noop | node-noop | epilog-noop) return 0 ;;
        *) die "CP_HOOKS=$CP_HOOKS is not a hooks setting; use 1 (the ComputeProof hooks, the default), 0 (no hooks), noop (four /bin/true hooks), node-noop (a /bin/true node Prolog and Epilog) or epilog-noop (a /bin/true node Epilog only)" ;;
    esac
    case "$CP_CTLD_HOOKS" in 0 | 1) ;; *) die "CP_CTLD_HOOKS=$CP_CTLD_HOOKS: use 0 (the default) or 1" ;; esac
    local hook missing=() hooks=("$CP_HOOK_PROLOG" "$CP_HOOK_EPILOG")
    [[ "$CP_CTLD_HOOKS" == 1 ]] && hooks+=("$CP_HOOK_PROLOG_CTLD" "$CP_HOOK_EPILOG_CTLD")
    for hook in "${hooks[@]}"; do
        [[ -x "$hook" ]] || missing+=("$hook")
    done
    if ((${#missing[@]})); then
        die "hook executable(s) missing or not executable: ${missing[*]}; install them, or run with CP_HOOKS=0 to leave the hooks out of slurm.conf"
    fi
}

make_dirs() {
    local node
    mkdir -p "$CP_CLUSTER_DIR" "$CP_CONF_DIR" "$CP_RUN_DIR" "$CP_LOG_DIR" "$CP_DEV_DIR" \
        "$CP_STATE_DIR/slurmctld" "$CP_MYSQL_DIR" "$CP_CPROOF_DIR"
    for node in "${CP_NODES[@]}"; do
        mkdir -p "$CP_STATE_DIR/slurmd/$node"
    done
    # munged refuses a key or socket directory that others can write or read.
    mkdir -p -m 0700 "$CP_MUNGE_DIR"
    chmod 0700 "$CP_MUNGE_DIR"
    chmod 0755 "$CP_CLUSTER_DIR"
    # The hooks' spool and keys are root-only, as on a real node. The run dir stays
    # traversable: job users reach the agent's socket in run/NODE/ (the job bindings in
    # run/NODE/jobs/ are root-only).
    mkdir -p -m 0700 "$CP_CPROOF_DIR/spool" "$CP_CPROOF_DIR/enrolled"
    mkdir -p "$CP_CPROOF_DIR/run"
    chmod 0755 "$CP_CPROOF_DIR/run"
}

make_munge_key() {
    [[ -s "$CP_MUNGE_KEY" ]] && return 0
    log "creating munge key $CP_MUNGE_KEY"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile="$CP_MUNGE_KEY"
    else
        dd if=/dev/urandom of="$CP_MUNGE_KEY" bs=1024 count=1 status=none
    fi
    chmod 0400 "$CP_MUNGE_KEY"
}

# Fake GPUs: gres.conf File= must name character devices. NVIDIA's major is 195; node i owns
# minors i*4 .. i*4+3, so a minor number identifies one GPU on the whole cluster.
make_devices() {
    local minor dev total=$((${#CP_NODES[@]} * CP_GPUS_PER_NODE))
    for ((minor = 0; minor < total; minor++)); do
        dev="$CP_DEV_DIR/nvidia$minor"
        if [[ -c "$dev" && "$(stat -c '%t:%T' "$dev")" == "c3:$(printf '%x' "$minor")" ]]; then
            continue
        fi
        rm -f "$dev"
        mknod -m 0666 "$dev" c 195 "$minor" ||
            die "cannot create character device $dev (mknod needs CAP_MKNOD and a filesystem without nodev)"
    done
}

write_slurm_conf() {
    local node i hooks
    if [[ "$CP_HOOKS" == 0 ]]; then
        hooks="# ComputeProof hooks left out (CP_HOOKS=0)"
    elif [[ "$CP_HOOKS" == noop ]]; then
        # the same four hook slots, each a no-op: the baseline of the throughput benchmark
        # (configured hooks change when slurmctld schedules; a no-op isolates our cost)
        hooks="Prolog=/bin/true
Epilog=/bin/true
PrologSlurmctld=/bin/true
EpilogSlurmctld=/bin/true"
    elif [[ "$CP_HOOKS" == node-noop ]]; then
        # the node hooks' slots as no-ops, no controller hooks: the controller-side
        # benchmark's setting, where only our collector (on or off) differs
        hooks="Prolog=/bin/true
Epilog=/bin/true"
    elif [[ "$CP_HOOKS" == epilog-noop ]]; then
        # a node Epilog alone, as most sites have one: with any Epilog configured, slurmctld
        # schedules as each job's epilog completes (52 jobs/s here, against 12-20 with none)
        hooks="Epilog=/bin/true"
    else
        # the node hooks; the controller's events come from the collector (controller.sh),
        # the controller hooks only where a synchronous record is wanted (CP_CTLD_HOOKS=1)
        hooks="Prolog=$CP_HOOK_PROLOG
Epilog=$CP_HOOK_EPILOG"
        if [[ "$CP_CTLD_HOOKS" == 1 ]]; then
            hooks+="
PrologSlurmctld=$CP_HOOK_PROLOG_CTLD
EpilogSlurmctld=$CP_HOOK_EPILOG_CTLD"
        fi
    fi
    {
        cat <<CONF
# Generated by docker-slurm/lib/configure.sh ($CP_MODE mode); edits are overwritten by 'up'.
ClusterName=$CP_CLUSTER_NAME
SlurmctldHost=$CP_CTLD_HOST($CP_CTLD_ADDR)
SlurmctldPort=$CP_SLURMCTLD_PORT
SlurmdPort=$CP_SLURMD_PORT_BASE
SrunPortRange=$CP_SRUN_PORTS
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$CP_MUNGE_SOCKET
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
StateSaveLocation=$CP_STATE_DIR/slurmctld
SlurmdSpoolDir=$CP_STATE_DIR/slurmd/%n
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$CP_RUN_DIR/slurmd-%n.pid
SlurmctldLogFile=$CP_LOG_DIR/slurmctld.log
SlurmdLogFile=$CP_LOG_DIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# Nodes declare more CPUs and memory than a small CI host has; trust slurm.conf.
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldTimeout=120
SlurmdTimeout=300
InactiveLimit=0
MinJobAge=30
KillWait=5
Waittime=0
MessageTimeout=10
SchedulerType=sched/backfill
# Schedule every second: a test cluster should not wait for 60 s periodic passes, and the
# hooks-on/off throughput benchmark must compare hook cost, not scheduler timing.
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
GresTypes=gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$CP_DBD_HOST
AccountingStoragePort=$CP_SLURMDBD_PORT
AccountingStoragePass=$CP_MUNGE_SOCKET
AccountingStorageTRES=gres/gpu,gres/gpu:a100
AccountingStorageEnforce=associations
JobCompType=jobcomp/none
# The Prolog runs at allocation on every node of the job, before any step.
PrologFlags=Alloc
PrologEpilogTimeout=60
$hooks
CONF
        for i in "${!CP_NODES[@]}"; do
            node="${CP_NODES[$i]}"
            local addr=127.0.0.1
            [[ "$CP_MODE" == compose ]] && addr="$node"
            echo "NodeName=$node NodeAddr=$addr Port=$(node_port "$node") CPUs=4 Boards=1" \
                "SocketsPerBoard=1 CoresPerSocket=4 ThreadsPerCore=1 RealMemory=4000" \
                "Gres=gpu:a100:$CP_GPUS_PER_NODE State=UNKNOWN"
        done
        local nodes
        nodes="$(IFS=,; echo "${CP_NODES[*]}")"
        echo "PartitionName=gpu Nodes=$nodes Default=YES MaxTime=INFINITE State=UP"
        echo "PartitionName=cpu Nodes=$nodes MaxTime=INFINITE State=UP"
    } | put_file "$CP_CONF_DIR/slurm.conf" 0644
}

write_gres_conf() {
    local i node lo hi
    {
        echo "# Generated by docker-slurm/lib/configure.sh: fake a100 GPUs, distinct minors per node."
        for i in "${!CP_NODES[@]}"; do
            node="${CP_NODES[$i]}"
            lo=$((i * CP_GPUS_PER_NODE))
            hi=$((lo + CP_GPUS_PER_NODE - 1))
            echo "NodeName=$node Name=gpu Type=a100 File=$CP_DEV_DIR/nvidia[$lo-$hi]"
        done
    } | put_file "$CP_CONF_DIR/gres.conf" 0644
}

# Slurm 23.02+ loads a cgroup plugin in slurmd even with proctrack/linuxproc and task/none,
# and fails ("Unable to initialize cgroup plugin") where no cgroup filesystem is mounted, as
# in containers and CI machines; `CgroupPlugin=disabled` (unknown to 22.05, which needs no
# cgroup.conf here) turns it off.
write_cgroup_conf() {
    local version
    version="$(slurmd -V 2>/dev/null | awk '{print $2}')"
    if [[ -z "$version" || "${version%%.*}" -lt 23 ]]; then
        rm -f "$CP_CONF_DIR/cgroup.conf"
        return 0
    fi
    put_file "$CP_CONF_DIR/cgroup.conf" 0644 <<CONF
# Generated by docker-slurm/lib/configure.sh for Slurm $version: no cgroup filesystem here.
CgroupPlugin=disabled
CONF
}

write_slurmdbd_conf() {
    # slurmdbd insists on mode 0600, owned by SlurmUser (root here).
    put_file "$CP_CONF_DIR/slurmdbd.conf" 0600 <<CONF
# Generated by docker-slurm/lib/configure.sh ($CP_MODE mode).
AuthType=auth/munge
AuthInfo=socket=$CP_MUNGE_SOCKET
# DbdHost is the host name slurmdbd checks it runs on; DbdAddr is where it listens.
DbdHost=$CP_DBD_NAME
DbdAddr=$CP_DBD_HOST
DbdPort=$CP_SLURMDBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$CP_LOG_DIR/slurmdbd.log
PidFile=$(pid_file slurmdbd)
StorageType=accounting_storage/mysql
StorageHost=$CP_DB_HOST
StoragePort=$CP_MARIADB_PORT
StorageUser=$CP_DB_USER
StoragePass=$CP_DB_PASS
StorageLoc=$CP_DB_NAME
CONF
}

write_computeproof_config() {
    local where
    if [[ "$CP_LEDGER" == collector ]]; then
        # As on a site of many hosts: no ledger here. One file serves every node; %n is
        # the node's name (SLURMD_NODENAME for hooks and agents, the host name for the
        # controller), so each node has its own spool and key and forwards them itself.
        where="spool_dir = \"$CP_CPROOF_DIR/spool/%n\"
host_key = \"$CP_CPROOF_DIR/keys/%n.key\"
collector_url = \"https://127.0.0.1:$CP_COLLECTOR_PORT\"
collector_ca = \"$CP_COLLECTOR_DIR/tls/ca.pem\"
forward_interval = 1"
    else
        where="db = \"$CP_CPROOF_DIR/ledger.db\"
spool_dir = \"$CP_CPROOF_DIR/spool\"
host_key = \"$CP_CPROOF_DIR/host.key\"
ledger_key = \"$CP_CPROOF_DIR/ledger.key\"
enrolled_keys = \"$CP_CPROOF_DIR/enrolled\""
    fi
    put_file "$CP_CPROOF_CONFIG" 0644 <<TOML
# ComputeProof configuration of the test cluster; written by docker-slurm/lib/configure.sh.
cluster = "$CP_CLUSTER_NAME"
$where
run_dir = "$CP_CPROOF_DIR/run"
slurm_bin = "/usr/bin"
# Short intervals so that test jobs of a few seconds get samples and progress events.
sample_interval = 1
progress_interval = 5
orphan_check_interval = 2
TOML
    echo "$CP_CPROOF_CONFIG" | put_file "$CP_CPROOF_DIR/config-path" 0644
}

# Slurm gives hooks no environment of ours, so they read /etc/computeproof/config.toml.
# Point it at this cluster's config, unless a real (non-symlink) site config is there.
link_etc_config() {
    local marker="$CP_CPROOF_DIR/etc-symlink"
    if [[ -e "$CP_ETC_CONFIG" && ! -L "$CP_ETC_CONFIG" ]]; then
        warn "$CP_ETC_CONFIG is a real file, left alone: the hooks will read it, not $CP_CPROOF_CONFIG"
        rm -f "$marker"
        return 0
    fi
    local etc_dir
    etc_dir="$(dirname "$CP_ETC_CONFIG")"
    if [[ "$(readlink "$CP_ETC_CONFIG" 2>/dev/null || true)" != "$CP_CPROOF_CONFIG" ]]; then
        mkdir -p "$etc_dir"
        ln -sfn "$CP_CPROOF_CONFIG" "$CP_ETC_CONFIG"
        log "linked $CP_ETC_CONFIG -> $CP_CPROOF_CONFIG"
    fi
    # computeproof-job reads the config as the job's user: a 0700 directory (an older
    # `keys init` made one) would refuse every job's progress and artifact reports
    if ! [[ "$(stat -c %a "$etc_dir")" =~ [1357]$ ]]; then  # others may not enter it
        chmod a+rx "$etc_dir"
        log "made $etc_dir readable by all: computeproof-job reads $CP_ETC_CONFIG as the job's user"
    fi
    echo "$CP_ETC_CONFIG" >"$marker"
}

# The host key comes from the project's own CLI, once it has `keys init`; it is enrolled in
# the ledger for every host of the cluster ('*'). The ledger creates its own ledger key at its
# first checkpoint (load_or_create_signer), so only the host key is made here.
init_keys() {
    local host_key="$CP_CPROOF_DIR/host.key"
    # the package beside these scripts (CP_REPO may point elsewhere for the hooks' paths)
    local pkg
    pkg="$(cd "$CP_LIB_DIR/../.." && pwd)"
    cli() { (cd "$pkg" && PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python3}" -m slurm_hooks "$@"); }
    if [[ "$CP_LEDGER" == collector ]]; then
        init_collector_keys
        return
    fi
    if [[ ! -s "$host_key" ]]; then
        log "creating host key $host_key"
        cli keys init --out "$host_key" >/dev/null || die "'computeproof keys init --out $host_key' failed"
    fi
    # Enrolling is idempotent; doing it at every `up` keeps a recreated ledger trusting the
    # key. One host signs for c1, c2 and the controller, hence '*'.
    cli keys enroll "$host_key" --host '*' >/dev/null || die "cannot enroll $host_key in the ledger"
}

# CP_LEDGER=collector: the collector up (PostgreSQL, site CA, `computeproof serve`), then a
# key per host, each enrolled for its own name only: c1's key cannot sign c2's events.
init_collector_keys() {
    # compose: the controller's host runs the collector and makes every host's key (the
    # keys directory is on the shared volume); a node's forwarder retries until then
    if [[ "$CP_MODE" == compose && "$(hostname)" != "$CP_CTLD_HOST" ]]; then
        return 0
    fi
    collector up --listen "127.0.0.1:$CP_COLLECTOR_PORT" --pg-port "$CP_COLLECTOR_PG_PORT" \
        --cluster "$CP_CLUSTER_NAME" --name 127.0.0.1 --name localhost ||
        die "the collector did not come up; see $CP_COLLECTOR_DIR/log/"
    mkdir -p -m 0700 "$CP_CPROOF_DIR/keys"
    local host key
    for host in "${CP_NODES[@]}" "$(hostname)"; do
        key="$CP_CPROOF_DIR/keys/$host.key"
        if [[ ! -s "$key" ]]; then
            cli keys init --out "$key" >/dev/null || die "'computeproof keys init --out $key' failed"
        fi
        collector enroll "$key" --host "$host" >/dev/null || die "cannot enroll $key for $host"
    done
}

# The in-job tool, installed as a site would (conf/INSTALL.md): a world-readable copy of the
# package and bin/computeproof-job with its import path rewritten to that copy. Job users
# cannot rely on reading the checkout itself (CI clones into a private temp directory).
install_job_tool() {
    local pkg lib="$CP_CLUSTER_DIR/lib" bin="$CP_CLUSTER_DIR/bin"
    pkg="$(cd "$CP_LIB_DIR/../.." && pwd)"
    rm -rf "$lib.new"
    mkdir -p "$lib.new" "$bin"
    (cd "$pkg" && tar --exclude=__pycache__ -cf - computeproof slurm_hooks) | tar -C "$lib.new" -xf -
    rm -rf "$lib" && mv "$lib.new" "$lib"
    sed "s|^sys.path.insert(0, .*|sys.path.insert(0, \"$lib\")|" "$pkg/bin/computeproof-job" |
        put_file "$bin/computeproof-job" 0755
    chmod -R a+rX "$lib" "$bin"
}

check_hooks
make_dirs
install_job_tool
make_munge_key
make_devices
write_slurm_conf
write_gres_conf
write_cgroup_conf
write_slurmdbd_conf
write_computeproof_config
link_etc_config
init_keys
