"""One exclusive lock per run folder: a second process on the same folder stops at once and names
the process that holds it.

``<run_dir>/.alframe.lock`` is locked with ``fcntl.flock`` (exclusive, non-blocking) by the process
that runs in the folder, which writes one JSON line into it: host, PID, when it took the lock and
its command line. The kernel drops the lock when the process ends, however it ends (SIGKILL, the
OOM killer), so a killed run resumes without a manual step: the next process takes the lock and
writes its own line over the dead one's. ``fcntl`` rather than ``filelock``: a refused process
must leave the folder byte for byte as it was, and ``filelock``'s Unix lock creates and removes
probe files in the folder; here a process that is refused only opens the lock file and reads it.

Within one process a folder is locked once and counted (a second :class:`~alframe.loop.experiment.
Experiment` on the same folder in the same process shares the lock, as tests do); across
processes the lock is exclusive. A process that takes the lock and is then refused for another
reason (a config check) undoes what it did: the lock file's bytes come back (or the file goes when
it made it), and so do folders it made.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from alframe.errors import ConfigError, RunFolderBusy

try:
    import fcntl
except ImportError:  # Windows: no flock; runs go unlocked (a warning says so)
    fcntl = None

#: the lock file in a run folder
LOCK_FILE = ".alframe.lock"


@dataclass
class _Held:
    fd: int
    count: int
    created: bool  # this process made the lock file
    previous: bytes  # its bytes before this process wrote its line
    times: tuple[int, int]  # its (atime, mtime) in ns before that
    made_dirs: list[Path] = field(default_factory=list)


_HELD: dict[str, _Held] = {}
_GUARD = threading.RLock()


def _key(folder: Path) -> str:
    return os.path.realpath(folder)


def holder_line() -> bytes:
    """This process's line for the lock file (JSON: host, pid, since, command)."""
    since = datetime.now().astimezone().isoformat(timespec="seconds")
    return (json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": since,
                        "command": sys.argv}) + "\n").encode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def describe_holder(fd: int, wait_s: float = 1.0) -> str:
    """Who holds the lock whose file is open as ``fd``: "PID 4242 on host node7 (since ...)".

    The holder writes its line just after it takes the lock; an empty or unreadable file, or the
    line of a dead process on this host, is read again for up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = json.loads(os.pread(fd, 65536, 0).decode() or "null")
            host, pid, since = info["host"], int(info["pid"]), info["since"]
        except (ValueError, TypeError, KeyError, OSError, UnicodeDecodeError):
            info = None
        if info is not None and (host != socket.gethostname() or _alive(pid)):
            return f"PID {pid} on host {host} (holding it since {since})"
        if time.monotonic() > deadline:
            return "another process (it has not written its PID into the lock file yet)"
        time.sleep(0.05)


def _busy(folder: Path, fd: int) -> RunFolderBusy:
    return RunFolderBusy(
        f"run folder {Path(folder).resolve()} is in use by {describe_holder(fd)}; nothing was changed. "
        "Let that process finish (or stop it: it saves its state), then run this command again")


def _mkdirs(folder: Path) -> list[Path]:
    made = []
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        made.append(p)
    folder.mkdir(parents=True, exist_ok=True)
    return made  # deepest first


def _rmdirs(made: list[Path]) -> None:
    for p in made:
        try:
            p.rmdir()
        except OSError:
            return


def _open_and_lock(folder: Path) -> _Held:
    path = folder / LOCK_FILE
    for _ in range(20):
        created = False
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            created = True
        except FileNotFoundError:  # the empty folder was removed meanwhile by a refused command
            folder.mkdir(parents=True, exist_ok=True)
            continue
        except FileExistsError:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)  # no O_TRUNC: a refused process changes nothing
            except FileNotFoundError:
                continue  # removed meanwhile by a process undoing its claim: look again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            err = _busy(folder, fd)
            os.close(fd)
            raise err from None
        except OSError as e:  # no locks on this file system (some network mounts)
            from alframe import progress

            progress.console.print(f"[yellow]alframe: cannot lock {path} ({e.strerror}); a second process on "
                                   "this folder would not be stopped[/yellow]", soft_wrap=True)
        st = os.fstat(fd)
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
            os.close(fd)  # the name was unlinked between open and flock: lock the file it names now
            continue
        previous = b"" if created else os.pread(fd, st.st_size + 1, 0)
        held = _Held(fd, 1, created, previous, (st.st_atime_ns, st.st_mtime_ns))
        _write(fd, holder_line())
        return held
    raise ConfigError(f"cannot lock {path}: it keeps being removed and made again by other processes")


def _write(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def acquire(folder: str | Path) -> None:
    """Lock ``folder`` (made when missing) for this process; counted when this process holds it.

    Raises:
        RunFolderBusy: another process holds it; the message names the folder and the holder,
            and nothing in the folder was changed.
        ConfigError: the lock file cannot be opened (e.g. no permission).
    """
    folder, key = Path(folder), _key(folder)
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            held.count += 1
            return
        made = _mkdirs(folder)
        if fcntl is None:
            held = _Held(-1, 1, False, b"", (0, 0))
        else:
            try:
                held = _open_and_lock(folder)
            except OSError as e:
                _rmdirs(made)
                raise ConfigError(f"cannot lock run folder {folder.resolve()}: {e.strerror}") from e
            except BaseException:
                _rmdirs(made)
                raise
        held.made_dirs = made
        _HELD[key] = held


def release(folder: str | Path, undo: bool = False) -> None:
    """Drop one hold of ``folder``; the last one unlocks it.

    Args:
        undo: the hold was refused after all (a check failed before anything else was written):
            the last release restores the lock file's bytes and times (removes it when this
            process made it) and removes the folders :func:`acquire` made, when empty. Without
            it the lock file is emptied (a file with a line names a live or a killed holder).
    """
    folder = Path(folder)
    with _GUARD:
        held = _HELD.get(_key(folder))
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _HELD[_key(folder)]
        if held.fd < 0:
            return
        try:
            if undo and held.created:
                os.unlink(folder / LOCK_FILE)  # while still locked
            elif undo:
                _write(held.fd, held.previous)
                os.utime(held.fd, ns=held.times)
            else:
                os.ftruncate(held.fd, 0)
        except OSError:
            pass  # the folder went away (a test's tmp_path); the kernel drops the lock on close
        finally:
            os.close(held.fd)
        if undo:
            _rmdirs(held.made_dirs)


def same_folder(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same folder (symbolic links followed)."""
    return _key(Path(a)) == _key(Path(b))


def holds(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    with _GUARD:
        return _key(Path(folder)) in _HELD


def check_writer(folder: str | Path) -> None:
    """Refuse to write into ``folder`` while another process holds its lock (this process
    holding it, or nobody, is fine). Opens nothing for writing and creates nothing.

    Raises:
        RunFolderBusy: another live process holds the folder.
    """
    if fcntl is None or holds(folder):
        return
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # no lock file: no holder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(Path(folder), fd) from None
    except OSError:
        pass
    finally:
        os.close(fd)  # also drops the probe's own lock
