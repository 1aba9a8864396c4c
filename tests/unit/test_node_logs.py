"""Container logs in the CRI format: full and partial lines, rotation at
the size cap, the previous instance kept and older ones removed; the FIFO
a container writes into keeps what it wrote with no reader yet."""
from __future__ import annotations

import asyncio
import os
import re

from kubirun.node import logs

CRI = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) [FP] ")


def _pump(tmp_path, data: bytes, max_line: int | None = None) -> list[str]:
    async def main():
        fifo = logs.Fifo(str(tmp_path / "io" / "c_0.stdout"))
        reader = fifo.reader()
        os.write(fifo.writer, data)
        fifo.close_writer()  # the only writer: end of file after the data
        log = logs.LogFile(str(tmp_path / "logs"), 0)
        pump = logs.Pump(reader, "stdout", log)
        await asyncio.wait_for(pump.done, 5)
        log.close()
        fifo.remove()

    asyncio.run(main())
    return logs.read(str(tmp_path / "logs"), 0)


def test_lines_are_cri_lines_and_the_last_unended_one_is_full(tmp_path):
    lines = _pump(tmp_path, b"one\ntwo\nthree")
    assert all(CRI.match(line) for line in lines)
    assert [logs.message(line) for line in lines] == [("one", True), ("two", True),
                                                      ("three", True)]


def test_a_long_line_is_cut_into_partial_lines(tmp_path):
    lines = _pump(tmp_path, b"x" * (logs.MAX_LINE + 10) + b"\n")
    assert [(len(text), full) for text, full in map(logs.message, lines)] == \
        [(logs.MAX_LINE, False), (10, True)]


def test_rotation_at_the_cap_keeps_both_parts_readable(tmp_path):
    log = logs.LogFile(str(tmp_path), 0, max_size=200)
    for i in range(10):
        log.write("stdout", f"line {i}".encode(), True)
    log.close()
    assert sorted(os.listdir(tmp_path)) == ["0.log", "0.log.1"]
    assert os.path.getsize(tmp_path / "0.log.1") >= 200
    texts = [logs.message(line)[0] for line in logs.read(str(tmp_path), 0)]
    assert texts[-1] == "line 9" and len(texts) < 10  # older rotated parts go
    assert [logs.message(line)[0] for line in logs.read(str(tmp_path), 0, tail=2)] == \
        ["line 8", "line 9"]


def test_the_previous_instance_is_kept_and_older_ones_go(tmp_path):
    for instance in range(3):
        log = logs.LogFile(str(tmp_path), instance)
        log.write("stdout", f"run {instance}".encode(), True)
        log.close()
    assert sorted(os.listdir(tmp_path)) == ["1.log", "2.log"]
    assert logs.message(logs.read(str(tmp_path), 1)[0])[0] == "run 1"
