"""The runtime <-> init channel: a pair of close-on-exec pipes.

The init reports each point it reaches and waits for the runtime's go-ahead;
an error report is always its last message; end-of-file on the runtime's
side means the init is gone, either dead or replaced by the container's
program (``execve`` closed its end).  Pipes, not a socketpair: the
``socket`` module costs ~2.5 ms of start-up.

    init -> runtime   b"U"  born in a new user namespace: map my ids
                      b"C"  mounts made: is my cgroup ready?
                      b"H"  in my cgroup: run the prestart
                            and createRuntime hooks
                      b"R"  ready: record me as created
                      b"W"  waiting for ``start`` (PDEATHSIG dropped)
                      b"E<code>[:<errno>]\\0<message>"  failed (then exits);
                            the errno of the failed call, when known
                            (the exec helper's too), becomes the raised
                            error's ``errno``
    runtime -> init   b"G" + length (4 bytes, little-endian) + payload:
                            go on (after C: the cgroup's files and mounts, JSON)

The runtime may say go before the init asks (the cgroup's answer is sent
as soon as the cgroup is made): it waits in the pipe, and the init's ask
returns at once.  So two messages can be in a pipe together: the runtime
reads the init's tags one byte at a time, the init reads each go-ahead by
its length.
"""
from __future__ import annotations

import os

from kubirun.base.errors import ContainerStartError

USERNS, CGROUP, HOOKS, READY, WAITING, ERROR, GO = b"U", b"C", b"H", b"R", b"W", b"E", b"G"
LENGTH = 4  # bytes of a go-ahead's payload length, after its b"G"


def _read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes of the pipe (the init exits if the runtime is gone
    before they all came)."""
    data = b""
    while len(data) < size:
        more = os.read(fd, size - len(data))
        if not more:
            os._exit(1)
        data += more
    return data


class InitChannel:
    def __init__(self) -> None:
        self._to_runtime_r, self._to_runtime_w = os.pipe2(os.O_CLOEXEC)
        self._to_init_r, self._to_init_w = os.pipe2(os.O_CLOEXEC)

    # -- the init's side ------------------------------------------------------

    def child_side(self) -> None:
        for fd in (self._to_runtime_r, self._to_init_w):
            if fd is not None:  # None: a zygote's fork, which never had them
                os.close(fd)

    def ask(self, tag: bytes) -> bytes:
        """Report ``tag`` and wait for the go-ahead (exit if the runtime
        died); what the runtime sent with it."""
        os.write(self._to_runtime_w, tag)
        head = _read_exactly(self._to_init_r, 1 + LENGTH)
        if head[:1] != GO:
            os._exit(1)
        size = int.from_bytes(head[1:], "little")
        return _read_exactly(self._to_init_r, size) if size else b""

    def report_fd(self) -> int:
        """The fd an error report goes to (the exec helper writes there)."""
        return self._to_runtime_w

    def tell(self, tag: bytes) -> None:
        os.write(self._to_runtime_w, tag)

    def report_error(self, code: int, message: str, errno: int | None = None) -> None:
        head = f"{code}:{errno}" if errno else f"{code}"
        try:
            os.write(self._to_runtime_w, ERROR + f"{head}\0{message}".encode(errors="replace"))
        except OSError:
            pass

    # -- the runtime's side ---------------------------------------------------

    def parent_side(self) -> None:
        os.close(self._to_runtime_w)
        os.close(self._to_init_r)

    def receive(self) -> bytes:
        """The init's next message: a tag, or b"" at end-of-file.  An error
        report is raised as ``ContainerStartError`` with the init's code."""
        data = os.read(self._to_runtime_r, 1)  # one tag (see above)
        if data == ERROR:
            while True:
                more = os.read(self._to_runtime_r, 65536)
                if not more:
                    break
                data += more
            raise parse_error(data[1:])
        return data

    def expect(self, tag: bytes, what: str) -> None:
        got = self.receive()
        if got != tag:
            raise ContainerStartError(f"container init exited while {what}")

    def go(self, payload: bytes = b"") -> None:
        """Let the init go on; ``payload`` (one write, so under PIPE_BUF = 4 KiB
        it arrives whole) is what ``ask`` returns there.  Framed with its
        length: a go-ahead sent before the init asked may share the pipe
        with the one before it."""
        os.write(self._to_init_w, GO + len(payload).to_bytes(LENGTH, "little") + payload)

    def go_ahead(self, payload: bytes = b"") -> None:
        """``go`` before the init has asked: an init that died meanwhile
        (its end of the pipe closed) is not an error here, the report it
        left is (the next ``expect`` raises it)."""
        try:
            self.go(payload)
        except BrokenPipeError:
            pass

    def close(self) -> None:
        for fd in (self._to_runtime_r, self._to_init_w):
            try:
                os.close(fd)
            except OSError:
                pass


def parse_error(report: bytes) -> ContainerStartError:
    """An error report (after its b"E") as the error to raise."""
    head, _, message = report.partition(b"\0")
    code, _, errno = head.partition(b":")
    return ContainerStartError(message.decode(errors="replace"), int(code or 1),
                               errno=int(errno) if errno.isdigit() else None)
