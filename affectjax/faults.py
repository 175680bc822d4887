"""Named instants at which the kill-and-resume tests stop the trainer.

`AFFECTJAX_FAULT=POINT[@N][=SIGNAL[*K]][+S]` sends SIGNAL (default SIGKILL; K times in a
row, default once) to this process the N-th time (default 1) the trainer passes
`point(POINT)`, or S seconds later from another thread (inside what follows the point:
`compiling` is the start of an XLA compile);
with `AFFECTJAX_FAULT_PROCESS=I` only process I of a multi-process job acts. The points are the instants a
kill can leave a different workdir behind: after compiling, after a training step,
inside an evaluation, around the metrics record, the best and the latest checkpoint,
and results.json. Unset (always, outside tests) a point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_PLAN = None
_SEEN: dict[str, int] = {}

POINTS = ('compiling', 'compiled', 'step', 'evaluating', 'metrics_half_written',
          'metrics_written', 'best_saved', 'latest_saved', 'results_tmp_written')


def _plan():
  global _PLAN
  if _PLAN is None:
    spec = os.environ.get('AFFECTJAX_FAULT', '')
    _PLAN = ()
    if spec:
      where, _, sig = spec.partition('=')
      name, _, count = where.partition('@')
      if name not in POINTS:
        raise ValueError(f'AFFECTJAX_FAULT: unknown point {name!r} ({", ".join(POINTS)})')
      sig, _, delay = sig.partition('+')
      sig, _, times = sig.partition('*')
      only = os.environ.get('AFFECTJAX_FAULT_PROCESS', '')
      if only:
        import jax
        if jax.process_index() != int(only):
          return _PLAN
      _PLAN = (name, int(count or 1), getattr(signal, sig or 'SIGKILL'), int(times or 1),
               float(delay or 0))
  return _PLAN


def point(name: str) -> None:
  plan = _plan()
  if not plan or plan[0] != name:
    return
  _SEEN[name] = _SEEN.get(name, 0) + 1
  if _SEEN[name] != plan[1]:
    return

  def send():
    for _ in range(plan[3]):
      os.kill(os.getpid(), plan[2])
  if plan[4]:
    import threading
    threading.Timer(plan[4], send).start()
  else:
    send()
