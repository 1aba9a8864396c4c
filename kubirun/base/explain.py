"""``--explain``: a run narrated on stderr, one line per step from the fork
to ``execve``: the system call and its arguments, why, and where in the
code.

The lines come from the code that does the steps: the init calls
``step(N, ...)`` at each of its numbered steps (``kubirun/init.py: step
N``), and the other places that ask the kernel for something (the fork,
the cgroup files, capabilities, the user switch, seccomp, ``execve``;
each mount through ``kubirun.ns.narrating.NarratingKernel``) call
``say``, whose "where" is the caller's own file and function.  Nothing here decides or
does a step.

Off by default, and free when off: this module is only the switch (``ON``)
and entry points that return at once while it is False; callers pass raw
values, formatted by ``kubirun.base.narration`` (imported by ``enable``, before
the fork: the init and exec'd children inherit it, and need no import
after ``pivot_root``).
"""
from __future__ import annotations

ON = False
_step = 0  # the init's current step, for the lines of the code it calls


def enable(colour: bool | None = None) -> None:
    """Narration on for this process and the children it forks from now;
    in colour when stderr is a terminal (unless told)."""
    global ON
    from kubirun.base import narration

    narration.set_colour(colour)
    ON = True


def begin(rootfs: str) -> None:
    """The init's root, so that paths under it read ROOT/..."""
    if ON:
        from kubirun.base import narration

        narration.rootfs = rootfs.rstrip("/")


def step(number: int, call: str, why: str, *args: object) -> None:
    """A numbered step of the init (kubirun/init.py says what each is).
    ``call`` is a format string of ``args`` (``{:clone}``, ``{:ms}``: flag
    words by name), formatted only when on."""
    global _step
    if ON:
        from kubirun.base import narration

        _step = number
        narration.emit(f"kubirun/init.py: step {number}", narration.format_call(call, args), why)


def say(call: str, why: str, *args: object, depth: int = 1) -> None:
    """A step done by the caller: ``where`` is the caller's file and
    function (``depth`` frames up), with the init's step if in one."""
    if ON:
        from kubirun.base import narration

        narration.emit(narration.where(depth) + (f" (step {_step})" if _step else ""),
                       narration.format_call(call, args), why)

