"""The `golem` user's access: a generated password and SSH public keys.

The password travels only through chpasswd's standard input: never on a
command line (visible in ps) and never in the log. The same holds for its crypt
hash, which is kept on the conf partition so the password survives reboots
(/etc/shadow is in RAM on the live system): the plain password is never stored.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from golemwz.runner import Runner

# No 0/O, 1/l/I: the password is read off a screen and typed elsewhere.
UNAMBIGUOUS_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
MIN_PASSWORD_BITS = 80
GROUP_SIZE = 4
# crypt(5) `$id$...`: yescrypt `$y$j9T$salt$hash`, SHA-512 `$6$rounds=N$salt$hash`,
# bcrypt `$2b$12$...`. No ':', newline or blank can match, so a hash read from the
# (FAT, writable by anyone holding the stick) conf partition cannot add a line for
# another user to chpasswd's input, nor be a locked `!`/`*` or empty password.
CRYPT_HASH = re.compile(r"\$[0-9a-z]{1,8}\$[0-9A-Za-z./=,$-]{8,}")


def password_length(alphabet_size: int, min_bits: int = MIN_PASSWORD_BITS) -> int:
    """Characters needed for `min_bits` of entropy, rounded up to whole groups."""
    needed = math.ceil(min_bits / math.log2(alphabet_size))
    return math.ceil(needed / GROUP_SIZE) * GROUP_SIZE


def generate_password(choose: Callable[[Sequence[str]], str] = secrets.choice) -> str:
    """Groups of four separated by dashes: easy to read, at least 80 random bits."""
    length = password_length(len(UNAMBIGUOUS_ALPHABET))
    characters = "".join(choose(UNAMBIGUOUS_ALPHABET) for _ in range(length))
    return "-".join(characters[i:i + GROUP_SIZE] for i in range(0, length, GROUP_SIZE))


def password_is_set(runner: Runner, user: str) -> bool:
    # `passwd --status` prints "USER P ..." for a usable password, L or NP otherwise.
    fields = runner.run(["passwd", "--status", user]).stdout.split()
    return len(fields) > 1 and fields[1] == "P"


def set_password(runner: Runner, user: str, password: str) -> None:
    runner.run(["chpasswd"], input=f"{user}:{password}\n".encode())


def is_crypt_hash(text: str) -> bool:
    return CRYPT_HASH.fullmatch(text) is not None


def read_password_hash(shadow: Path, user: str) -> str | None:
    """The crypt hash of `user` in /etc/shadow; None when it has none (locked, empty)."""
    for line in shadow.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split(":")
        if fields[0] == user and len(fields) > 1:
            return fields[1] if is_crypt_hash(fields[1]) else None
    return None


def restore_password_hash(runner: Runner, user: str, crypt_hash: str) -> None:
    """Set an already hashed password: `chpasswd --encrypted`, the hash on stdin only."""
    if not is_crypt_hash(crypt_hash):
        raise ValueError("not a crypt(5) hash")  # the value itself is not shown
    runner.run(["chpasswd", "--encrypted"], input=f"{user}:{crypt_hash}\n".encode())


def install_ssh_keys(authorized_keys: Path, keys: Iterable[str], runner: Runner,
                     owner: str) -> int:
    """Add the keys not already there; keep what the user put there. Returns how many."""
    ssh_dir = authorized_keys.parent
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = authorized_keys.read_text().splitlines() if authorized_keys.exists() else []
    present = {" ".join(line.split()[:2]) for line in existing if line.strip()}
    added = [key for key in keys if " ".join(key.split()[:2]) not in present]
    if added:
        with open(authorized_keys, "a", encoding="utf-8") as handle:
            for key in added:
                handle.write(key + "\n")
    authorized_keys.chmod(0o600)  # sshd ignores the file otherwise
    runner.run(["chown", "-R", f"{owner}:{owner}", str(ssh_dir)])
    return len(added)
