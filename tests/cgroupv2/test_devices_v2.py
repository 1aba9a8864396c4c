"""Device rules on cgroup v2: the eBPF program of kubirun/cgroups/ebpf.py
in a real kernel. Processes of our own in a cgroup of our own open and
mknod device nodes made for the test, and get EPERM where the rules say no.

Meant for the v2 VM (see /work/shared/v2vm/README.md):

    ../shared/v2vm/run.sh -- /work/main/.venv/bin/python -m pytest -m cgroupv2 tests/cgroupv2

On a hybrid host (like the development machine) the tests that need no v2
driver still run: the kernel's verifier on every rule set, and the filter
on a directory of the unified hierarchy (a BPF device filter works there
too). The rest is skipped anywhere but on a pure v2 host.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import uuid

import pytest

import tests.integration.test_cgroups as real
from kubirun.cgroups import CgroupError, detect_layout, ebpf, open_cgroup
from tests.integration.test_cgroups import boxed
from tests.unit.test_cgroups_ebpf import (
    ALLOW_ALL,
    DENY_ALL,
    RULE_SETS,
    b,
    c,
    compile_rules,
)


def _layout():
    try:
        return detect_layout()
    except CgroupError:
        return None


LAYOUT = _layout()
PURE_V2 = LAYOUT is not None and LAYOUT.kind == "v2"
UNIFIED = LAYOUT.unified if LAYOUT is not None else None
if PURE_V2:
    real.SLOW = 20  # the VM's CPU is emulated: only failures wait this long

pytestmark = [
    pytest.mark.cgroupv2,
    pytest.mark.skipif(os.geteuid() != 0, reason="bpf(2) and cgroups need root"),
]
needs_v2 = pytest.mark.skipif(not PURE_V2, reason="needs a pure cgroup v2 host (run it in ../shared/v2vm)")

box = pytest.fixture(boxed, name="box")

NULL, ZERO, FULL, MEM = (1, 3), (1, 5), (1, 7), (1, 1)
LOOP0 = (7, 0)


# --- device nodes and a probe ---------------------------------------------------

def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _nodev(path: str) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_NODEV)


@pytest.fixture
def nodes(tmp_path):
    """A directory of device nodes: null, zero, full, mem (char) and loop0
    (block), where device nodes work (the VM's /tmp is nodev; its / is not)."""
    base = str(tmp_path)
    if _nodev(base):
        base = next((d for d in ("/var/tmp", "/root", "/") if os.path.isdir(d) and not _nodev(d)), None)
        if base is None:
            pytest.skip("no filesystem here allows device nodes")
    d = tempfile.mkdtemp(prefix="kubirun-devtest-", dir=base)
    try:
        for name, kind, (major, minor) in (("null", stat.S_IFCHR, NULL), ("zero", stat.S_IFCHR, ZERO),
                                           ("full", stat.S_IFCHR, FULL), ("mem", stat.S_IFCHR, MEM),
                                           ("loop0", stat.S_IFBLK, LOOP0)):
            os.mknod(os.path.join(d, name), kind | 0o600, os.makedev(major, minor))
        yield d
    finally:
        shutil.rmtree(d)


# Run in the cgroup: each op is [what, node, ...]; the answer is "ok" or the
# errno's name. mknod makes the node under a new name and removes it.
PROBE = r"""
import errno, json, os, signal, stat

def do(op):
    what, path = op[0], os.path.join(NODES, op[1])
    try:
        if what == "mknod":
            new = path + ".new"
            os.mknod(new, (stat.S_IFCHR if op[2] == "c" else stat.S_IFBLK) | 0o600, os.makedev(op[3], op[4]))
            os.unlink(new)
        else:
            flags = {"read": os.O_RDONLY, "write": os.O_WRONLY, "rdwr": os.O_RDWR}[what]
            fd = os.open(path, flags)
            try:
                if what == "write":
                    os.write(fd, b"x")
                elif what == "read":
                    os.read(fd, 1)
            finally:
                os.close(fd)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def answer():
    print(json.dumps([do(op) for op in OPS]), flush=True)
"""


def probe_code(nodes: str, ops: list, rounds: int = 1) -> str:
    """Answer once; with rounds > 1, wait for SIGUSR1 before each next answer."""
    code = PROBE.replace("NODES", repr(nodes)).replace("OPS", repr(ops))
    code += "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\nanswer()\n"
    code += f"for _ in range({rounds - 1}):\n    signal.sigwait({{signal.SIGUSR1}})\n    answer()\n"
    return code


def probe(box, nodes: str, ops: list) -> list[str]:
    p = box.python(probe_code(nodes, ops))
    out, err = p.communicate(timeout=60 * real.SLOW)
    assert p.returncode == 0, err
    return json.loads(out)


def ops_and_expect(table: list) -> tuple[list, list]:
    return [op for op, _ in table], [want for _, want in table]


# --- the kernel's side, on any host with a cgroup2 hierarchy ---------------------

def test_the_kernel_verifier_accepts_every_program():
    for name, entries in RULE_SETS.items():
        code = compile_rules(entries)
        try:
            fd = ebpf.load(code)
        except ebpf.BPFError as e:
            if not PURE_V2 and e.errno in (1, 38):  # EPERM, ENOSYS: no bpf(2) for us here
                pytest.skip(f"bpf(2) is not available: {e}")
            raise AssertionError(f"{name}: {e}") from None
        os.close(fd)


@pytest.mark.skipif(UNIFIED is None, reason="no cgroup2 hierarchy")
def test_filter_on_a_cgroup2_directory(nodes):
    """ebpf.install on a directory of our own in the unified hierarchy (on a
    hybrid host the v1 devices cgroup allows everything there)."""
    d = os.path.join(UNIFIED, f"kubirun-test-{uuid.uuid4().hex[:10]}")
    os.mkdir(d)
    p = None
    try:
        fd = ebpf.load(compile_rules([DENY_ALL, c(*NULL, "rwm")]))
        try:
            ebpf.install(d, fd)
        finally:
            os.close(fd)
        assert len(ebpf.attached(d)) == 1
        ops, want = ops_and_expect([(["write", "null"], "ok"), (["read", "zero"], "EPERM"),
                                    (["mknod", "null", "c", *NULL], "ok"), (["mknod", "zero", "c", *ZERO], "EPERM")])
        p = subprocess.Popen([sys.executable, "-S", "-c", "import sys; sys.stdin.readline()\n" + probe_code(nodes, ops)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(p.pid))
        out, err = p.communicate("go\n", timeout=60 * real.SLOW)
        assert p.returncode == 0, err
        assert json.loads(out) == want
        assert ebpf.remove_all(d) == 1
        assert ebpf.attached(d) == []
    finally:
        if p is not None and p.poll() is None:
            p.kill()
            p.communicate()
        real.wait_for(lambda: not _read(os.path.join(d, "cgroup.procs")), "the probe to leave")
        os.rmdir(d)  # takes the program with it


# --- the v2 driver ----------------------------------------------------------------------

@needs_v2
def test_deny_all_but_dev_null(box, nodes):
    cg = box.cg
    cg.create()
    cg.apply({"devices": [DENY_ALL, c(*NULL, "rwm")]})
    assert len(ebpf.attached(cg.dir)) == 1
    ops, want = ops_and_expect([
        (["write", "null"], "ok"),
        (["rdwr", "null"], "ok"),
        (["read", "zero"], "EPERM"),
        (["write", "full"], "EPERM"),
        (["read", "loop0"], "EPERM"),
        (["mknod", "null", "c", *NULL], "ok"),  # m is in rwm
        (["mknod", "zero", "c", *ZERO], "EPERM"),
        (["mknod", "loop0", "b", *LOOP0], "EPERM"),
    ])
    assert probe(box, nodes, ops) == want
    # the host's own /dev/zero is no different
    assert probe(box, "/dev", [["read", "zero"], ["write", "null"]]) == ["EPERM", "ok"]


@needs_v2
def test_mknod_and_access_subsets(box, nodes):
    cg = box.cg
    cg.create()
    cg.apply({"devices": [DENY_ALL, c(None, None, "m"), c(*NULL, "rw"), c(*ZERO, "r"), b(*LOOP0, "w")]})
    ops, want = ops_and_expect([
        (["mknod", "zero", "c", *ZERO], "ok"),  # any char node may be made
        (["mknod", "mem", "c", *MEM], "ok"),
        (["mknod", "loop0", "b", *LOOP0], "EPERM"),  # no block node
        (["read", "mem"], "EPERM"),  # made, but not opened
        (["rdwr", "null"], "ok"),
        (["read", "zero"], "ok"),
        (["write", "zero"], "EPERM"),
        (["rdwr", "zero"], "EPERM"),  # O_RDWR needs r and w
        (["read", "loop0"], "EPERM"),
    ])
    assert probe(box, nodes, ops) == want
    # write-only on the block device: past the filter, the open fails on
    # the device itself (no loop0 in this kernel: ENXIO) or works
    assert probe(box, nodes, [["write", "loop0"]]) != ["EPERM"]


@needs_v2
def test_update_takes_effect_for_running_processes(box, nodes):
    cg = box.cg
    cg.create()
    cg.apply({"devices": [DENY_ALL, c(*NULL, "rwm")]})
    first = ebpf.attached(cg.dir)
    ops = [["write", "null"], ["read", "zero"], ["rdwr", "null"], ["mknod", "zero", "c", *ZERO]]
    p = box.python(probe_code(nodes, ops, rounds=5))

    def answer(signal_first: bool = True) -> list[str]:
        if signal_first:
            os.kill(p.pid, signal.SIGUSR1)  # our own child
        return json.loads(p.stdout.readline())

    assert answer(False) == ["ok", "EPERM", "ok", "EPERM"]
    # another process's view (kubirun update): open_cgroup with the state
    again = open_cgroup(cg.path, cg.to_state())
    again.apply({"devices": [DENY_ALL, c(*ZERO, "rwm"), c(*NULL, "r")]})
    second = ebpf.attached(cg.dir)
    assert len(second) == 1 and second != first  # the old program is gone
    assert answer() == ["EPERM", "ok", "EPERM", "ok"]
    # deny-list mode: O_RDWR touches the denied w
    again.apply({"devices": [ALLOW_ALL, c(*NULL, "w", allow=False)]})
    assert answer() == ["EPERM", "ok", "EPERM", "ok"]
    # everything allowed: no program left
    again.apply({"devices": [ALLOW_ALL]})
    assert ebpf.attached(cg.dir) == []
    assert answer() == ["ok", "ok", "ok", "ok"]
    # no device rules: the filter is left as it is
    cg.apply({"devices": [DENY_ALL]})
    cg.apply({"pids": {"limit": 100}})
    assert answer() == ["EPERM", "EPERM", "EPERM", "EPERM"]
    assert p.wait(timeout=30 * real.SLOW) == 0


@needs_v2
def test_runtime_default_devices(box, nodes):
    from kubirun.creation import DEFAULT_ALLOWED_DEVICES

    cg = box.cg
    cg.create()
    cg.apply({"devices": [DENY_ALL, *DEFAULT_ALLOWED_DEVICES]})
    ops, want = ops_and_expect([
        (["rdwr", "null"], "ok"), (["rdwr", "zero"], "ok"), (["rdwr", "full"], "ok"),
        (["read", "mem"], "EPERM"), (["read", "loop0"], "EPERM"),
        (["mknod", "mem", "c", *MEM], "ok"), (["mknod", "loop0", "b", *LOOP0], "ok"),
    ])
    assert probe(box, nodes, ops) == want


@needs_v2
def test_bad_rules_change_nothing(box):
    cg = box.cg
    cg.create()
    cg.apply({"devices": [DENY_ALL, c(*NULL, "rwm")]})
    before = ebpf.attached(cg.dir)
    with pytest.raises(CgroupError, match="cannot punch a hole"):
        cg.apply({"pids": {"limit": 7},
                  "devices": [ALLOW_ALL, c(1, None, "w", allow=False), c(*NULL, "w")]})
    assert ebpf.attached(cg.dir) == before
    with open(os.path.join(cg.dir, "pids.max")) as f:
        assert f.read().strip() == "max"


@needs_v2
def test_a_container_gets_the_filter(tmp_path):
    """kubirun run of an OCI bundle (the default config: deny all, plus the
    runtime's default devices): /dev/null works, a block node made inside
    cannot be opened."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tarball = os.path.join(repo, "rootfs", "busybox.tar.gz")
    if not os.path.exists(tarball):
        pytest.skip("no rootfs/busybox.tar.gz (make -C rootfs)")
    kubirun = os.path.join(os.path.dirname(sys.executable), "kubirun")
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    subprocess.run(["tar", "--numeric-owner", "-xzf", tarball, "-C", str(bundle / "rootfs")], check=True)
    subprocess.run([kubirun, "spec", "--bundle", str(bundle)], check=True, capture_output=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    for kind in ("bounding", "effective", "permitted"):
        config["process"]["capabilities"][kind].append("CAP_MKNOD")  # so that only the filter says no
    script = ("echo hi > /dev/null && echo null-ok; head -c 1 /dev/zero >/dev/null && echo zero-ok; "
              "mknod /dev/blk b 7 0 && echo mknod-ok; head -c 1 /dev/blk; "
              "mknod /dev/kmem c 1 2 && head -c 1 /dev/kmem; exit 0")
    config["process"]["args"] = ["sh", "-c", script]
    parent = f"/kubirun-test-{uuid.uuid4().hex[:10]}"
    config["linux"]["cgroupsPath"] = f"{parent}/ctr"
    (bundle / "config.json").write_text(json.dumps(config))
    cid = f"devtest-{uuid.uuid4().hex[:8]}"
    try:
        r = subprocess.run([kubirun, "--root", str(tmp_path / "state"), "run", "-b", str(bundle), cid],
                           capture_output=True, text=True, timeout=120 * real.SLOW, stdin=subprocess.DEVNULL,
                           check=False)
    finally:
        subprocess.run([kubirun, "--root", str(tmp_path / "state"), "delete", "--force", cid],
                       capture_output=True, check=False)
        try:
            os.rmdir(UNIFIED + parent)
        except FileNotFoundError:
            pass
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["null-ok", "zero-ok", "mknod-ok"], (r.stdout, r.stderr)
    assert r.stderr.count("Operation not permitted") == 2, r.stderr
