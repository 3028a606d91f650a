"""`falconer sensor`: watch this host's syscalls with bcc and print rule alerts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from falconer.engine import EngineOptions
    from falconer.sensor.metrics import MetricsSettings

#: -o keys and the EngineOptions field each sets.
ENGINE_KEYS = {"priority": "min_priority", "min_priority": "min_priority",
               "rule_matching": "rule_matching", "suggested_output": "suggested_output"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `sensor` subcommand."""
    p = subparsers.add_parser(
        "sensor", help="run the eBPF sensor on this host (root) and print alerts",
        description="Watch this host's system calls (bcc/eBPF) and evaluate Falco rules.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--rules", nargs="+", type=Path, metavar="FILE",
                        help="rules files, loaded in order (default: Falconer's rules)")
    source.add_argument("--config", type=Path, metavar="FILE",
                        help="a FalcoInstance's falconer.yaml (rules files, engine options, "
                        "output format, buffer size); reloaded when its content changes")
    p.add_argument("--json", action="store_true", help="print alerts as Falco JSON lines")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="engine option: priority=<min priority>, rule_matching=first|all, "
                   "suggested_output=true|false (append the container and pod fields to "
                   "every output, as Falco's shipped falco.yaml; default true); or an output "
                   "in falco.yaml's keys: http_output.{enabled,url,user_agent,ca_cert,ca_bundle,"
                   "ca_path,mtls,client_cert,client_key,keep_alive}, grpc.{enabled,bind_address,"
                   "threadiness,private_key,cert_chain,root_certs} with grpc_output.enabled, "
                   "file_output.{enabled,filename,keep_alive}, program_output.{enabled,program,"
                   "keep_alive}, json_output=true|false (the file and program format)")
    p.add_argument("--capture", type=Path, metavar="FILE",
                   help="also write decoded events as replay JSONL to FILE")
    p.add_argument("--all-events", action="store_true",
                   help="forward every syscall, not only those the rules need")
    p.add_argument("--buffer-pages", type=int, default=None, metavar="N",
                   help="ring buffer size in pages (power of two; default: the config's "
                   "bufferSizeBytes, else 1024)")
    p.add_argument("--kubeconfig", type=Path, metavar="FILE",
                   help="Kubernetes API credentials for Events, FalcoAlerts and the status report "
                   "(default: $KUBECONFIG, else the in-cluster ServiceAccount)")
    p.add_argument("--node-name", metavar="NAME",
                   help="the node this sensor watches (default: $NODE_NAME)")
    p.add_argument("--cri-socket", metavar="PATH", default=None,
                   help="the container runtime's CRI socket for container and pod metadata "
                   "(default: /run/containerd/containerd.sock or /run/crio/crio.sock, "
                   "whichever exists)")
    p.add_argument("--tls-root", type=Path, default=None, metavar="DIR",
                   help="the folder holding the TLS Secret of each configured output (http/, grpc/: "
                   "ca.crt, tls.crt, tls.key); default /etc/falconer-tls, where the operator mounts them")
    p.add_argument("--state-dir", type=Path, metavar="DIR", default=None,
                   help="keep the last good rules of --config here; a start on a config that "
                   "does not load runs them instead (and reports why)")
    m = p.add_argument_group("metrics", "Prometheus /metrics (sensor/metrics.py); overrides a "
                             "config's `metrics`")
    m.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve /metrics on this port (Falco's is 8765; 0 picks a free one)")
    m.add_argument("--metrics-address", default="0.0.0.0", metavar="ADDR",
                   help="address to listen on (default 0.0.0.0)")
    m.add_argument("--metrics-tls-cert", type=Path, metavar="PEM", help="TLS certificate file")
    m.add_argument("--metrics-tls-key", type=Path, metavar="PEM", help="TLS private key file")
    m.add_argument("--metrics-insecure", action="store_true",
                   help="serve plain HTTP (local use only; otherwise --metrics-tls-cert/-key)")
    m.add_argument("--metrics-pod-labels", action="store_true",
                   help="label rule matches with k8s_ns_name and k8s_pod_name")
    p.set_defaults(run=run)


def metrics_settings(args: argparse.Namespace) -> MetricsSettings | None:
    """The command line's metrics settings, or None when --metrics-port is not given;
    MetricsConfigError (a ValueError) without TLS files and without --metrics-insecure."""
    from falconer.sensor.metrics import MetricsSettings  # noqa: PLC0415

    if args.metrics_port is None:
        return None
    return MetricsSettings(enabled=True, address=args.metrics_address, port=args.metrics_port,
                           cert_file=args.metrics_tls_cert, key_file=args.metrics_tls_key,
                           insecure=args.metrics_insecure, pod_labels=args.metrics_pod_labels,
                           ).check("--metrics-")


def parse_options(pairs: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """`-o key=value` pairs -> (EngineOptions keyword arguments, output keys in
    falco.yaml's names such as `http_output.url`); ValueError if a pair is bad."""
    from falconer.sensor.sinks.outputs import is_falco_key  # noqa: PLC0415

    engine: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if sep and is_falco_key(key):
            outputs[key] = value
            continue
        if not sep or key not in ENGINE_KEYS:
            raise ValueError(f"bad -o {pair!r}: expected one of "
                             f"{', '.join(k + '=...' for k in ENGINE_KEYS)}, json_output=..., or an "
                             "output key: http_output.*, grpc.*, grpc_output.enabled, file_output.*, "
                             "program_output.*")
        engine[ENGINE_KEYS[key]] = value
    return engine, outputs


def engine_options(options: dict[str, str]) -> EngineOptions:
    """EngineOptions from parsed `-o` pairs; `suggested_output` (true unless "false", as
    Falco's shipped configuration) becomes the append_output setting."""
    from falconer.engine import FALCO_DEFAULT_APPEND_OUTPUT, EngineOptions  # noqa: PLC0415

    suggested = options.pop("suggested_output", "true").lower()
    if suggested not in ("true", "false"):
        raise ValueError(f"bad -o suggested_output={suggested}: expected true or false")
    defaults = EngineOptions()
    return EngineOptions(min_priority=options.get("min_priority", defaults.min_priority),
                         rule_matching=options.get("rule_matching", defaults.rule_matching),
                         append_output=FALCO_DEFAULT_APPEND_OUTPUT if suggested == "true" else ())


def run(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM; exit 0, or 2 on a setup problem (with the reason)."""
    from falconer import paths  # noqa: PLC0415
    from falconer.sensor import probe  # noqa: PLC0415
    from falconer.sensor.config import RulesInput  # noqa: PLC0415
    from falconer.sensor.runner import Sensor, SensorOptions  # noqa: PLC0415
    from falconer.sensor.sinks import outputs as stream_outputs  # noqa: PLC0415

    outputs = stream_outputs.OutputSettings()

    try:
        metrics = metrics_settings(args)
        if args.config is not None:
            if args.options:
                raise ValueError("-o cannot be combined with --config: the engine options "
                                 "come from the config file")
            rules = RulesInput(config=args.config.absolute())
        else:
            engine_keys, output_keys = parse_options(args.options)
            engine_opts = engine_options(engine_keys)
            outputs = stream_outputs.from_falco_keys(output_keys)
            rules = RulesInput(rules=list(args.rules or paths.default_rules_files()),
                               engine=engine_opts)
    except (ValueError, TypeError) as exc:
        print(f"falconer sensor: {exc}", file=sys.stderr)
        return 2
    opts = SensorOptions(rules=rules, json_output=args.json, capture=args.capture,
                         all_events=args.all_events, buffer_pages=args.buffer_pages,
                         kubeconfig=args.kubeconfig, node_name=args.node_name,
                         cri_socket=args.cri_socket, outputs=outputs, state_dir=args.state_dir,
                         metrics=metrics, **({"tls_root": args.tls_root} if args.tls_root else {}))
    sensor = Sensor(opts)
    try:
        sensor.start()
    except (probe.ProbeError, RuntimeError, OSError) as exc:
        print(f"falconer sensor: {exc}", file=sys.stderr)
        return 2
    sensor.install_signals()
    try:
        sensor.run()
    finally:
        sensor.close()
    return 0
