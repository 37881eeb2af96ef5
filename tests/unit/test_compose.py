"""docker-slurm/: the compose file's references, and the configuration the setup scripts write.

The compose variant cannot run without a Docker engine; these tests check that everything it
points at exists, and that the shared setup script (docker-slurm/lib/configure.sh) writes a
consistent configuration in both of its modes.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from computeproof.config import load_config

REPO = Path(__file__).resolve().parents[2]
DOCKER_SLURM = REPO / "docker-slurm"
COMPOSE_FILE = DOCKER_SLURM / "docker-compose.yml"
CONFIGURE = DOCKER_SLURM / "lib" / "configure.sh"
REPO_MOUNT = "/computeproof"  # where the compose services see the repository
SERVICES = {"mariadb", "slurmdbd", "slurmctld", "c1", "c2"}
HOOKS = (
    "prolog.d/computeproof-prolog",
    "epilog.d/computeproof-epilog",
    "prolog.d/computeproof-prolog-slurmctld",
    "epilog.d/computeproof-epilog-slurmctld",
)
CONFIG_KEYS = {
    "cluster", "db", "spool_dir", "run_dir", "host_key", "ledger_key", "enrolled_keys",
    "sample_interval", "progress_interval", "orphan_check_interval",
    "slurm_bin",
}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict:
    with COMPOSE_FILE.open() as f:
        return yaml.safe_load(f)


def repo_path(container_path: str) -> Path:
    """Map a path inside a compose container to the repository file it is bind-mounted from."""
    assert container_path.startswith(REPO_MOUNT + "/"), container_path
    return REPO / container_path.removeprefix(REPO_MOUNT + "/")


def test_compose_has_one_service_a_role(compose: dict) -> None:
    assert set(compose["services"]) == SERVICES
    for name, service in compose["services"].items():
        # slurm.conf names hosts by service: SlurmctldHost=slurmctld, NodeAddr=c1, ...
        assert service["hostname"] == name
        assert service["image"] == "computeproof-slurm:${CP_DIST:-bookworm}"


def test_compose_file_suits_compose_v1_and_host_networking(compose: dict) -> None:
    """docker-compose v1 (Debian 12) rejects a top-level name:; no bridge network and no
    private address range: host networking, service names resolved to 127.0.0.1."""
    assert "name" not in compose
    assert str(compose["version"]).startswith("2.")
    assert "networks" not in compose
    for name, service in compose["services"].items():
        assert service["network_mode"] == "host", name
        assert "ports" not in service and "networks" not in service, name
        assert service["init"] is True, name  # reaps what slurmstepd leaves behind
        hosts = dict(entry.split(":") for entry in service["extra_hosts"])
        assert hosts == dict.fromkeys(SERVICES, "127.0.0.1"), name
        env = service["environment"]
        for port in ("CP_SLURMCTLD_PORT", "CP_SLURMDBD_PORT", "CP_SLURMD_PORT_BASE",
                     "CP_SRUN_PORTS", "CP_MARIADB_PORT"):  # fmt: skip
            assert env[port].startswith("${" + port + ":-"), (name, port)


def test_volumes_exist_or_come_from_the_compose_state(compose: dict) -> None:
    for name, service in compose["services"].items():
        targets = {}
        for volume in service["volumes"]:
            # SOURCE:TARGET[:ro], where SOURCE may be ${VAR:?message}/path
            m = re.fullmatch(r"(\$\{[^}]*\}[^:]*|[^:]+):([^:]+)(:ro)?", volume)
            assert m, f"{name}: {volume}"
            source, target = m[1], m[2]
            targets[target] = source
            if source.startswith((".", "/")):
                host = (DOCKER_SLURM / source).resolve()
                assert host.exists(), f"{name}: bind mount {source} does not exist"
                assert host.is_relative_to(REPO), f"{name}: {source} is outside the repository"
            else:  # a directory compose-cluster makes under its state directory
                assert source.startswith("${CP_COMPOSE_STATE"), f"{name}: {source}"
        assert targets[REPO_MOUNT] == ".."
        assert targets["/var/tmp/computeproof-cluster"].endswith("}/cluster")
        # the host's own /run (pid files, its agent): a directory of its own
        assert targets["/run/computeproof-cluster"] == "${CP_COMPOSE_STATE}/hosts/" + name


def test_every_command_script_exists(compose: dict) -> None:
    entry = DOCKER_SLURM / "lib" / "compose-entry.sh"
    for name, service in compose["services"].items():
        script, role = service["command"]
        path = repo_path(script)
        assert path == entry
        assert path.is_file() and os.access(path, os.X_OK), f"{name}: {script} not executable"
        assert role == name  # the entry point's role argument is the service's role


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_v1_accepts_the_file(tmp_path: Path) -> None:
    env = dict(os.environ, CP_COMPOSE_STATE=str(tmp_path), CP_DIST="trixie",
               CP_SLURMCTLD_PORT="18817")  # fmt: skip
    proc = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "-p", "cp-check", "config"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    c1 = resolved["services"]["c1"]
    assert c1["image"] == "computeproof-slurm:trixie"
    assert c1["environment"]["CP_SLURMCTLD_PORT"] == "18817"
    assert c1["environment"]["CP_MARIADB_PORT"] == "17306"  # the default when unset


def compose_settings(dist: str) -> dict[str, str]:
    """The variables docker-slurm/compose-cluster exports for DIST."""
    # the script's settings function alone: the script itself would act on its arguments
    code = (
        f'eval "$(sed -n "/^settings() {{/,/^}}/p" {DOCKER_SLURM / "compose-cluster"})"; '
        f"settings {dist}; env | grep -E '^CP_(SLURM|SRUN|MARIADB|COMPOSE_STATE|DIST)'"
    )
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_each_compose_cluster_has_ports_of_its_own() -> None:
    native = {"16817", "16819", "16821", "13306"}
    seen: set[str] = set(native)
    for dist in ("bookworm", "trixie", "slurm-25.11"):
        settings = compose_settings(dist)
        assert settings["CP_DIST"] == dist
        ports = {settings[k] for k in ("CP_SLURMCTLD_PORT", "CP_SLURMDBD_PORT",
                                       "CP_SLURMD_PORT_BASE", "CP_MARIADB_PORT")}  # fmt: skip
        assert len(ports) == 4 and not ports & seen, (dist, ports)
        seen |= ports
        assert settings["CP_COMPOSE_STATE"].endswith("/" + dist)


def test_packages_list_has_what_debian_13_needs() -> None:
    def run(**env: str) -> list[str]:
        return subprocess.run(
            [str(DOCKER_SLURM / "lib" / "packages.sh"), "--list"],
            env=dict(os.environ, **env), capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip

    packages = run()
    # pthread.h for the fake NVML library (gcc only recommends libc6-dev); a venv, as
    # Debian's python3 is externally managed (PEP 668)
    assert {"gcc", "libc6-dev", "python3-venv", "slurmd", "slurmctld"} <= set(packages)
    from_source = run(CP_SLURM_FROM_SOURCE="1")
    assert not {p for p in from_source if p.startswith("slurm")}
    assert "libjson-c5" in from_source


def test_setup_scripts_parse() -> None:
    scripts = [DOCKER_SLURM / "cluster", *sorted((DOCKER_SLURM / "lib").glob("*.sh"))]
    for script in scripts:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
    for script in scripts:
        if script.name != "common.sh":  # sourced, not run
            assert os.access(script, os.X_OK), f"{script} is not executable"


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="configure.sh creates character devices (mknod needs root)"
)


def configure(
    tmp_path: Path,
    mode: str,
    repo: Path | None = None,
    hooks: str = "0",
    ctld_hooks: str = "0",
    **more: str,
) -> subprocess.CompletedProcess[str]:
    """Run configure.sh with all its output (and the hooks' config link) under tmp_path."""
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("CP_") and name.endswith(("_PORT", "_PORTS", "_PORT_BASE")):
            del env[name]
    env.update(more)
    env.update(
        CP_MODE=mode,
        CP_CLUSTER_DIR=str(tmp_path / "cluster"),
        CP_HOOKS=hooks,
        CP_CTLD_HOOKS=ctld_hooks,
        CP_ETC_CONFIG=str(tmp_path / "etc" / "config.toml"),
        CP_CONTAINER_RUN_DIR=str(tmp_path / "container-run"),
    )
    env.pop("COMPUTEPROOF_CONFIG", None)
    env.pop("SLURM_CONF", None)
    if repo is not None:
        env["CP_REPO"] = str(repo)
    return subprocess.run(
        [str(CONFIGURE)], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def conf(path: Path) -> dict[str, list[str]]:
    """slurm.conf-style KEY=VALUE lines, first word of each line, as {key: [values]}."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@needs_root
@pytest.mark.parametrize("mode", ["compose", "native"])
def test_configure_writes_consistent_config(tmp_path: Path, mode: str) -> None:
    proc = configure(tmp_path, mode)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cluster = tmp_path / "cluster"
    slurm = conf(cluster / "etc" / "slurm.conf")
    dbd = conf(cluster / "etc" / "slurmdbd.conf")
    if mode == "compose":
        assert slurm["SlurmctldHost"] == ["slurmctld(slurmctld)"]
        assert slurm["AccountingStorageHost"] == ["slurmdbd"]
        assert dbd["DbdHost"] == ["slurmdbd"]
        assert dbd["StorageHost"] == ["mariadb"]
        addrs = {"c1": "c1", "c2": "c2"}
    else:
        assert slurm["SlurmctldHost"] == [f"{socket.gethostname().split('.')[0]}(127.0.0.1)"]
        assert dbd["DbdAddr"] == ["127.0.0.1"]
        assert slurm["AuthInfo"] == [f"socket={cluster}/munge/munge.socket"]
        # slurmdbd rejects credentials from a private munge socket unless this matches it
        assert slurm["AccountingStoragePass"] == [f"{cluster}/munge/munge.socket"]
        addrs = {"c1": "127.0.0.1", "c2": "127.0.0.1"}
    assert slurm["ClusterName"] == ["cptest"]
    assert "Prolog" not in slurm and "EpilogSlurmctld" not in slurm  # CP_HOOKS=0
    assert slurm["PrologFlags"] == ["Alloc"]
    nodes = {
        m["name"]: m
        for line in slurm["NodeName"]
        for m in [re.match(r"(?P<name>\w+) NodeAddr=(?P<addr>\S+) Port=(?P<port>\d+)", line)]
        if m
    }
    assert {n: m["addr"] for n, m in nodes.items()} == addrs
    assert len({m["port"] for m in nodes.values()}) == 2  # two slurmd on one host need two
    assert all("Gres=gpu:a100:4" in line for line in slurm["NodeName"])
    gres = (cluster / "etc" / "gres.conf").read_text()
    assert f"NodeName=c1 Name=gpu Type=a100 File={cluster}/dev/nvidia[0-3]" in gres
    assert f"NodeName=c2 Name=gpu Type=a100 File={cluster}/dev/nvidia[4-7]" in gres
    for minor in range(8):
        st = os.stat(cluster / "dev" / f"nvidia{minor}")
        assert stat.S_ISCHR(st.st_mode)
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (195, minor)
    # slurmdbd refuses a config file others can read (it holds the database password)
    assert stat.S_IMODE((cluster / "etc" / "slurmdbd.conf").stat().st_mode) == 0o600
    # the ComputeProof config: only keys the loader knows, all under the cluster directory
    config_path = cluster / "computeproof" / "config.toml"
    data = tomllib.loads(config_path.read_text())
    assert set(data) == CONFIG_KEYS
    config = load_config(str(config_path), environ={})
    assert config.cluster == "cptest"
    assert config.db == f"{cluster}/computeproof/ledger.db"
    assert config.enrolled_keys == f"{cluster}/computeproof/enrolled"
    assert (cluster / "computeproof" / "config-path").read_text().strip() == str(config_path)
    etc = tmp_path / "etc" / "config.toml"
    assert etc.is_symlink() and os.readlink(etc) == str(config_path)
    # a second run changes nothing
    before = {p: p.read_bytes() for p in (cluster / "etc").iterdir()}
    proc = configure(tmp_path, mode)
    assert proc.returncode == 0, proc.stderr
    assert {p: p.read_bytes() for p in (cluster / "etc").iterdir()} == before


def fake_repo(tmp_path: Path, hooks: tuple[str, ...]) -> Path:
    """A repository root holding the given hook executables (stand-ins, never run)."""
    repo = tmp_path / "repo"
    for hook in hooks:
        path = repo / hook
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    return repo


@needs_root
def test_hooks_are_configured_by_absolute_path(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path, HOOKS)
    proc = configure(tmp_path, "native", repo=repo, hooks="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    slurm = conf(tmp_path / "cluster" / "etc" / "slurm.conf")
    assert slurm["Prolog"] == [f"{repo}/prolog.d/computeproof-prolog"]
    assert slurm["Epilog"] == [f"{repo}/epilog.d/computeproof-epilog"]
    # the controller's events come from the collector: no controller hooks by default
    assert "PrologSlurmctld" not in slurm and "EpilogSlurmctld" not in slurm
    proc = configure(tmp_path, "native", repo=repo, hooks="1", ctld_hooks="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    slurm = conf(tmp_path / "cluster" / "etc" / "slurm.conf")
    assert slurm["PrologSlurmctld"] == [f"{repo}/prolog.d/computeproof-prolog-slurmctld"]
    assert slurm["EpilogSlurmctld"] == [f"{repo}/epilog.d/computeproof-epilog-slurmctld"]


@needs_root
@pytest.mark.parametrize(
    ("hooks", "configured"),
    [
        ("noop", {"Prolog", "Epilog", "PrologSlurmctld", "EpilogSlurmctld"}),
        ("node-noop", {"Prolog", "Epilog"}),
        ("epilog-noop", {"Epilog"}),
    ],
)
def test_benchmark_baselines_configure_no_op_hooks(
    tmp_path: Path, hooks: str, configured: set[str]
) -> None:
    proc = configure(tmp_path, "native", hooks=hooks)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    slurm = conf(tmp_path / "cluster" / "etc" / "slurm.conf")
    slots = {"Prolog", "Epilog", "PrologSlurmctld", "EpilogSlurmctld"}
    assert {k for k in slots if k in slurm} == configured
    assert all(slurm[k] == ["/bin/true"] for k in configured)


@needs_root
def test_config_link_directory_is_made_enterable(tmp_path: Path) -> None:
    """computeproof-job reads the linked config as the job's user: a 0700 directory (as an
    older `keys init` made /etc/computeproof) is opened up, a 0755 one is left as it is."""
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o700)
    etc.chmod(0o700)
    proc = configure(tmp_path, "native")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stat.S_IMODE(etc.stat().st_mode) == 0o755
    assert "made" in proc.stdout + proc.stderr
    etc.chmod(0o751)
    proc = configure(tmp_path, "native")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stat.S_IMODE(etc.stat().st_mode) == 0o751


def test_unknown_hooks_setting_fails_clearly(tmp_path: Path) -> None:
    proc = configure(tmp_path, "native", hooks="yes")
    assert proc.returncode != 0
    assert "CP_HOOKS=yes is not a hooks setting" in proc.stderr
    assert "epilog-noop" in proc.stderr
    assert not (tmp_path / "cluster" / "etc" / "slurm.conf").exists()


def test_missing_hook_fails_clearly(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path, HOOKS[:3])
    proc = configure(tmp_path, "native", repo=repo, hooks="1", ctld_hooks="1")
    assert proc.returncode != 0
    assert f"{repo}/epilog.d/computeproof-epilog-slurmctld" in proc.stderr
    assert "CP_HOOKS=0" in proc.stderr
    assert not (tmp_path / "cluster" / "etc" / "slurm.conf").exists()


@needs_root
def test_ports_come_from_the_environment(tmp_path: Path) -> None:
    """A compose cluster shares the host's network with the native one: its own ports."""
    proc = configure(
        tmp_path, "compose", CP_SLURMCTLD_PORT="18817", CP_SLURMDBD_PORT="18819",
        CP_SLURMD_PORT_BASE="18821", CP_SRUN_PORTS="18840-18880", CP_MARIADB_PORT="18306",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    slurm = conf(tmp_path / "cluster" / "etc" / "slurm.conf")
    dbd = conf(tmp_path / "cluster" / "etc" / "slurmdbd.conf")
    assert slurm["SlurmctldPort"] == ["18817"]
    assert slurm["AccountingStoragePort"] == ["18819"] == dbd["DbdPort"]
    assert slurm["SrunPortRange"] == ["18840-18880"]
    assert dbd["StoragePort"] == ["18306"]
    ports = [re.search(r" Port=(\d+)", line)[1] for line in slurm["NodeName"]]  # type: ignore[index]
    assert ports == ["18821", "18822"]


@needs_root
@pytest.mark.parametrize(("version", "written"), [("22.05.8", False), ("24.11.5", True)])
def test_cgroup_plugin_is_disabled_from_slurm_23(
    tmp_path: Path, version: str, written: bool
) -> None:
    """slurmd 23.02+ will not start without a cgroup filesystem unless cgroup.conf says
    CgroupPlugin=disabled, a value 22.05 does not know."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "slurmd").write_text(f"#!/bin/sh\necho 'slurm {version}'\n")
    (fake / "slurmd").chmod(0o755)
    proc = configure(tmp_path, "native", PATH=f"{fake}:{os.environ['PATH']}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cgroup = tmp_path / "cluster" / "etc" / "cgroup.conf"
    assert cgroup.exists() == written
    if written:
        assert conf(cgroup) == {"CgroupPlugin": ["disabled"]}
