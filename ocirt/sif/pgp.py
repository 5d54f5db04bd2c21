"""OpenPGP clear-signed signatures through the system's `gpg`.

Every use runs gpg in a private, temporary home directory holding only the keys given
on the command line (never the user's keyring), and stops the gpg-agent that secret-key
operations start before the directory is removed, so nothing is left running.

Verification reads gpg's machine-readable status lines: exactly one good signature, made
with an accepted hash, whose signer's primary-key fingerprint is reported; the signed
text is what gpg itself extracted, so the parser that checked the signature and the one
that produced the text cannot disagree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from ocirt.sif.image import SIFError

# OpenPGP hash algorithm IDs the reference accepts: SHA-256, SHA-384, SHA-512, SHA-224.
_ACCEPTED_HASHES = {"8", "9", "10", "11"}
CLEARSIGN_BEGIN = b"-----BEGIN PGP SIGNED MESSAGE-----"
_SIG_BEGIN = b"-----BEGIN PGP SIGNATURE-----"


class PGPError(SIFError):
    """gpg is missing, a key does not import, or a signature does not verify."""


def clearsigned_text(data: bytes) -> bytes | None:
    """The text of a clear-signed message, without verifying it (None if there is none).

    Used only to tell legacy signatures ("SIFHASH:") from modern ones, as the reference
    does before choosing a verifier; never trusted as verified content.
    """
    start = data.find(CLEARSIGN_BEGIN)
    if start < 0:
        return None
    rest = data[start + len(CLEARSIGN_BEGIN):]
    head, sep, body = rest.partition(b"\n\n")
    if not sep and b"\r\n\r\n" in rest:
        head, sep, body = rest.partition(b"\r\n\r\n")
    end = body.find(_SIG_BEGIN)
    if not sep or end < 0:
        return None
    lines = body[:end].split(b"\n")
    text = b"\n".join(ln[2:] if ln.startswith(b"- ") else ln for ln in lines)
    return text.rstrip(b"\r\n") if text.endswith(b"\n") else text


class GPG:
    """A throw-away gpg home directory. Use as a context manager."""

    def __init__(self) -> None:
        self.gpg = shutil.which("gpg")
        if not self.gpg:
            raise PGPError("OpenPGP signatures need gpg (apt install gnupg)")
        self.home = tempfile.mkdtemp(prefix="ocirt-gpg-")

    def __enter__(self) -> GPG:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the agent (importing a file that holds a secret key starts one too) and
        wait until it is gone, then remove the home directory."""
        if shutil.which("gpgconf"):
            subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "all"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
            _wait_for_agent_exit(self.home)
        shutil.rmtree(self.home, ignore_errors=True)

    def run(self, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
        argv = [self.gpg, "--homedir", self.home, "--batch", "--no-tty", "--quiet",
                "--no-auto-key-locate", "--no-auto-key-retrieve", "--trust-model", "always",
                "--status-fd", "2", *args]
        return subprocess.run(argv, input=data if data is not None else b"",
                              capture_output=True, check=False)

    def import_keys(self, paths: list[str], secret: bool = False) -> list[str]:
        """Import armored (or binary) key files; returns the primary fingerprints."""
        fingerprints: list[str] = []
        for path in paths:
            if not os.path.isfile(path):
                raise PGPError(f"OpenPGP key {path}: no such file")
            res = self.run("--import", path)
            found = [s[3] for s in _status(res) if s[1] == "IMPORT_OK" and len(s) > 3]
            if res.returncode != 0 or not found:
                raise PGPError(f"OpenPGP key {path}: gpg could not import it: "
                               f"{_last_line(res.stderr)}")
            if secret and not self._has_secret(found):
                raise PGPError(f"OpenPGP key {path}: holds no secret key")
            fingerprints.extend(fp for fp in found if fp not in fingerprints)
        return fingerprints

    def _has_secret(self, fingerprints: list[str]) -> bool:
        res = self.run("--with-colons", "--list-secret-keys", *fingerprints)
        return any(ln.startswith(b"sec:") for ln in res.stdout.splitlines())

    def primary_fingerprint(self, key: str) -> str:
        res = self.run("--with-colons", "--fingerprint", "--list-keys", key)
        for line in res.stdout.decode(errors="replace").splitlines():
            if line.startswith("fpr:"):
                return line.split(":")[9]
        raise PGPError(f"OpenPGP key {key} not found")

    def clearsign(self, text: bytes, key: str) -> bytes:
        """A clear-signed message over `text` by `key` (SHA-256), as the reference writes
        it (no newline after the armor)."""
        res = self.run("--pinentry-mode", "loopback", "--passphrase", "",
                       "--digest-algo", "SHA256", "--local-user", key, "--clearsign",
                       data=text)
        if res.returncode != 0 or CLEARSIGN_BEGIN not in res.stdout:
            raise PGPError(f"gpg could not sign with {key}: {_last_line(res.stderr)}")
        return res.stdout[res.stdout.index(CLEARSIGN_BEGIN):].rstrip(b"\n")

    def verify_clearsigned(self, data: bytes) -> tuple[bytes, str]:
        """(signed text, signer's primary fingerprint) of a clear-signed message; raises
        PGPError with the reason when it does not verify."""
        fd, out_path = tempfile.mkstemp(dir=self.home)
        os.close(fd)
        os.unlink(out_path)
        res = self.run("--output", out_path, "--decrypt", data=data)
        status = _status(res)
        try:
            with open(out_path, "rb") as f:
                text = f.read()
        except OSError:
            text = b""
        return _strip_final_newline(text), _check_status(status, res)


def _wait_for_agent_exit(home: str, timeout: float = 2.0) -> None:
    import time

    needle = f"--homedir\0{home}\0".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_live_with_cmdline(pid, needle) for pid in os.listdir("/proc")
                   if pid.isdigit()):
            return
        time.sleep(0.02)


