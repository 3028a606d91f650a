"""Where alerts go: one interface (`base.Sink`), one module per destination.

`stdout` writes synchronously on the event loop (detection and stdout never wait on
anything else); `events`, `falcoalerts` and `status` talk to the Kubernetes API from
their own worker thread behind a bounded queue, so a slow or absent API server never
slows the event loop; `http`, `file` and `program` deliver alert by alert from theirs
(`stream`), `grpc` serves Falco's outputs API from a bounded queue its clients consume
(`outputs` builds these four from falconer.yaml or `-o` keys). Every sink counts what
it delivered and what it lost.
"""
