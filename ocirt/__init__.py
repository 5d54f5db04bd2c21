"""ocirt: an OCI container runtime in Python, a drop-in for runc, with native SIF images.

Importing this package must stay cheap: engines call the CLI for every create, start,
kill and delete, and every module imported here is paid for on each of those calls.
"""

__version__ = "0.1.0"

# The runtime-spec version this runtime implements (reported in `state` and `features`).
OCI_VERSION = "1.3.0"
