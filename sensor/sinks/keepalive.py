"""What Falco's `file_output` and `program_output` share: the falco.yaml keys `enabled`,
`keep_alive` and one target (`filename`, `program`), and a streaming sink that writes one
alert line (Falco's text or JSON) per alert to that target, kept open between alerts
with `keep_alive` or opened for each alert without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any, Generic, Protocol, TextIO, TypeVar

from falconer.sensor.sinks.base import Delivery
from falconer.sensor.sinks.stream import StreamSink, alert_line, falco_bool


class KeepAliveOutput(Protocol):
    """The settings a keep-alive output's sink reads (frozen dataclasses provide them)."""

    @property
    def keep_alive(self) -> bool:
        """Whether the target stays open between alerts."""

    @property
    def json_output(self) -> bool:
        """Whether alerts are JSON lines (else Falco's text lines)."""


def falco_keep_alive_keys(keys: Mapping[str, str], section: str, target: str,
                          error: type[ValueError]) -> tuple[str, bool] | None:
    """A falco.yaml `<section>.<key>` `-o` section (keys `enabled`, `keep_alive`,
    `target`) as `(target value, keep_alive)`; None unless enabled (the default when the
    target is given). `error` (naming the key) for an unknown key or a blank target;
    ValueError for a boolean that is not true or false."""
    unknown = set(keys) - {"enabled", "keep_alive", target}
    if unknown:
        raise error(f"{section}: unsupported keys {sorted(unknown)}")
    if not falco_bool(keys.get("enabled", "true" if target in keys else "false"), f"{section}.enabled"):
        return None
    value = keys.get(target, "")
    if not value.strip():
        raise error(f"{section}.enabled=true needs {section}.{target}")
    return value, falco_bool(keys.get("keep_alive", "false"), f"{section}.keep_alive")


S = TypeVar("S", bound=KeepAliveOutput)


class KeepAliveSink(StreamSink, Generic[S]):
    """A streaming sink writing one line per alert to a target `send` keeps open (with
    `output.keep_alive`) or opens per alert; `release` closes a kept target."""

    def __init__(self, output: S, hostname: str, err: TextIO | None = None, **kw: Any) -> None:
        super().__init__(err, **kw)
        self.output = output
        self.hostname = hostname

    def line(self, delivery: Delivery) -> bytes:
        """The alert as one UTF-8 line, newline included."""
        return (alert_line(delivery.alert, self.hostname, self.output.json_output) + "\n").encode()

    def write(self, stream: IO[bytes], line: bytes) -> None:
        """Write and flush `line` to the open target; on OSError the target is released
        (opened anew by the next send) and the error raised again."""
        try:
            stream.write(line)
            stream.flush()
        except OSError:
            self.release()
            raise
