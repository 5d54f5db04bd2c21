"""Hand-made OCI image layouts (image-spec v1), for the tests that feed images to ocirt's
SIF builder and to containerd: blobs, a manifest and config per image, an index naming
them, and the layout packed into the archive form `ctr images import` reads."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Sequence

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR = "application/vnd.oci.image.layer.v1.tar"


def rootfs_tar(rootfs: str, extra: Sequence[tuple[tarfile.TarInfo, bytes | None]] = ()) -> bytes:
    """The directory `rootfs` as one uncompressed layer, plus `extra` entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(rootfs, arcname=".")
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


class Layout:
    """A hand-made OCI image layout."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"))
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def blob(self, data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.path, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    def image(self, layers: list[dict], config: dict, ref: str = "latest",
              annotations: dict[str, str] | None = None) -> None:
        """Add an image to the index under `ref` (and any further index annotations,
        e.g. containerd's io.containerd.image.name for the full name)."""
        cfg = self.blob(json.dumps(config).encode(),
                        "application/vnd.oci.image.config.v1+json")
        manifest = self.blob(json.dumps({"schemaVersion": 2, "config": cfg,
                                         "layers": layers}).encode(),
                             "application/vnd.oci.image.manifest.v1+json")
        manifest["annotations"] = {"org.opencontainers.image.ref.name": ref,
                                   **(annotations or {})}
        index_path = os.path.join(self.path, "index.json")
        index = {"schemaVersion": 2, "manifests": []}
        if os.path.exists(index_path):
            with open(index_path, "rb") as f:
                index = json.load(f)
        index["manifests"].append(manifest)
        with open(index_path, "w") as f:
            json.dump(index, f)

    def archive(self, path: str) -> str:
        """The layout as one tar file (what `ctr images import` and skopeo's oci-archive
        read)."""
        with tarfile.open(path, "w") as tar:
            for name in sorted(os.listdir(self.path)):
                tar.add(os.path.join(self.path, name), arcname=name)
        return path
