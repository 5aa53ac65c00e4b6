"""File operations confined to the writable paths.

A path must be absolute, without NUL or '..' components, and resolve (symlinks followed by
realpath) inside one writable root. It is then opened one component at a time from that root with
O_NOFOLLOW (openat-style, dir_fd), so a symlink swapped in after the check makes the call fail
instead of escaping: the check and the use are the same walk."""
from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, Optional

MAX_PATH_CHARS = 4096
MAX_LIST_ENTRIES = 10_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FileError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def outside(message: str) -> FileError:
    return FileError(400, "path_outside_writable", message)


@dataclass(frozen=True)
class Target:
    root: str  # a writable root (its real path)
    parts: tuple[str, ...]  # components below it; () is the root itself

    @property
    def path(self) -> str:
        return os.path.join(self.root, *self.parts)


class Confinement:
    def __init__(self, writable: tuple[str, ...]) -> None:
        self.writable = writable

    def roots(self) -> list[str]:
        # Resolved per call: a root that does not exist yet (no volume) is simply not usable.
        return [os.path.realpath(r) for r in self.writable if os.path.isdir(r)]

    def target(self, path: Optional[str], follow_last: bool = True) -> Target:
        if not path:
            raise FileError(400, "bad_request", "the query parameter 'path' is required")
        if "\0" in path or len(path) > MAX_PATH_CHARS:
            raise outside("the path holds a NUL byte or is too long")
        if not path.startswith("/"):
            raise outside("the path must be absolute")
        if ".." in path.split("/"):
            raise outside("the path must not contain '..'")
        norm = os.path.normpath(path)
        if follow_last:
            real = os.path.realpath(norm)
        else:
            head, tail = os.path.split(norm)
            real = os.path.join(os.path.realpath(head), tail) if tail else os.path.realpath(norm)
        for root in self.roots():
            if real == root:
                return Target(root, ())
            if real.startswith(root.rstrip("/") + "/"):
                return Target(root, tuple(p for p in real[len(root):].split("/") if p))
        raise outside(f"{path} is outside the writable paths ({':'.join(self.writable)})"
                      + (" once its symlinks are resolved" if real != norm else ""))

    def contains(self, path: str) -> bool:
        try:
            self.target(path)
            return True
        except FileError:
            return False


def _errno_error(exc: OSError, path: str) -> FileError:
    if exc.errno == errno.ENOENT:
        return FileError(404, "not_found", f"{path} does not exist")
    if exc.errno in (errno.ELOOP, errno.ENOTDIR) :
        return outside(f"{path}: a component is a symlink or not a directory (symlinks are not followed once resolved)")
    if exc.errno == errno.EISDIR:
        return FileError(409, "is_directory", f"{path} is a directory")
    if exc.errno == errno.ENOTEMPTY:
        return FileError(409, "directory_not_empty", f"{path} is a non-empty directory: add recursive=true")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return FileError(403, "permission_denied", f"{path}: permission denied")
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return FileError(507, "no_space", f"{path}: no space left in the writable path")
    return FileError(400, "file_error", f"{path}: {os.strerror(exc.errno or 0)}")


@contextmanager
def _parent(target: Target, create: bool = False) -> Iterator[int]:
    """An fd of the target's parent directory, walked from the root without following links."""
    fd = os.open(target.root, _DIR_FLAGS)
    try:
        for part in target.parts[:-1]:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def write(conf: Confinement, path: Optional[str], reader: Callable[[int], bytes], length: int,
          check: Callable[[str], None]) -> dict[str, Any]:
    """Write `length` bytes from reader into path, through a temporary file renamed into place
    once check(sha256 hex) accepts the body (the signature covers it)."""
    import hashlib
    target = conf.target(path, follow_last=False)
    if not target.parts:
        raise FileError(409, "is_directory", f"{path} is a writable root")
    name = target.parts[-1]
    tmp = f".llmss-upload-{secrets.token_hex(8)}"
    try:
        with _parent(target, create=True) as dir_fd:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
            digest = hashlib.sha256()
            try:
                with os.fdopen(fd, "wb", closefd=True) as out:
                    left = length
                    while left > 0:
                        chunk = reader(min(left, 1 << 20))
                        if not chunk:
                            raise FileError(400, "incomplete_body", "the body ended before Content-Length bytes")
                        digest.update(chunk)
                        out.write(chunk)
                        left -= len(chunk)
                check(digest.hexdigest())
                try:
                    existing = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if stat.S_ISDIR(existing.st_mode):
                        raise FileError(409, "is_directory", f"{path} is a directory")
                except FileNotFoundError:
                    pass
                # rename replaces a symlink itself, never its target
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dir_fd)
                except OSError:
                    pass
                raise
    except OSError as exc:
        raise _errno_error(exc, str(path)) from None
    return {"path": target.path, "size": length}


def open_read(conf: Confinement, path: Optional[str], limit: int) -> tuple[BinaryIO, int]:
    target = conf.target(path)
    try:
        if not target.parts:
            raise FileError(409, "is_directory", f"{path} is a directory")
        with _parent(target) as dir_fd:
            fd = os.open(target.parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            os.close(fd)
            raise FileError(409, "is_directory", f"{path} is a directory: list it with /v1/files/list")
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise FileError(400, "not_a_regular_file", f"{path} is not a regular file")
        if info.st_size > limit:
            os.close(fd)
            raise FileError(413, "file_too_large", f"{path} is {info.st_size} bytes, over the limit of {limit}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), info.st_size
    except OSError as exc:
        raise _errno_error(exc, str(path)) from None


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def listing(conf: Confinement, path: Optional[str]) -> dict[str, Any]:
    target = conf.target(path)
    try:
        if target.parts:
            with _parent(target) as dir_fd:
                fd = os.open(target.parts[-1], _DIR_FLAGS, dir_fd=dir_fd)
        else:
            fd = os.open(target.root, _DIR_FLAGS)
        entries = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if len(entries) >= MAX_LIST_ENTRIES:
                        break
                    info = entry.stat(follow_symlinks=False)
                    entries.append({"name": entry.name, "path": os.path.join(target.path, entry.name),
                                    "type": _kind(info.st_mode), "size": info.st_size, "mtime": info.st_mtime})
        finally:
            os.close(fd)
    except OSError as exc:
        raise _errno_error(exc, str(path)) from None
    entries.sort(key=lambda e: e["name"])
    return {"path": target.path, "entries": entries, "truncated": len(entries) >= MAX_LIST_ENTRIES}


def delete(conf: Confinement, path: Optional[str], recursive: bool) -> None:
    target = conf.target(path, follow_last=False)
    if not target.parts:
        raise FileError(409, "is_writable_root", f"{path} is a writable root and cannot be deleted")
    name = target.parts[-1]
    try:
        with _parent(target) as dir_fd:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):
                os.unlink(name, dir_fd=dir_fd)  # a symlink is removed, its target untouched
            elif recursive:
                shutil.rmtree(name, dir_fd=dir_fd)  # fd-based: safe against symlink races
            else:
                os.rmdir(name, dir_fd=dir_fd)
    except OSError as exc:
        raise _errno_error(exc, str(path)) from None
