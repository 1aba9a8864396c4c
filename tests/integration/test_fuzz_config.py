"""A seeded fuzz of ``config.json`` through the real CLI: a few hundred
mutations of ``kubirun spec``'s config (types swapped, huge and negative
numbers, NULs, lone surrogates, deep nesting, keys missing or added) are
each given to ``kubirun create``.  Each is accepted (then ``delete
--force``) or refused with one error line on stderr starting "kubirun: "
(after warnings, if any, on lines of their own), never an internal error
nor a traceback; either way nothing is left: no state, no cgroup, no
process, no mount, and the host's own mounts are as they were.

KUBIRUN_FUZZ_SEED and KUBIRUN_FUZZ_CASES change the seed (19) and the
number of cases (300); a failure names the seed, the case and what was
mutated, so that it can be replayed.
"""
from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import TEST_CGROUP_PARENT
from tests.integration.oci_helpers import KUBIRUN_BIN, _force_remove_cgroup, cgroup_dirs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="kubirun create needs root here")

SEED = int(os.environ.get("KUBIRUN_FUZZ_SEED", "19"))
CASES = int(os.environ.get("KUBIRUN_FUZZ_CASES", "300"))
TIMEOUT = 30

HUGE_INTS = (2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1,
             2**64, 10**40)
NEGATIVE_INTS = (-1, -2, -2**31, -2**32, -2**63, -2**63 - 1, -10**40)
ODD_FLOATS = (0.5, -0.5, 1e300, -1e300, float("inf"), float("-inf"), float("nan"))
NUL, SURROGATE = "\0", "\udc80"


def fuzz_base(busybox_dir: Path, tmp_path: Path, cgroup: str) -> dict:
    """``kubirun spec``'s config, made runnable here (busybox root, no
    terminal, the cgroup ``cgroup``) and widened with the fields it leaves
    out (a hook, a device, limits, a seccomp profile...), so that their
    parsing is fuzzed too."""
    where = tmp_path / "spec"
    where.mkdir()
    subprocess.run([str(KUBIRUN_BIN), "spec", "--bundle", str(where)], check=True,
                   capture_output=True, timeout=TIMEOUT)
    config = json.loads((where / "config.json").read_text())
    config["root"] = {"path": str(busybox_dir), "readonly": True}
    process = config["process"]
    process.update(terminal=False, args=["true"], consoleSize={"height": 24, "width": 80},
                   oomScoreAdj=0)
    process["user"].update(additionalGids=[1, 2], umask=18)
    process["rlimits"].append({"type": "RLIMIT_NPROC", "hard": 1000, "soft": 500})
    config["domainname"] = "fuzz"
    config["annotations"] = {"org.example.fuzz": "yes"}
    config["hooks"] = {"createRuntime": [{"path": "/bin/true", "args": ["true", "x"],
                                          "env": ["A=b"], "timeout": 5}]}
    linux = config["linux"]
    linux["cgroupsPath"] = cgroup
    linux["devices"] = [{"path": "/dev/fuzz", "type": "c", "major": 1, "minor": 3,
                         "fileMode": 0o666, "uid": 0, "gid": 0}]
    linux["resources"].update(memory={"limit": 64 << 20}, pids={"limit": 100},
                              cpu={"shares": 512})
    linux["resources"]["devices"].append({"allow": True, "type": "c", "major": 1, "minor": 3,
                                          "access": "rw"})
    linux["sysctl"] = {"kernel.shmmni": "4096"}
    linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
                                      "errnoRet": 1,
                                      "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}
    if os.uname().machine != "x86_64":
        del linux["seccomp"]["architectures"]
    return config


# --- mutations ------------------------------------------------------------------

class Deep:
    """``value`` nested ``depth`` arrays deep, once serialised."""

    def __init__(self, value, depth: int) -> None:
        self.value, self.depth = value, depth


def serialise(config: dict) -> bytes:
    deep: list[Deep] = []

    def marker(item):
        if isinstance(item, Deep):
            deep.append(item)
            return f"@@deep{len(deep) - 1}@@"
        raise TypeError(item)

    text = json.dumps(config, allow_nan=True, default=marker)
    for i, item in enumerate(deep):
        text = text.replace(f'"@@deep{i}@@"', "[" * item.depth + serialise_value(item.value)
                            + "]" * item.depth)
    return text.encode()


def serialise_value(value) -> str:
    return serialise({"v": value}).decode()[len('{"v": '):-1]


def paths(value, here=()):
    """Every place in a JSON value, as a tuple of keys and indexes."""
    yield here
    if isinstance(value, Deep):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, here + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from paths(item, here + (i,))


def other_type(rng: random.Random, value):
    """A value of another JSON type than ``value``'s."""
    choices = ["text", 7, True, None, [], {}, [1, "x"], {"k": "v"}, 1.5]
    return rng.choice([c for c in choices if type(c) is not type(value)])


