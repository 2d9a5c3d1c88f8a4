"""The repository's signing key: create it, find it, export its public part.

The secret key only ever lives in a GNUPGHOME outside the project; the project
receives the public keyring (binary, as apt's Signed-By reads it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gnupg

from builder.errors import BuildError
from builder.runner import Runner

# Where the image build reads the maintainer's public key (relative to the project root,
# as the golem-provider profile's `golem.keyring` names it).
PROJECT_KEYRING = Path("rootfs") / "keys" / "golem-gpu-live.gpg"
# Where the image installs it, referenced by Signed-By in the deb822 sources.
IMAGE_KEYRING = "/usr/share/keyrings/golem-gpu-live.gpg"
# gpg-agent's socket must fit in sun_path (108 bytes) next to the home directory.
MAX_HOME_LEN = 80


@dataclass(frozen=True)
class KeySpec:
    name: str
    email: str
    expire: str = "3y"  # gpg Expire-Date syntax; "0" = never
    ed25519: bool = False  # default RSA 4096: accepted by every apt verifier


@dataclass(frozen=True)
class SigningKey:
    gnupghome: Path
    fingerprint: str


def open_gpg(gnupghome: Path) -> gnupg.GPG:
    try:
        gnupghome.mkdir(mode=0o700, parents=True, exist_ok=True)
        return gnupg.GPG(gnupghome=str(gnupghome))
    except OSError as err:
        raise BuildError(f"cannot use GNUPGHOME {gnupghome}: {err.strerror or err}",
                         "point --gnupghome (or GNUPGHOME) at a writable directory") from None
    except ValueError as err:  # python-gnupg: gpg missing or unusable
        raise BuildError(f"gpg is not usable: {err}", "install gnupg") from None


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def create_key(gnupghome: Path, spec: KeySpec) -> str:
    """A signing-only key without passphrase (CI signs unattended); returns the fingerprint."""
    if "@" not in spec.email or not spec.name.strip():
        raise BuildError("a key needs a name and an e-mail address",
                         "pass --name 'Some Name' --email someone@example.org")
    gpg = open_gpg(gnupghome)
    algo: dict[str, str | int] = ({"key_type": "EDDSA", "key_curve": "ed25519"} if spec.ed25519
                                  else {"key_type": "RSA", "key_length": 4096})
    params = gpg.gen_key_input(name_real=spec.name, name_email=spec.email,
                               expire_date=spec.expire, key_usage="sign",
                               no_protection=True, **algo)
    result = gpg.gen_key(params)
    if not result.fingerprint:
        raise BuildError(f"gpg could not create the key: {_last_line(result.stderr)}",
                         f"check that {gnupghome} is usable by gpg")
    return str(result.fingerprint)


def secret_fingerprints(gnupghome: Path) -> list[str]:
    if not gnupghome.is_dir():
        return []
    return [str(k["fingerprint"]) for k in open_gpg(gnupghome).list_keys(secret=True)]


def resolve_signing_key(gnupghome: Path, fingerprint: str | None) -> SigningKey:
    """The key to sign with: the one asked for, or the only secret key in the home."""
    keys = secret_fingerprints(gnupghome)
    if fingerprint:
        wanted = fingerprint.replace(" ", "").upper()
        matches = [k for k in keys if k.upper().endswith(wanted)] if len(wanted) >= 16 else []
        if len(matches) != 1:
            raise BuildError(f"no secret key {fingerprint} in {gnupghome}",
                             "import it (gpg --import) or pass --gnupghome / GNUPGHOME "
                             "where it lives; use its full fingerprint")
        return SigningKey(gnupghome, matches[0])
    if len(keys) == 1:
        return SigningKey(gnupghome, keys[0])
    if not keys:
        raise BuildError(f"no secret key in {gnupghome}",
                         "create one with `golem-live repo key` or pass --gnupghome")
    raise BuildError(f"{len(keys)} secret keys in {gnupghome}: {', '.join(keys)}",
                     "choose one with --key FINGERPRINT")


def export_public(key: SigningKey, dest: Path) -> Path:
    """Write the public key (binary keyring, only this key) to dest."""
    data = open_gpg(key.gnupghome).export_keys(key.fingerprint, armor=False)
    if not isinstance(data, bytes) or not data:
        raise BuildError(f"gpg exported nothing for {key.fingerprint}",
                         f"check the key with gpg --homedir {key.gnupghome} -k")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


def check_outside(gnupghome: Path, project_root: Path) -> None:
    home, root = gnupghome.resolve(), project_root.resolve()
    if home == root or root in home.parents:
        raise BuildError(f"GNUPGHOME {gnupghome} is inside the project {project_root}",
                         "keep secret keys out of the tree: use ~/.gnupg or another directory")


def ephemeral_home(preferred: Path) -> Path:
    """A fresh GNUPGHOME: `preferred` unless its path is too long for gpg-agent's socket."""
    if len(str(preferred)) <= MAX_HOME_LEN:
        preferred.mkdir(mode=0o700, parents=True)
        return preferred
    return Path(tempfile.mkdtemp(prefix="golem-repo-gpg-", dir="/tmp"))


def ephemeral_key(home: Path) -> SigningKey:
    spec = KeySpec(name="golem-gpu-live ephemeral build key",
                   email="build@golem-gpu-live.invalid", expire="0", ed25519=True)
    return SigningKey(home, create_key(home, spec))


def discard_home(runner: Runner, home: Path) -> None:
    """Stop the gpg-agent of a throwaway GNUPGHOME and delete it (with its secret key)."""
    if shutil.which("gpgconf"):
        runner.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    shutil.rmtree(home, ignore_errors=True)


def secret_export_hint(key: SigningKey) -> str:
    home = "" if key.gnupghome == default_gnupghome(None) else f" --homedir {key.gnupghome}"
    return f"gpg{home} --armor --export-secret-keys {key.fingerprint}"


def default_gnupghome(env_value: str | None) -> Path:
    """What gpg itself uses: $GNUPGHOME if set, else ~/.gnupg (the caller passes the env value)."""
    return Path(env_value).expanduser() if env_value else Path(os.path.expanduser("~/.gnupg"))
