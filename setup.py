"""Packaging for kubirun.

The native layer (``kubirun/_native``) is compiled at install time: a cffi
module in API mode (``kubirun/_native/build.py``), and ``kubirun-exec``, the
small static program every container process is exec'd through
(``kubirun/_native/exec_helper.c``: the CVE-2019-5736 defence).
"""
import os
import subprocess

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

HELPER_SOURCE = "kubirun/_native/exec_helper.c"
HELPER = "kubirun/_native/kubirun-exec"
# No libc, no relocations, no padding: ~2.2 KiB to copy into a memfd per start.
NOLIBC_FLAGS = ["-Os", "-static", "-nostdlib", "-no-pie", "-fno-pic", "-fno-stack-protector",
                "-fno-builtin", "-fno-tree-loop-distribute-patterns",
                "-fno-asynchronous-unwind-tables", "-DKUBI_NOLIBC",
                "-Wl,--build-id=none,-z,noseparate-code,-z,norelro", "-s"]
LIBC_FLAGS = ["-Os", "-static", "-s"]  # architectures without a nolibc start-up


class BuildWithExecHelper(build_ext):
    """build_ext, plus the exec helper beside the cffi module."""

    def run(self) -> None:
        super().run()
        target = HELPER if self.inplace else os.path.join(self.build_lib, HELPER)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        compiler = os.environ.get("CC", "cc")
        for flags in (NOLIBC_FLAGS, LIBC_FLAGS):
            if subprocess.run([compiler, *flags, "-o", target, HELPER_SOURCE]).returncode == 0:
                return
        raise SystemExit(f"cannot build {HELPER} from {HELPER_SOURCE} (is gcc installed?)")


setup(
    name="kubirun",
    version="0.1.0",
    description="A low-level Linux container runtime in Python",
    packages=find_packages(include=["kubirun", "kubirun.*"]),
    package_data={"kubirun._native": ["kubirun-exec", "exec_helper.c"]},
    python_requires=">=3.9",
    setup_requires=["cffi>=1.15"],
    cffi_modules=["kubirun/_native/build.py:ffibuilder"],
    cmdclass={"build_ext": BuildWithExecHelper},
    # The cffi module uses the stable ABI (_kernel.abi3.so): one wheel for
    # every CPython from 3.9 on.
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
    # prctl, capabilities, securebits and no_new_privs go through our own
    # cffi module (kubirun/_native: the one syscall seam), so python-prctl,
    # which nothing imported and pip compiled against libcap, is not needed.
    install_requires=[
        "cffi>=1.15",
        "click>=8.0",
        "pyroute2>=0.7",
        # Pod manifests of `kubirun node` (imported by kubirun.node only, lazily).
        "PyYAML>=5.4",
    ],
    # grpcio: the engine tests speak to containerd's CRI as kubelet does (tests/engines/cri.py)
    extras_require={"test": ["pytest>=7", "grpcio"]},
    entry_points={"console_scripts": ["kubirun = kubirun.cli:main"]},
)
