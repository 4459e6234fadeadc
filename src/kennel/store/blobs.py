"""Content-addressed blob files: KENNEL_HOME/store/blobs/sha256-<hex>.

A blob enters only through ``admit``: its bytes are hashed, compared with the digest the source
promised, flushed to disk and renamed into place in one step, then made read-only. Writers of one
digest hold a file lock, so two pulls of the same file never interleave; the lock dies with its
process, so a ``kill -9`` leaves at most a partial file, which the next pull resumes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from kennel.errors import ChecksumError, DiskSpaceError, StoreError
from kennel.units import fmt_bytes

CHUNK = 1 << 20
HEADROOM = 256 * 2**20  # leave room for the database and logs when a disk is nearly full
Progress = Callable[[int], None]  # bytes done so far


def is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def sha256_file(path: Path, *, progress: Progress | None = None) -> str:
    h = hashlib.sha256()
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done)
    return h.hexdigest()


def check_free_space(folder: Path, need: int, *, what: str) -> None:
    """Refuse before starting a write of ``need`` bytes that cannot finish."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need + HEADROOM:
        raise DiskSpaceError(
            f"Not enough disk space for {what}: it needs {fmt_bytes(need)}, "
            f"plus {fmt_bytes(HEADROOM)} kennel keeps free for its databases and logs, "
            f"and {folder} has {fmt_bytes(free)} free.",
            hint="Free space (`kennel gc`, `kennel rm`), or set KENNEL_HOME to a larger disk.",
        )


def disk_full(exc: OSError, what: str) -> DiskSpaceError:
    return DiskSpaceError(
        f"The disk filled up while writing {what}.",
        hint="Free space and run the same command again; it resumes where it stopped.",
    )


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.partial = root / "partial"
        self.locks = root / "locks"

    def path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise StoreError(f"{digest!r} is not a sha256 digest.")
        return self.blobs / f"sha256-{digest}"

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def partial_path(self, key: str) -> Path:
        """Where the bytes of ``key`` (an expected digest, or a source id hashed) accumulate."""
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial / f"{key}.part"

    @contextmanager
    def lock(self, key: str, *, timeout: float = 3600.0) -> Iterator[None]:
        self.locks.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.locks / f"{key}.lock"))
        try:
            lock.acquire(timeout=timeout)
        except Timeout as exc:
            raise StoreError(
                f"Another kennel process has been writing {key[:12]} for {timeout:.0f} s.",
                hint="Wait for it to finish, or stop it; a stopped pull resumes.",
            ) from exc
        try:
            yield
        finally:
            lock.release()

    def admit(self, src: Path, *, expected: str | None, move: bool, progress: Progress | None = None) -> str:
        """Hash ``src``, check it against ``expected``, and place it as a read-only blob.

        ``move`` renames ``src`` (a partial download, consumed); otherwise the bytes are copied
        and ``src`` (a user's file) is left untouched.
        """
        if not move:
            return self._copy_in(src, expected=expected, progress=progress)
        digest = sha256_file(src, progress=progress)
        if expected is not None and digest != expected:
            src.unlink(missing_ok=True)
            raise ChecksumError(
                f"The downloaded bytes have sha256 {digest[:12]}…, "
                f"not the {expected[:12]}… the source promised.",
                hint="The partial file was deleted; run the command again to download it afresh.",
            )
        return self._place(src, digest)

    def _copy_in(self, src: Path, *, expected: str | None, progress: Progress | None) -> str:
        size = src.stat().st_size
        check_free_space(self.root, size, what=src.name)
        key = f"import-{os.getpid()}-{hashlib.sha256(str(src).encode()).hexdigest()[:16]}"
        with self.lock(key):  # so that `kennel gc` leaves this partial file alone
            return self._copy_locked(src, self.partial_path(key), expected=expected, progress=progress)

    def _copy_locked(self, src: Path, tmp: Path, *, expected: str | None, progress: Progress | None) -> str:
        h = hashlib.sha256()
        done = 0
        try:
            with src.open("rb") as fin, tmp.open("wb") as fout:
                while chunk := fin.read(CHUNK):
                    h.update(chunk)
                    fout.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done)
                fout.flush()
                os.fsync(fout.fileno())
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise disk_full(exc, src.name) from exc
            raise
        digest = h.hexdigest()
        if expected is not None and digest != expected:
            tmp.unlink(missing_ok=True)
            raise ChecksumError(
                f"{src.name} has sha256 {digest[:12]}…, expected {expected[:12]}….",
                hint="The file is damaged or not the one listed; copy it again.",
            )
        return self._place(tmp, digest)

    def _place(self, tmp: Path, digest: str) -> str:
        # a lock of its own: the download lock (named by the same digest) may be held by our caller
        with self.lock(f"place-{digest}"):
            dest = self.path(digest)
            if dest.is_file():
                tmp.unlink(missing_ok=True)
                return digest
            self.blobs.mkdir(parents=True, exist_ok=True)
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o444)  # blobs are never modified in place
            os.replace(tmp, dest)
            _fsync_dir(self.blobs)
        return digest

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def all_digests(self) -> set[str]:
        if not self.blobs.is_dir():
            return set()
        names = (p.name.removeprefix("sha256-") for p in self.blobs.iterdir() if p.name.startswith("sha256-"))
        return {d for d in names if is_digest(d)}

    def partial_files(self) -> list[Path]:
        return sorted(self.partial.glob("*.part")) if self.partial.is_dir() else []


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
