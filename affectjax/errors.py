"""The errors a user can cause, in one place.

Every entry point maps an `ExpectedError` (and the few built-in errors that stand for
bad input: missing files, permissions, a full disk, memory) to one line on stderr and
exit status 2; anything else is a bug and keeps its traceback. Library code raises
these; nothing outside `affectjax/data` needs to import a data module for them.
"""

from __future__ import annotations

import errno
import os
import pickle

# Exit statuses of the command line.
EXIT_ERROR = 2  # Bad input: config, data, workdir, disk.
EXIT_DIVERGED = 1  # Training produced a non-finite loss.
EXIT_INTERRUPTED = 3  # SIGTERM / SIGINT / SIGHUP: a checkpoint was saved; rerun to resume.


class ExpectedError(Exception):
  """A problem with the user's input or environment, stated in one line."""


class ConfigError(ExpectedError, ValueError):
  """A one-line problem with a config file or an override."""


class DataError(ExpectedError, ValueError):
  """A one-line problem with input data that names the file (or split) and field."""


class WorkdirError(ExpectedError, OSError):
  """The workdir cannot be created, locked or written (names the path and the write)."""


class CheckpointError(ExpectedError):
  """No checkpoint of the run can be restored or written; names the path."""


class ResourceError(ExpectedError):
  """Out of host or device memory; names the setting to lower."""


class NonFiniteLossError(ExpectedError, RuntimeError):
  """Training produced a NaN/inf loss, gradient or parameter."""


class Interrupted(ExpectedError):
  """A signal stopped the run (the message says which, and what was saved)."""


class UnsafePickleError(pickle.UnpicklingError):
  """A pickle names a global outside the restricted unpickler's allow-list."""


class LaunchError(ExpectedError):
  """A launched process failed; the others were stopped. `status`: the launcher's exit
  status (the failed process's own, or 1 when it was killed by a signal)."""

  def __init__(self, message: str, status: int):
    super().__init__(message)
    self.status = status


def describe_os_error(e: OSError) -> str:
  """'No space left on device' and friends, without the Python noise."""
  if e.errno == errno.ENOSPC:
    return 'no space left on device'
  if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    return 'permission denied' if e.errno != errno.EROFS else 'read-only file system'
  return e.strerror or type(e).__name__


def write_error(path: str, what: str, e: BaseException) -> WorkdirError:
  """A WorkdirError for a failed write of `what` to `path`."""
  if isinstance(e, OSError):
    reason = describe_os_error(e)
  else:
    text = str(e)
    reason = ('no space left on device' if 'No space left' in text or
              'RESOURCE_EXHAUSTED' in text else ' '.join(text.split())[:200])
  return WorkdirError(f'{path}: cannot write {what}: {reason}')


def is_out_of_memory(e: BaseException) -> bool:
  """MemoryError, or an XLA RESOURCE_EXHAUSTED allocation failure."""
  if isinstance(e, MemoryError):
    return True
  return isinstance(e, RuntimeError) and 'RESOURCE_EXHAUSTED' in str(e) and (
      'memory' in str(e).lower() or 'allocat' in str(e).lower())


def one_line(e: BaseException) -> str:
  text = ' '.join(str(e).split())
  if isinstance(e, OSError) and not isinstance(e, WorkdirError) and e.filename:
    return f'{os.fspath(e.filename)}: {describe_os_error(e)}'
  return text or type(e).__name__
