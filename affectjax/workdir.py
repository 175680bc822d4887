"""The run directory: one process at a time, and files that appear whole or not at all.

* `lock(workdir)`: an exclusive `fcntl` lock on `WORKDIR/.lock`, which holds the owner's
  pid and host. The kernel drops the lock when its process dies however it dies, so a
  lock file left by a dead process is taken over (with a warning naming that process);
  a live holder makes the second process exit with one line naming its pid and host.
* `write_atomic(path, ...)`: a hidden temporary file in the same directory, flushed,
  then renamed over `path`; on any failure (a full disk) the temporary file is removed
  and a `WorkdirError` names the path and what was being written.
* `remove_stale_temporaries(workdir)`: temporaries of killed writers are deleted when
  the next run takes the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import socket
import tempfile
from typing import Callable, Iterator

from affectjax.errors import WorkdirError, describe_os_error, write_error

log = logging.getLogger('affectjax')

LOCK_NAME = '.lock'
_TMP_PREFIX = '.tmp-'


def create(workdir: str) -> None:
  """`os.makedirs`, with a one-line error when the path cannot be a directory."""
  try:
    os.makedirs(workdir, exist_ok=True)
  except (FileExistsError, NotADirectoryError):
    raise WorkdirError(f'{workdir}: cannot create the workdir: a file is in the way') from None
  except OSError as e:
    raise WorkdirError(f'{workdir}: cannot create the workdir: {describe_os_error(e)}') \
        from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise WorkdirError(f'{workdir}: cannot write to the workdir: permission denied')


def identity(workdir: str) -> tuple[int, int] | None:
  """(device, inode) of the workdir, or None when it does not exist."""
  try:
    st = os.stat(workdir)
  except OSError:
    return None
  return st.st_dev, st.st_ino


def check_identity(workdir: str, expected: tuple[int, int] | None, what: str) -> None:
  """WorkdirError when the workdir is gone or is another directory than `expected` (it
  was deleted while the run wrote into it, and a write recreated the path): what the run
  wrote before is lost, so it stops instead of finishing in a workdir without its config,
  run card or earlier metrics."""
  if expected is not None and identity(workdir) != expected:
    raise WorkdirError(f'{workdir}: the workdir was deleted or replaced during the run '
                       f'(noticed {what}); its earlier files are gone, so the run stops: '
                       'start it again')


# What flock raises on a file system without locks (then runs go on unlocked).
NO_LOCKS = frozenset((errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL))


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds the workdir's lock for the body; see the module docstring."""
  path = os.path.join(workdir, LOCK_NAME)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise WorkdirError(f'{path}: cannot create the workdir lock: {describe_os_error(e)}') \
        from None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      raise WorkdirError(f'{workdir}: in use by another run ({holder}); wait for it to end '
                         'or use another --workdir') from None
    except OSError as e:
      if e.errno not in NO_LOCKS:
        raise WorkdirError(f'{path}: cannot lock the workdir: {describe_os_error(e)}') \
            from None
      log.warning('%s: this file system has no locks; running unlocked (start one run '
                  'per workdir)', workdir)
    previous = _read_holder(fd)
    if previous:
      log.warning('%s: taking over the lock left by %s, which is no longer running',
                  workdir, previous)
    me = f'pid {os.getpid()} on host {socket.gethostname()}'
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, me.encode(), 0)
      os.fsync(fd)
    except OSError as e:
      raise write_error(path, 'the workdir lock', e) from None
    try:
      yield
    finally:
      with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # Released cleanly: the next run has no one to warn about.
  finally:
    os.close(fd)  # Also drops the flock.


def _read_holder(fd: int) -> str:
  try:
    return os.pread(fd, 256, 0).decode(errors='replace').strip()
  except OSError:
    return ''


def replace_section(path: str, block: str, start: str, end: str,
                    heading: str | None = None) -> None:
  """Puts `block` (which begins with marker `start` and ends with `end`) in place of the
  text between those markers in the file `path` (a README's generated table). Without
  the markers the block is appended under `## heading`, or, with no heading, the file is
  left as it is. Written atomically."""
  with open(path) as f:
    text = f.read()
  if start in text and end in text:
    text = re.sub(re.escape(start) + '.*?' + re.escape(end), lambda _: block, text,
                  flags=re.S)
  elif heading is not None:
    text += f'\n## {heading}\n\n{block}\n'
  else:
    return
  write_atomic(path, 'the generated section', lambda f: f.write(text))


def write_atomic(path: str, what: str, write: Callable, mode: str = 'w') -> None:
  """Calls `write(file)` on a temporary beside `path`, then renames it to `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  tmp = None
  try:
    fd, tmp = tempfile.mkstemp(dir=directory,
                               prefix=f'{_TMP_PREFIX}{os.path.basename(path)}.')
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are for sharing.
    with os.fdopen(fd, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    tmp = None
  except OSError as e:
    raise write_error(path, what, e) from None
  finally:
    if tmp is not None:
      with contextlib.suppress(OSError):
        os.remove(tmp)


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def remove_stale_temporaries(workdir: str) -> None:
  """Deletes the temporaries that writers killed mid-write left in `workdir`."""
  for name in os.listdir(workdir):
    if name.startswith(_TMP_PREFIX) or '.tmp.' in name:  # '.tmp.': older releases.
      with contextlib.suppress(OSError):
        os.remove(os.path.join(workdir, name))
