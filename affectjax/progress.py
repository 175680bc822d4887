"""Progress of long one-off work (decoding a corpus, extracting encoder features).

On a terminal, a tqdm bar; otherwise (logs, pipes, CI) one line on stderr every
`every` seconds with the count, the rate and the time left, and one at the end, so a
first-time preparation never runs for minutes in silence. Off a terminal the heading waits
for the first of those lines (or the end): work that fails in its first seconds prints only
its one error line.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar('T')


class Progress:
  """Counts work done: `update(n)`; `close()` prints the final line."""

  def __init__(self, total: int, what: str, unit: str = 'clips', every: float = 10.0):
    self.total, self.what, self.unit, self.every = total, what, unit, every
    self.done = 0
    self.start = self.last = time.time()
    self._bar = None
    self._headed = False
    if sys.stderr.isatty():
      self._heading()
      from tqdm import tqdm
      self._bar = tqdm(total=total, unit=unit, dynamic_ncols=True, leave=False)

  def _heading(self) -> None:
    if not self._headed:
      self._headed = True
      print(f'affectjax: {self.what}', file=sys.stderr, flush=True)

  def update(self, n: int = 1) -> None:
    self.done += n
    if self._bar is not None:
      self._bar.update(n)
      return
    now = time.time()
    if now - self.last >= self.every:
      self.last = now
      self._heading()
      print(f'affectjax: {self._line(now)}', file=sys.stderr, flush=True)

  def _line(self, now: float) -> str:
    rate = self.done / max(now - self.start, 1e-9)
    left = (self.total - self.done) / rate if rate > 0 else float('inf')
    return (f'{self.done}/{self.total} {self.unit} ({rate:.1f}/s'
            + (f', about {left:.0f} s left' if self.done < self.total else '') + ')')

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    now = time.time()
    self._heading()
    print(f'affectjax: done, {self._line(now)} in {now - self.start:.0f} s', file=sys.stderr,
          flush=True)


def items(iterable: Iterable[T], what: str, total: int | None = None,
          unit: str = 'clips') -> Iterator[T]:
  """`iterable`'s items, with progress reported as they are consumed."""
  values = list(iterable) if total is None else iterable
  bar = Progress(len(values) if total is None else total, what, unit)
  for x in values:
    yield x
    bar.update()
  bar.close()
