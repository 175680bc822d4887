"""SIGTERM, SIGINT and SIGHUP: stop at a step boundary with a checkpoint, not mid-write.

Cloud TPU and GPU preemption sends SIGTERM and allows some seconds; Ctrl-C sends SIGINT.
Inside `signals()` the first such signal is recorded; while the trainer is `deferring`
(the training loop, its evaluations and checkpoint writes) it acts on it at the next
step boundary (it saves that step and raises `Interrupted`); before that (reading
data) nothing is at stake and `Interrupted` is raised at once, except inside
`compile()`, which holds it until XLA returns. A second
signal ends the process immediately (exit 128 + signal number), which is safe because
every checkpoint write survives a kill. On several processes the flag is combined
over all of them at each boundary, so every host stops, and saves, at the same step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

import jax
import numpy as np

from affectjax import faults
from affectjax.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

# Compiles in progress, and the Interrupted a signal raised meanwhile.
_hold = {'depth': 0, 'pending': None}


def compile(lowered):  # pylint: disable=redefined-builtin
  """`lowered.compile()`, with stop signals held until XLA returns.

  XLA compiles on its own worker threads while jax, waiting for them, runs Python's signal
  handlers; an `Interrupted` raised there unwinds the program while those threads still
  build the executable, and interpreter shutdown then crashes under them (exit 139). A
  signal that arrives meanwhile is acted on when the compile has returned."""
  _hold['depth'] += 1
  faults.point('compiling')
  try:
    out = lowered.compile()
  except BaseException:
    _hold['pending'] = None
    raise
  finally:
    _hold['depth'] -= 1
  pending, _hold['pending'] = _hold['pending'], None
  if pending is not None:
    raise pending
  return out


def raise_or_hold(error: BaseException) -> None:
  """Raises `error` from a signal handler, or keeps it for the end of the compile in
  progress. A second signal while one is kept aborts at once (exit 128 + number), as a
  second signal does during training."""
  if not _hold['depth']:
    raise error
  if _hold['pending'] is not None:
    os.write(2, b'affectjax: second signal while compiling: aborted at once\n')
    os._exit(128 + signal.SIGTERM)
  _hold['pending'] = error


class Signals:
  """What the handlers saw; read by the training loop."""

  def __init__(self):
    self.signum: int | None = None
    self.deferring = False

  def requested(self) -> bool:
    """Whether any process got a stop signal (a collective on several processes)."""
    local = self.signum is not None
    if jax.process_count() == 1:
      return local
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.int32(local))
    return bool(np.asarray(flags).max())

  def name(self) -> str:
    return signal.Signals(self.signum).name if self.signum else 'a stop signal on another host'

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      os.write(2, f'affectjax: second {signal.Signals(signum).name}: aborted at once, '
               'without saving (the last checkpoint stays valid)\n'.encode())
      os._exit(128 + signum)
    self.signum = signum
    if not self.deferring:
      raise_or_hold(Interrupted(f'{signal.Signals(signum).name} before training started; '
                                'nothing to save, rerun the same command to start'))


@contextlib.contextmanager
def signals() -> Iterator[Signals]:
  """Installs the handlers for the body (only on the main thread, where Python runs
  signal handlers); restores the previous ones after."""
  state = Signals()
  if threading.current_thread() is not threading.main_thread():
    yield state
    return
  previous = {s: signal.signal(s, state._handle) for s in SIGNALS}
  try:
    yield state
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