def _live_with_cmdline(pid: str, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if needle not in f.read():
                return False
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _check_status(status: list[list[str]], res: subprocess.CompletedProcess) -> str:
    kinds = [s[1] for s in status if len(s) > 1]
    if "NO_PUBKEY" in kinds or "ERRSIG" in kinds:
        key = next((s[2] for s in status if s[1] in ("NO_PUBKEY", "ERRSIG")), "?")
        raise PGPError(f"OpenPGP signature by unknown key {key} (give its public key "
                       "with --pgp-key)")
    if "BADSIG" in kinds:
        raise PGPError("OpenPGP signature does not match the signed text")
    valid = [s for s in status if len(s) > 11 and s[1] == "VALIDSIG"]
    if len(valid) != 1 or res.returncode != 0:
        reason = ("expected exactly one good signature" if valid
                  else _last_line(res.stderr) or "no valid signature")
        raise PGPError(f"OpenPGP verification failed: {reason}")
    fields = valid[0]
    if fields[9] not in _ACCEPTED_HASHES:
        raise PGPError(f"OpenPGP signature uses a hash that is not accepted (id {fields[9]})")
    return fields[-1].upper()


def _status(res: subprocess.CompletedProcess) -> list[list[str]]:
    """gpg's status lines ("[GNUPG:] KEYWORD args...") from its stderr, split."""
    return [ln.split() for ln in res.stderr.decode(errors="replace").splitlines()
            if ln.startswith("[GNUPG:] ") and len(ln.split()) > 1]


def _strip_final_newline(text: bytes) -> bytes:
    """gpg writes the clear-signed text with a final line ending that is not part of the
    signed data; the reference's decoder returns the text without it."""
    if text.endswith(b"\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith(b"\n") else text


def _last_line(err: bytes) -> str:
    lines = [ln.strip() for ln in err.decode(errors="replace").splitlines()
             if ln.strip() and not ln.startswith("[GNUPG:]")]
    return lines[-1] if lines else ""


def generate(prefix: str, name: str = "ocirt SIF signing key") -> tuple[str, str, str]:
    """A new RSA OpenPGP key pair: PREFIX.asc (public) and PREFIX.secret.asc (secret,
    0600, no passphrase). Returns (public path, secret path, fingerprint)."""
    pub, sec = f"{prefix}.asc", f"{prefix}.secret.asc"
    for path in (pub, sec):
        if os.path.lexists(path):
            raise PGPError(f"{path} exists; remove it first")
    with GPG() as g:
        res = g.run("--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
                    f"{name} <sif@localhost>", "rsa3072", "sign", "never")
        if res.returncode != 0:
            raise PGPError(f"gpg could not generate a key: {_last_line(res.stderr)}")
        fpr = g.primary_fingerprint(f"{name} <sif@localhost>")
        public = g.run("--armor", "--export", fpr).stdout
        secret = g.run("--pinentry-mode", "loopback", "--passphrase", "", "--armor",
                       "--export-secret-keys", fpr).stdout
    _write(sec, secret, 0o600)
    _write(pub, public, 0o644)
    return pub, sec, fpr


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
