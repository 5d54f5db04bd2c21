"""The verification policy the runtime enforces before it runs an image: trusted keys
from a file or the command line; unsigned, tampered or foreign-signed images refused
with the reason."""

from __future__ import annotations

import json
import os

import pytest

from ocirt.errors import OcirtError
from ocirt.sif.policy import Policy, PolicyError, load_policy, verify_image
from tests.sif.helpers import KEYS, fixture, need_reference_files, read_bytes

ECDSA = os.path.join(KEYS, "ecdsa-p256-public.pem")


def _policy_file(tmp_path, doc: dict) -> str:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_policy_file_relative_keys_and_verdicts(tmp_path) -> None:
    need_reference_files()
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "site.pub").write_bytes(read_bytes(ECDSA))
    policy = load_policy(_policy_file(tmp_path, {"keys": ["keys/site.pub"]}))
    assert policy is not None and policy.keys == [str(keys / "site.pub")]
    results = verify_image(fixture("a-minimal-busybox-signed-dsse-ecdsa-p256.sif"), policy)
    assert [r.objects for r in results] == [[1, 2]]
    for name, reason in (("a-minimal-busybox.sif", "signature not found for object group 1"),
                         ("g-tampered-dsse-ecdsa-partition.sif",
                          "data object integrity compromised: 5"),
                         ("h-empty.sif", "no object groups")):
        with pytest.raises(OcirtError) as info:
            verify_image(fixture(name), policy)
        assert info.value.message.startswith(fixture(name) + ": verification failed: ")
        assert info.value.message.endswith(reason)


def test_keys_from_the_command_line_and_no_keys(tmp_path) -> None:
    image = fixture("c-signed-dsse-ecdsa-p256.sif")
    assert verify_image(image, Policy().with_keys([ECDSA], []))
    with pytest.raises(OcirtError, match="no public key given"):
        verify_image(image, Policy())
    with pytest.raises(OcirtError, match="envelope: no signature verifies"):
        verify_image(image, Policy().with_keys([os.path.join(KEYS, "rsa2048-public.pem")],
                                               []))
    assert verify_image(fixture("a-minimal-busybox.sif"), Policy(require=False)) == []


def test_invalid_policies_name_the_field(tmp_path) -> None:
    for doc, reason in (({"keys": "one.pem"}, "keys must be a list"),
                        ({"require": "yes"}, "require must be true or false"),
                        ({"trust": []}, "unknown field 'trust'"), ([], "not a JSON object")):
        with pytest.raises(PolicyError, match=reason):
            load_policy(_policy_file(tmp_path, doc))  # type: ignore[arg-type]
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(PolicyError, match="bad.json"):
        load_policy(str(bad))
    with pytest.raises(PolicyError, match="no such file"):
        load_policy(str(tmp_path / "missing.json"))


def test_cli_uses_the_policy(tmp_path, sif) -> None:
    path = _policy_file(tmp_path, {"keys": [ECDSA]})
    res = sif("verify", "--policy", path, fixture("c-signed-dsse-ecdsa-p256.sif"))
    assert res.returncode == 0, res.stderr
    res = sif("verify", "--policy", path, fixture("b-multi-object.sif"))
    assert res.returncode == 1 and "signature not found for object group 1" in res.stderr
    res = sif("bundle", "--policy", path, fixture("g-tampered-dsse-ecdsa-partition.sif"),
              str(tmp_path / "b"))
    assert res.returncode == 1 and "data object integrity compromised: 5" in res.stderr
    assert not os.path.exists(tmp_path / "b")


def test_images_others_can_rewrite_are_refused(copy_fixture) -> None:
    image = copy_fixture("a-minimal-busybox-signed-dsse-ecdsa-p256.sif")
    policy = Policy().with_keys([ECDSA], [])
    assert verify_image(image, policy)
    os.chmod(image, 0o666)
    with pytest.raises(PolicyError, match="writable by others .*mode 0666"):
        verify_image(image, policy)
