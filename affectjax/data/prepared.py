"""What every TFDS-backed dataset shares: where raw and prepared data live, and building once.

Raw files are read from the data directory (`config.data.dir`, else
$AFFECTJAX_DATA_DIR); prepared ArrayRecord data and derived caches live under
`~/.cache/affectjax` unless the config names another place.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shutil
import sys

from affectjax import config as config_lib
from affectjax import errors
from affectjax import workdir


def tfds():
  import tensorflow_datasets  # Imported lazily: the synthetic path does not need it.
  return tensorflow_datasets


def cache_dir() -> str:
  return os.path.join(os.path.expanduser('~'), '.cache', 'affectjax')


def builder_cache(define):
  """Decorates a data module's function that defines its TFDS builder classes: they are
  defined on first use (TFDS is imported only then) and once (TFDS registers each name
  once per process)."""
  return functools.cache(define)


def tfds_dir(config) -> str:
  """`config.data.tfds_dir`, default ~/.cache/affectjax/tfds."""
  return config.data.get('tfds_dir', '') or os.path.join(cache_dir(), 'tfds')


def data_dir(config, holds: str) -> str:
  """The raw-data directory, or a one-line error saying what it should hold."""
  directory = config_lib.data_dir(config)
  if not directory:
    raise errors.DataError('config.data.dir: not set and $AFFECTJAX_DATA_DIR is empty; point '
                         f'it at the folder that holds {holds}')
  return directory


def content_hash(paths) -> str:
  """A short hash of the files' names and bytes: prepared data is keyed by it, so a
  source file replaced under a prepared cache is read again, whatever its mtime."""
  digest = hashlib.blake2b(digest_size=8)
  for path in sorted(paths):
    digest.update(os.path.basename(path).encode() + b'\0')
    with open(path, 'rb') as f:
      for block in iter(lambda: f.read(1 << 22), b''):
        digest.update(block)
  return digest.hexdigest()


def build_once(builder, manual_dir: str, check=None):
  """Prepares `builder` from the raw files in `manual_dir` unless it is already prepared.

  `check()` reads and validates the raw files first, so bad input ends in the reader's
  one-line error and leaves nothing half-built in the TFDS directory. Processes that
  find the same dataset unprepared at once (the processes of a run on one host, parallel
  test workers, two users' jobs) take turns on a lock beside it: the first prepares, the
  others wait and then read what it wrote (TFDS alone would let both write, and the
  second's final rename fails on the first's directory)."""
  if builder.is_prepared():
    return builder
  with _preparing(builder):
    if not builder.is_prepared():
      if check is not None:
        check()
      _remove_incomplete(builder)
      if not sys.stderr.isatty():  # Progress bars are for terminals, not logs and pipes.
        tfds().disable_progress_bar()
      _say_what_happens(builder, manual_dir)
      root = getattr(builder, 'data_dir_root', None)  # TFDS's; not every builder's.
      downloads = _missing_parents(os.path.join(os.fspath(root), 'downloads', 'extracted',
                                                'x')) if root else []
      try:
        builder.download_and_prepare(
            download_config=tfds().download.DownloadConfig(manual_dir=manual_dir))
      except Exception as e:
        # TFDS's own temporaries and empty download folders go; _preparing then removes
        # the lock and the folders made for it.
        _remove_incomplete(builder)
        for folder in downloads:
          with contextlib.suppress(OSError):
            os.rmdir(folder)
        if _is_write_failure(e):
          raise errors.write_error(os.fspath(builder.data_dir), f'the prepared {builder.name} '
                                   'dataset (set config.data.tfds_dir elsewhere, or free '
                                   'space)', e) from None
        raise
  return builder


def _is_write_failure(e: BaseException) -> bool:
  """An OSError, or array_record's / TFDS's RuntimeError around one (full disk, no
  permission), rather than a bug."""
  if isinstance(e, OSError):
    return True
  text = str(e)
  return any(s in text for s in ('No space left on device', 'Permission denied',
                                 'Read-only file system', 'Disk quota exceeded'))


def _remove_incomplete(builder) -> None:
  """Deletes TFDS's temporaries of this version (`incomplete.XXXXXX_<version>`) that a
  stopped or killed preparation left; called under the preparation lock, so none of them
  is another process's work in progress."""
  version_dir = os.fspath(builder.data_dir).rstrip(os.sep)
  parent, version = os.path.dirname(version_dir), os.path.basename(version_dir)
  if '://' in parent or not os.path.isdir(parent):
    return
  for name in os.listdir(parent):
    if re.fullmatch(r'incomplete\.[A-Z0-9]{6}_' + re.escape(version), name):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


@contextlib.contextmanager
def _preparing(builder):
  """Holds `<version dir>.lock` (an flock, dropped by the kernel if the holder dies) while
  the body prepares the builder's version directory; a remote TFDS directory (gs://...)
  has no local lock, so there TFDS's own behaviour stands. When the body fails (a refused
  input, a full disk) the lock file and the folders made for it go, so a refusal leaves
  nothing; a process that waited on the removed file takes the lock again on a new one."""
  path = os.fspath(builder.data_dir).rstrip(os.sep) + '.lock'
  if '://' in path:
    yield
    return
  made = _missing_parents(path)
  fd = _lock(builder, path)
  try:
    yield
  except BaseException:
    with contextlib.suppress(OSError):  # Still locked: a waiter then sees it gone.
      os.remove(path)
    os.close(fd)
    fd = -1
    for folder in made:  # Deepest first; one another process uses is not empty.
      with contextlib.suppress(OSError):
        os.rmdir(folder)
    raise
  finally:
    if fd >= 0:
      os.close(fd)


def _missing_parents(path: str) -> list[str]:
  out, folder = [], os.path.dirname(os.path.abspath(path))
  while folder and not os.path.exists(folder):
    out.append(folder)
    folder = os.path.dirname(folder)
  return out


def _lock(builder, path: str) -> int:
  """An open, flocked descriptor of `path` (the lock file still at that path)."""
  while True:
    try:  # The folders too: a failed holder removes those it made.
      os.makedirs(os.path.dirname(path), exist_ok=True)
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise errors.DataError(f'{path}: cannot create the preparation lock ({e.strerror})') \
          from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      print(f'affectjax: {builder.name} is being prepared by another process; waiting for '
            f'it ({path})...', flush=True)
      fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
      if e.errno not in workdir.NO_LOCKS:
        os.close(fd)
        raise errors.DataError(f'{path}: cannot lock ({e.strerror})') from None
      return fd  # A file system without locks: prepare unlocked, as TFDS itself does.
    try:
      if os.stat(path).st_ino == os.fstat(fd).st_ino:
        return fd
    except FileNotFoundError:
      pass
    os.close(fd)  # Removed by a holder that failed: lock the new file instead.


def _say_what_happens(builder, manual_dir: str) -> None:
  """TFDS announces 'Downloading and preparing dataset' although these builders only read
  local files: say what really happens instead (its two print hooks, on this builder)."""
  if hasattr(builder, '_log_download_bytes'):
    builder._log_download_bytes = lambda: print(
        f'affectjax: preparing {builder.name} once from {manual_dir} into {builder.data_dir} '
        '(local files, nothing is downloaded)...', flush=True)
  if hasattr(builder, '_log_download_done'):
    builder._log_download_done = lambda: print(
        f'affectjax: prepared {builder.name} in {builder.data_dir}; later runs read it.',
        flush=True)


def hash_text(text: str) -> str:
  """A short hash of a settings string (for cache keys)."""
  return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
