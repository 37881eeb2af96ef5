"""SLURM_* environment parsing, over environments dumped from the test cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from computeproof.errors import SlurmError
from slurm_hooks import slurmenv

FIXTURES = Path(__file__).parent / "fixtures"


def dumped(name: str) -> dict[str, str]:
    """A real hook environment captured from the test cluster (Slurm 22.05)."""
    text = (FIXTURES / "envdump" / f"{name}.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_array_task_display_id_in_controller_env() -> None:
    env = dumped("prolog_slurmctld.23")
    job_id = slurmenv.job_id_of(env)
    assert job_id == 23
    assert slurmenv.display_id_from_env(env, job_id) == "19_1"
    assert slurmenv.restart_count(env) == 0


def test_het_component_display_id_in_controller_env() -> None:
    env = dumped("prolog_slurmctld.21")
    assert slurmenv.display_id_from_env(env, 21) == "20+1"


def test_node_env_has_no_het_offset_so_plain_id() -> None:
    env = dumped("prolog.21")
    assert env["SLURM_HET_JOB_ID"] == "20"
    assert slurmenv.display_id_from_env(env, 21) == "21"


def test_node_prolog_gpu_indices() -> None:
    env = dumped("prolog.9")
    assert slurmenv.gpu_indices(env) == [1, 2]
    assert env["SLURMD_NODENAME"] == "c2"


def test_epilog_exit_code() -> None:
    env = dumped("epilog_slurmctld.18")
    assert slurmenv.parse_exit_code(env["SLURM_JOB_EXIT_CODE2"]) == (3, 0)
    assert slurmenv.parse_exit_code("0:15") == (0, 15)
    assert slurmenv.parse_exit_code("") is None


@pytest.mark.parametrize(
    ("text", "want"),
    [("0,2", [0, 2]), ("0-3", [0, 1, 2, 3]), ("0-1,3", [0, 1, 3]), ("", []), ("7", [7])],
)
def test_index_lists(text: str, want: list[int]) -> None:
    assert slurmenv.parse_int_ranges(text) == want


@pytest.mark.parametrize("text", ["a", "3-1", "1,,2", "-1", "1-"])
def test_bad_index_lists(text: str) -> None:
    with pytest.raises(SlurmError):
        slurmenv.parse_int_ranges(text)


def test_cuda_visible_devices_fallback_only_when_numeric() -> None:
    assert slurmenv.gpu_indices({"CUDA_VISIBLE_DEVICES": "1,3"}) == [1, 3]
    assert slurmenv.gpu_indices({"CUDA_VISIBLE_DEVICES": "GPU-1234-abcd"}) == []
    assert slurmenv.gpu_indices({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}) == []
    assert slurmenv.gpu_indices({}) == []


def test_job_id_missing() -> None:
    with pytest.raises(SlurmError):
        slurmenv.job_id_of({})
    assert slurmenv.job_id_of({"SLURM_JOBID": "5"}) == 5


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("c1", ["c1"]),
        ("c[1-2]", ["c1", "c2"]),
        ("gpu[08-10],cpu1", ["gpu08", "gpu09", "gpu10", "cpu1"]),
        ("r[1-2]n[1,3]", ["r1n1", "r1n3", "r2n1", "r2n3"]),
        ("/dev/nvidia[0-1]", ["/dev/nvidia0", "/dev/nvidia1"]),
    ],
)
def test_hostlists(text: str, want: list[str]) -> None:
    assert slurmenv.expand_hostlist(text) == want


def test_display_ids() -> None:
    assert slurmenv.display_id(123) == "123"
    assert slurmenv.display_id(101, 100, 4) == "100_4"
    assert slurmenv.display_id(201, None, None, 200, 1) == "200+1"
