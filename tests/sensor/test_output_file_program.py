"""The file and program outputs in Falco's text and JSON lines, with Falco's keep_alive
semantics (file: opened once, or reopened per alert so a rotated file starts anew;
program: started once, or once per alert), losses counted; and a live sensor feeding both.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import marked_rule
import pytest

from falconer.engine import Alert
from falconer.sensor.sinks.base import Delivery
from falconer.sensor.sinks.file import FileConfigError, FileSettings, FileSink
from falconer.sensor.sinks.outputs import from_config, from_falco_keys
from falconer.sensor.sinks.program import ProgramConfigError, ProgramSettings, ProgramSink
from falconer.sensorconfig import FileOutput, Outputs, ProgramOutput


def alert(marker: str) -> Alert:
    return Alert(rule="Test rule", priority="Notice", source="syscall", time_ns=1_700_000_000_000_000_001,
                 output=f"saw {marker}\x1b[31m", output_fields={"fd.name": marker}, tags=["t"])


def deliver(sink: FileSink | ProgramSink, *markers: str) -> None:
    sink.start()
    for m in markers:
        sink.offer(Delivery(alert(m), None))
    sink.close(15.0)


def deliver_around_a_move(sink: FileSink, moved: Path) -> None:
    """Deliver alert `one`, move the sink's file to `moved` (as logrotate does), deliver
    alert `two`, close the sink."""
    sink.start()
    sink.offer(Delivery(alert("one"), None))
    _wait_lines(sink.output.filename, 1)
    sink.output.filename.rename(moved)
    sink.offer(Delivery(alert("two"), None))
    sink.close(5.0)


def test_file_without_keep_alive_reopens_per_alert_so_rotation_starts_a_new_file(tmp_path):
    path = tmp_path / "alerts.txt"
    sink = FileSink(FileSettings(path, keep_alive=False, json_output=False), "node-a", err=io.StringIO())
    deliver_around_a_move(sink, tmp_path / "alerts.txt.1")
    assert (tmp_path / "alerts.txt.1").read_text() == alert("one").text_line() + "\n"
    assert path.read_text() == alert("two").text_line() + "\n"
    assert "\x1b" not in path.read_text()                  # text lines escape control characters
    assert path.stat().st_mode & 0o777 == 0o600
    assert sink.stats().delivered == 2


def test_file_with_keep_alive_keeps_writing_the_open_file(tmp_path):
    path = tmp_path / "alerts.json"
    sink = FileSink(FileSettings(path, keep_alive=True, json_output=True), "node-a", err=io.StringIO())
    deliver_around_a_move(sink, tmp_path / "moved.json")
    lines = (tmp_path / "moved.json").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [alert("one").to_json("node-a"), alert("two").to_json("node-a")]
    assert not path.exists()


def test_an_unwritable_file_loses_alerts_counted(tmp_path):
    err = io.StringIO()
    sink = FileSink(FileSettings(tmp_path / "missing-dir" / "a.txt"), "node-a", err=err, attempts=2)
    deliver(sink, "one")
    s = sink.stats()
    assert (s.delivered, s.failures, s.dropped) == (0, 2, 1)
    assert "No such file or directory" in err.getvalue()


def test_program_without_keep_alive_runs_once_per_alert(tmp_path):
    out = tmp_path / "out"
    prog = f"echo $$ >> {tmp_path}/pids; cat >> {out}"
    deliver(ProgramSink(ProgramSettings(prog, keep_alive=False, json_output=True), "node-a"), "one", "two", "three")
    assert [json.loads(x)["output_fields"]["fd.name"] for x in out.read_text().splitlines()] == ["one", "two", "three"]
    assert len(set((tmp_path / "pids").read_text().split())) == 3


def test_program_with_keep_alive_runs_once_for_all_alerts(tmp_path):
    out = tmp_path / "out"
    sink = ProgramSink(ProgramSettings(f"echo $$ >> {tmp_path}/pids; cat >> {out}", keep_alive=True), "node-a")
    deliver(sink, "one", "two", "three")
    assert out.read_text() == "".join(alert(m).text_line() + "\n" for m in ("one", "two", "three"))
    assert len((tmp_path / "pids").read_text().split()) == 1
    assert sink.stats().delivered == 3


def test_a_kept_program_that_exits_is_restarted(tmp_path):
    out = tmp_path / "out"
    err = io.StringIO()
    sink = ProgramSink(ProgramSettings(f"head -n 1 >> {out}", keep_alive=True), "node-a", err=err)
    sink.start()
    for m in ("one", "two"):
        sink.offer(Delivery(alert(m), None))
        _wait_lines(out, 1 if m == "one" else 2)
    sink.close(5.0)
    assert len(out.read_text().splitlines()) == 2 and "restarting it" in err.getvalue()


def test_a_failing_program_loses_the_alert_counted(tmp_path):
    err = io.StringIO()
    sink = ProgramSink(ProgramSettings("cat > /dev/null; exit 3"), "node-a", err=err, attempts=2)
    deliver(sink, "one")
    s = sink.stats()
    assert (s.delivered, s.failures, s.dropped) == (0, 2, 1)
    assert "exited with 3" in err.getvalue()


def test_settings_from_falco_keys_and_falconer_yaml():
    got = from_falco_keys({"file_output.enabled": "true", "file_output.filename": "/var/log/a.txt",
                           "file_output.keep_alive": "true", "program_output.enabled": "true",
                           "program_output.program": "logger -t falco", "json_output": "true"})
    assert got.file == FileSettings(Path("/var/log/a.txt"), keep_alive=True, json_output=True)
    assert got.program == ProgramSettings("logger -t falco", keep_alive=False, json_output=True)
    assert from_falco_keys({"file_output.enabled": "false", "file_output.filename": "/a"}).file is None
    got = from_config(Outputs(file=FileOutput("/var/log/a", format="text"), program=ProgramOutput("cat", True)),
                      Path("/etc/falconer-tls"))
    assert (got.file, got.program) == (FileSettings(Path("/var/log/a")), ProgramSettings("cat", True, True))
    for blank in ({"file_output.enabled": "true"}, {"file_output.filename": " "}):
        with pytest.raises(FileConfigError, match="needs file_output.filename"):
            from_falco_keys(blank)
    with pytest.raises(ProgramConfigError, match="unsupported keys"):
        from_falco_keys({"program_output.programme": "x"})
    with pytest.raises(ValueError, match="json_output: expected true or false"):
        from_falco_keys({"json_output": "yes"})


def _wait_lines(path: Path, n: int, timeout_s: float = 10.0) -> None:
    import time  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path}: fewer than {n} lines after {timeout_s} s")


def test_live_sensor_feeds_file_and_program_outputs(start_sensor, tmp_path, marker):
    rules = marked_rule.write_rules(tmp_path)
    file_out, prog_out = tmp_path / "events.json", tmp_path / "program.json"
    sensor = start_sensor("--rules", str(rules), "-o", "json_output=true",
                          "-o", "file_output.enabled=true", "-o", f"file_output.filename={file_out}",
                          "-o", "program_output.enabled=true", "-o", "program_output.keep_alive=true",
                          "-o", f"program_output.program=cat >> {prog_out}")
    opened = marked_rule.open_marked(tmp_path, marker)
    assert sensor.rules_for(marker) == {marked_rule.NAME}
    summary = sensor.stop()
    for path in (file_out, prog_out):
        hits = [json.loads(x) for x in path.read_text().splitlines() if marker in x]
        assert len(hits) == 1 and hits[0]["rule"] == marked_rule.NAME, path
        assert hits[0]["output_fields"]["fd.name"] == str(opened)
    assert "outputs: file, program" in summary
    assert os.stat(file_out).st_mode & 0o777 == 0o600
