"""gres.conf parsing and GPU index -> device file -> minor number resolution."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from computeproof.errors import SlurmError
from slurm_hooks import gres

GRES_CONF = """\
# Generated: fake a100 GPUs, distinct minors per node.
NodeName=c1 Name=gpu Type=a100 File={dev}/nvidia[0-3]
NodeName=c2 Name=gpu Type=a100 File={dev}/nvidia[4-7]
NodeName=c[1-2] Name=shard Count=8
"""


@pytest.fixture
def devdir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mknod of character devices needs root")
    for minor in range(8):
        os.mknod(tmp_path / f"nvidia{minor}", 0o600 | 0o020000, os.makedev(195, minor))
    return tmp_path


def test_files_per_node(tmp_path: Path) -> None:
    text = GRES_CONF.format(dev="/d")
    assert gres.gpu_device_files(text, "c2") == [f"/d/nvidia{i}" for i in range(4, 8)]
    assert gres.gpu_device_files(text, "c9") == []


def test_lines_without_nodename_apply_to_all_and_keep_order() -> None:
    text = "Name=gpu File=/dev/nvidia1\nname=gpu file=/dev/nvidia0,/dev/nvidia2 # x\n"
    assert gres.gpu_device_files(text, "any") == ["/dev/nvidia1", "/dev/nvidia0", "/dev/nvidia2"]


def test_autodetect_only_gives_no_files() -> None:
    assert gres.gpu_device_files("AutoDetect=nvml\nName=gpu Count=4\n", "n1") == []


def test_resolve_to_minor_numbers(devdir: Path) -> None:
    files = gres.gpu_device_files(GRES_CONF.format(dev=devdir), "c2")
    got = gres.resolve_gpus([1, 2], files)
    assert got == [
        {"slurm_index": 1, "minor": 5, "device": f"{devdir}/nvidia5"},
        {"slurm_index": 2, "minor": 6, "device": f"{devdir}/nvidia6"},
    ]


def test_unresolvable_indices_are_null_not_guessed(devdir: Path) -> None:
    files = [str(devdir / "nvidia0"), str(devdir / "missing")]
    got = gres.resolve_gpus([1, 5], files)
    assert got[0] == {"slurm_index": 1, "minor": None, "device": str(devdir / "missing")}
    assert got[1] == {"slurm_index": 5, "minor": None, "device": None}


def test_regular_file_is_not_a_gpu(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(SlurmError):
        gres.device_minor(str(tmp_path / "f"))


def test_conf_path_beside_slurm_conf() -> None:
    assert gres.gres_conf_path("/x/etc/slurm.conf") == "/x/etc/gres.conf"
    assert gres.gres_conf_path(None) == "/etc/slurm/gres.conf"


def test_bad_line() -> None:
    with pytest.raises(SlurmError):
        gres.parse_gres_line("NodeName=c1 gpu")
