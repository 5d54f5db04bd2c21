"""A runtime-agnostic conformance suite for OCI runtimes (runc-compatible CLIs).

It builds its own bundles from Debian's busybox-static and checks behaviour that the
runtime-spec and runc define, against whatever runtime binary it is given
(`OCIRT_CONFORMANCE_RUNTIME` or `--runtime`). It never imports ocirt itself.
"""
