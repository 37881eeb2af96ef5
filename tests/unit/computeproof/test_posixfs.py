"""computeproof.posixfs behaves like the os and os.path functions it stands in for."""

import os
import posixpath
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from computeproof import posixfs

REPO = Path(__file__).resolve().parents[3]
paths = st.lists(st.sampled_from(["", "/", "//", "a", "b.c", "..", "x/", "/y"]), max_size=5).map(
    "".join
)


@given(paths, st.lists(paths, max_size=3))
def test_join_is_os_path_join(first: str, rest: list[str]) -> None:
    assert posixfs.join(first, *rest) == posixpath.join(first, *rest)


@given(paths)
def test_dirname_and_basename_are_os_paths(path: str) -> None:
    assert posixfs.dirname(path) == posixpath.dirname(path)
    assert posixfs.basename(path) == posixpath.basename(path)


def test_exists_lexists_is_dir(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("f", "dangling", "nowhere", ""):
        p = str(tmp_path / name)
        assert posixfs.exists(p) == os.path.exists(p)
        assert posixfs.lexists(p) == os.path.lexists(p)
        assert posixfs.is_dir(p) == os.path.isdir(p)
    assert not posixfs.exists("bad\0path")


def test_make_dirs_creates_parents_with_mode_and_tolerates_existing(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    posixfs.make_dirs(str(deep) + "/")
    posixfs.make_dirs(str(deep))
    assert deep.is_dir()
    assert (deep.stat().st_mode & 0o777) == 0o700
    assert ((tmp_path / "a").stat().st_mode & 0o777) == 0o700


def test_make_dirs_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError):
        posixfs.make_dirs(str(tmp_path / "f"))
    with pytest.raises(NotADirectoryError):
        posixfs.make_dirs(str(tmp_path / "f" / "sub"))


def test_environ_and_setenv_reach_os_environ_and_children() -> None:
    # in a fresh interpreter: os is imported only after setenv, as a forked collector does
    code = (
        "import posix, sys\n"
        "from computeproof import posixfs\n"
        "env = posixfs.environ()\n"
        "assert env['CP_TEST_RAW'] == 'caf\\udce9', env['CP_TEST_RAW']\n"
        "posixfs.setenv('CP_TEST_SET', '/etc/slurm.conf')\n"
        "import os, subprocess\n"
        "print(os.environ['CP_TEST_SET'])\n"
        "print(subprocess.run(['/bin/sh', '-c', 'echo $CP_TEST_SET'], capture_output=True,"
        " text=True, env=None).stdout.strip())\n"
    )
    env = {b"CP_TEST_RAW": b"caf\xe9", b"PYTHONPATH": str(REPO).encode()}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["/etc/slurm.conf", "/etc/slurm.conf"]