def mutate_string(rng: random.Random, text: str):
    how = rng.choice(["nul", "nul", "surrogate", "surrogate", "empty", "long", "newline",
                      "unicode", "dotdot", "spaces"])
    at = rng.randint(0, len(text))
    return how, {
        "nul": text[:at] + NUL + text[at:],
        "surrogate": text[:at] + SURROGATE + text[at:],
        "empty": "",
        "long": text + "x" * rng.choice((100, 5000)),
        "newline": text + "\nsecond line",
        "unicode": text + "é✓",
        "dotdot": "../" * 8 + text,
        "spaces": " " + text + " ",
    }[how]


def mutate_number(rng: random.Random, number):
    how = rng.choice(["huge", "huge", "negative", "negative", "float", "zero", "string"])
    value = {"huge": lambda: rng.choice(HUGE_INTS), "negative": lambda: rng.choice(NEGATIVE_INTS),
             "float": lambda: rng.choice(ODD_FLOATS), "zero": lambda: 0,
             "string": lambda: str(number)}[how]()
    return how, value


def mutate_once(rng: random.Random, config: dict) -> str:
    """Change one place of ``config`` in place; what was done, in words."""
    where = rng.choice([p for p in paths(config) if p])
    *parent_path, key = where
    parent = config
    for step in parent_path:
        parent = parent[step]
    value = parent[key]
    name = ".".join(str(p) for p in where)
    roll = rng.random()
    if roll < 0.12:
        if isinstance(parent, dict):
            del parent[key]
            return f"{name}: removed"
        parent.pop(key)
        return f"{name}: removed from its array"
    if roll < 0.30:
        parent[key] = other_type(rng, value)
        return f"{name}: {value!r:.40} -> {parent[key]!r}"
    if roll < 0.33:
        # A marker, nested at serialisation: neither the walk above nor
        # json.dumps could recurse 5000 deep.
        depth = rng.choice((250, 5000))
        parent[key] = Deep(value, depth)
        return f"{name}: nested in {depth} arrays"
    if isinstance(value, bool):
        parent[key] = rng.choice([0, 1, "true", "false"])
        return f"{name}: {value} -> {parent[key]!r}"
    if isinstance(value, (int, float)):
        how, parent[key] = mutate_number(rng, value)
        return f"{name}: {value} -> {how} {parent[key]!r}"
    if isinstance(value, str):
        how, parent[key] = mutate_string(rng, value)
        return f"{name}: {how} ({parent[key]!r:.60})"
    if isinstance(value, dict):
        if value and rng.random() < 0.5:
            gone = rng.choice(list(value))
            del value[gone]
            return f"{name}.{gone}: removed"
        extra = rng.choice(["fuzzExtra", "x" * 300, "with\0nul", "with" + SURROGATE, ""])
        value[extra] = other_type(rng, None)
        return f"{name}: extra key {extra!r:.40}"
    if isinstance(value, list):
        how = rng.choice(["empty", "duplicate", "append"])
        if how == "empty":
            value.clear()
        elif how == "duplicate" and value:
            value.append(copy.deepcopy(value[0]))
        else:
            value.append(other_type(rng, None))
        return f"{name}: {how}"
    parent[key] = other_type(rng, value)
    return f"{name}: null -> {parent[key]!r}"


