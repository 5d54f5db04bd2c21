"""SIF (Singularity Image Format): single-file container images for ocirt.

A SIF file carries a container as one file that can be copied, checksummed, signed and
mounted in place. This package reads and writes the format byte for byte as the
reference implementation (sylabs/sif) does, signs and verifies images, and turns an
image into an OCI bundle by mounting (or unpacking) its root file system.

Modules, one concern each:

- `format`: the on-disk records (global header, descriptors) and the enumerations
- `image`: `Image`, loading with bounds checks, creating, adding/deleting objects
- `integrity`: what signatures cover (digests, metadata JSON), signing and verification
- `dsse`, `pgp`, `keys`: the two signature formats and key handling
- `loop`, `mount`: loop devices, kernel and FUSE mounts, and how to undo them
- `bundle`, `runconfig`: SIF -> OCI bundle (config.json from the image's metadata)
- `ocisif`: OCI-SIF images (an OCI image stored as SIF objects)
- `build`, `ocilayout`: building images from a directory or an OCI image layout
- `policy`: trusted keys, and refusing unsigned or tampered images

Nothing is imported here, so `import ocirt.sif.image` costs only what it uses.
"""
