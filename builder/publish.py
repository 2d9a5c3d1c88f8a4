"""Publishing final images into WORK_DIR as copies, never as links into the cache.

People loop-mount a published image to drop a golemwz.toml in. Were it a hard link
to the cache entry, that write would change the cached image, and every later
"cached" build would publish the edited image (with someone's wallet and SSH keys).
So WORK_DIR gets its own copy: a reflink where the filesystem has them (instant,
shares blocks until written), else a sparse copy of the data ranges only. A small
record beside the copy (`.NAME.published`) says which cache entry it came from and
what its inode looked like then; a copy that is untouched since is left alone, so
a no-op build copies nothing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path

FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
CHUNK = 64 << 20


def _stamp(path: Path) -> dict[str, int]:
    info = path.stat()
    return {"ino": info.st_ino, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def record_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.published")


def published_key(target: Path) -> str | None:
    """The key of the cache entry the copy at `target` came from (None: no record)."""
    try:
        key = json.loads(record_path(target).read_text()).get("key")
    except (OSError, ValueError):
        return None
    return key if isinstance(key, str) else None


def is_current(target: Path, key: str) -> bool:
    """The copy at `target` is the cache entry `key`'s, and nobody has written it since."""
    try:
        record = json.loads(record_path(target).read_text())
        return bool(record.get("key") == key and record.get("stamp") == _stamp(target))
    except (OSError, ValueError):
        return False


def copy_sparse(source: Path, target: Path) -> None:
    """Copy `source` to a new `target`: reflink if possible, else only its data ranges."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY,
                                 errno.EBADF, errno.ENOSYS):
                raise
        size = os.fstat(src.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            _copy_range(src.fileno(), dst.fileno(), start, end)
            offset = end
        os.ftruncate(dst.fileno(), size)
        os.fsync(dst.fileno())


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    position = start
    while position < end:
        count = min(CHUNK, end - position)
        try:
            copied = os.copy_file_range(src, dst, count, position, position)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            copied = os.pwrite(dst, os.pread(src, count, position), position)
        if copied == 0:
            raise OSError(errno.EIO, f"short copy at byte {position}")
        position += copied


def publish_copy(source: Path, target: Path, key: str) -> bool:
    """Put a copy of the cached `source` at `target`; False when the copy there is current."""
    if is_current(target, key):
        return False
    temp = target.with_name(f".{target.name}.tmp")
    temp.unlink(missing_ok=True)
    record_path(target).unlink(missing_ok=True)
    try:
        copy_sparse(source, temp)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    record_path(target).write_text(json.dumps({"key": key, "stamp": _stamp(target)}))
    return True
