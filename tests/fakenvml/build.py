"""Build the fake libnvidia-ml.so.1 (fakenvml.c) with gcc and write its scripts.

Tests either put the build directory on LD_LIBRARY_PATH of a subprocess, or call
:func:`load_in_process` so that pynvml's ``CDLL("libnvidia-ml.so.1")`` finds the already
loaded library by its soname. The built library lives in a temporary directory only.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakenvml.c")
SONAME = "libnvidia-ml.so.1"


def build(out_dir: str) -> str:
    """Compile the fake library into ``out_dir``; return the library's path."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build the fake NVML library")
    path = os.path.join(out_dir, SONAME)
    subprocess.run(
        [
            gcc,
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            f"-Wl,-soname,{SONAME}",
            "-o",
            path,
            SOURCE,
            "-lpthread",
        ],
        check=True,
    )
    return path


def load_in_process(path: str) -> ctypes.CDLL:
    """Load the fake by absolute path so pynvml's dlopen by soname returns it."""
    return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


def write_script(path: str, text: str) -> None:
    """Replace the script atomically (new inode, so the fake notices the change)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".script")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def gpu_line(index: int, minor: int, **values: object) -> str:
    """One ``gpu`` statement with stable static facts derived from index and minor."""
    facts: dict[str, object] = {
        "index": index,
        "minor": minor,
        "uuid": f"GPU-fake-{minor:04d}",
        "name": "Fake-H100",
        "pci": f"00000000:{0x17 + minor:02X}:00.0",
        "mem_total": 85899345920,
    }
    facts.update(values)
    return "gpu " + " ".join(f"{k}={v}" for k, v in facts.items()) + "\n"
