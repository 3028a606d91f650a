"""`falconer.sensor`: the bcc/eBPF sensor — kernel records, process/fd state, alerts.

Layers, kernel to user: `probe.bpf.c` (capture) and `probe` (loading, maps),
`record` (the one record layout), `syscalls`/`render` (Falco's names and spellings),
`state`/`containers`/`tracker` (what is known between events), `event` (the engine's
Event protocol, fields computed lazily), `runner`/`commands` (the `falconer sensor`
command). Only `probe` imports bcc.
"""
