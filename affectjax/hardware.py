"""A one-line description of the machine, for results tables."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or 'unknown CPU'


def describe() -> str:
  """e.g. '1 x cpu (Intel Xeon ..., 2 cores), jax 0.10.2'."""
  import jax
  return (f'{jax.device_count()} x {jax.devices()[0].device_kind} ({cpu_name()}, '
          f'{os.cpu_count()} cores), jax {jax.__version__}')