def raw_cases(base: dict) -> list[tuple[str, bytes]]:
    """Whole documents that are not a config at all."""
    text = json.dumps(base)
    return [
        ("an array, not an object", b"[]"),
        ("a number", b"5"),
        ("cut in the middle", text[: len(text) // 2].encode()),
        ("not UTF-8", b'{"ociVersion": "\xff\xfe"}'),
        ("100000 nested arrays", b"[" * 100_000 + b"]" * 100_000),
        ("100000 nested objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
        ("empty", b""),
        ("NaN everywhere", text.replace("1024", "NaN").encode()),
    ]


def cases(base: dict, rng: random.Random, count: int):
    """(description, config.json bytes) of ``count`` cases, raw ones first."""
    made = raw_cases(base)
    yield from made
    for _ in range(count - len(made)):
        config = copy.deepcopy(base)
        changes = [mutate_once(rng, config) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
        yield "; ".join(changes), serialise(config)


# --- the run -----------------------------------------------------------------------

def kubirun_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI with its output in files: an accepted container's init keeps
    them open after `create` returns."""
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as o, open(err, "w") as e:
        result = subprocess.run([str(KUBIRUN_BIN), *args], stdout=o, stderr=e,
                                stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    result.stdout, result.stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
    return result


def problem_with(result: subprocess.CompletedProcess) -> str | None:
    """What is wrong with how a command answered, or None."""
    stderr = result.stderr
    if "internal error" in stderr or "Traceback" in stderr:
        return f"a bug reached the user: {stderr.strip()[-400:]!r}"
    if result.returncode == 0:
        return None
    # One error line, last; warnings before it are said on lines of their own.
    lines = stderr.split("\n")
    if lines[-1] != "" or not lines[-2].startswith("kubirun: ") or \
            not all(line.startswith("kubirun: warning: ") for line in lines[:-2]):
        return f"not one 'kubirun: ' line on stderr: {stderr[-400:]!r}"
    return None


SYSTEM_MOUNTS = ("/", "/proc", "/sys", "/dev")


def host_mounts() -> dict[tuple[str, str], tuple[str, str]]:
    """(mount id, mount point) -> (options, superblock options) of the
    host's system mounts, which a container's mounts are made from (proc,
    sysfs, cgroups, devpts...): a case must change none of them (a remount
    of a shared superblock, say the host's cgroup2 made read-only, shows
    only there).  Other suites' mounts come and go meanwhile: not these."""
    found = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4]
            if any(point == top or point.startswith(top.rstrip("/") + "/") and top != "/"
                   for top in SYSTEM_MOUNTS):
                found[fields[0], point] = (fields[5], fields[-1])
    return found


def mounts_under(path: Path) -> list[str]:
    prefix = f"{path}/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


def cgroup_tree(top: str) -> set[str]:
    """The cgroups under cgroup ``top`` (paths), in any hierarchy."""
    return {f"{top}/{os.path.relpath(os.path.join(base, d), root)}"
            for root in cgroup_dirs(top) for base, dirs, _ in os.walk(root) for d in dirs}


def remove_new_cgroups(before: set[str], top: str) -> list[str]:
    """Remove the cgroups the cases made under ``top`` (a mutated
    cgroupsPath may leave parents behind, as runc's do); one still holding
    a process is a failure."""
    problems = []
    for path in sorted(cgroup_tree(top) - before, key=lambda p: -p.count("/")):
        pids = [pid for d in cgroup_dirs(path) if (d / "cgroup.procs").exists()
                for pid in (d / "cgroup.procs").read_text().split()]
        if pids:
            problems.append(f"processes {pids} left in cgroup {path}")
        _force_remove_cgroup(path)  # (only ours: under the session's parent)
    return problems


def test_mutated_configs_are_accepted_or_refused_in_one_line(busybox_dir, tmp_path, private_store):
    state_root = Path(os.environ["KUBIRUN_ROOT"])
    # Every case's cgroup is under this parent (a mutated or missing
    # cgroupsPath goes under the session's parent: never the host's).
    parent = f"{TEST_CGROUP_PARENT}/fuzz-{uuid.uuid4().hex[:8]}"
    # A root of its own: an accepted case makes its mount points in it.
    root = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", str(busybox_dir), str(root)], check=True)
    base = fuzz_base(root, tmp_path, f"{parent}/case")
    cgroups_before = cgroup_tree(TEST_CGROUP_PARENT)
    mounts_before = host_mounts()
    rng = random.Random(SEED)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    failures, accepted, refused = [], 0, 0
    for index, (what, document) in enumerate(cases(base, rng, CASES)):
        container_id = f"fuzz{index}"
        (bundle / "config.json").write_bytes(document)
        try:
            result = kubirun_cli(tmp_path, "create", "--bundle", str(bundle), container_id)
        except subprocess.TimeoutExpired:
            failures.append(f"case {index} ({what}): create hung")
            result = None
        problem = problem_with(result) if result is not None else None
        if result is not None and result.returncode == 0:
            accepted += 1
            deleted = kubirun_cli(tmp_path, "delete", "--force", container_id)
            if deleted.returncode != 0:
                problem = problem or f"delete --force failed: {deleted.stderr.strip()!r}"
        else:
            refused += 1
        left = sorted(os.listdir(state_root)) if state_root.exists() else []
        if left:
            problem = problem or f"left in the state root: {left}"
            kubirun_cli(tmp_path, "delete", "--force", container_id)
        under = mounts_under(tmp_path)
        if under:
            problem = problem or f"mounts left: {under}"
        mounts = host_mounts()
        changed = [m for m in mounts_before if m in mounts and mounts[m] != mounts_before[m]]
        if changed:
            problem = problem or f"changed the host's mounts: {[mounts[m] for m in changed]}"
            mounts_before = mounts
        if problem:
            failures.append(f"case {index} ({what}): {problem}")
    failures += remove_new_cgroups(cgroups_before, TEST_CGROUP_PARENT)
    print(f"\nconfig.json fuzz, seed {SEED}: {CASES} cases, {accepted} accepted, {refused} refused")
    assert not failures, f"seed {SEED}: {len(failures)} failures:\n" + "\n".join(failures[:40])
