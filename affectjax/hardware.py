"""A one-line description of the machine, for results tables; what a run ran on and with."""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import platform
import re
import subprocess
import sys
import tempfile


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


@functools.lru_cache(maxsize=None)
def git_commit() -> dict | None:
  """{'commit', 'dirty'} of the checkout affectjax is imported from, or None (an installed
  wheel, no git). Read once per process, when affectjax.train is imported: the code a
  long study runs is what was checked out when it started, not a later HEAD."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if not os.path.exists(os.path.join(root, '.git')):
    return None
  try:
    head = subprocess.run(['git', '-C', root, 'rev-parse', 'HEAD'], capture_output=True,
                          text=True, timeout=10)
    status = subprocess.run(['git', '-C', root, 'status', '--porcelain', '--untracked-files=no'],
                            capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return None
  if head.returncode:
    return None
  return {'commit': head.stdout.strip(), 'dirty': bool(status.stdout.strip())}


def _version(package: str) -> str | None:
  from importlib import metadata
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def provenance(data_dir: str = '', dataset: str = '') -> dict:
  """What a run's results came from: package versions, the git commit, the devices, and
  the data directory and dataset read."""
  import flax
  import jax
  import optax
  from affectjax.version import __version__
  return {
      'affectjax': __version__, 'git': git_commit(), 'python': sys.version.split()[0],
      'jax': jax.__version__, 'jaxlib': _version('jaxlib'), 'flax': flax.__version__,
      'optax': optax.__version__,
      'orbax_checkpoint': _version('orbax-checkpoint'),
      'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
      'processes': jax.process_count(), 'host': cpu_name(),
      'data_dir': os.path.abspath(data_dir) if data_dir else None, 'dataset': dataset,
  }


# What libtpu prints when it is installed (the `tpu` extra) on a machine without TPUs: it
# looks for a TPU VM's metadata, fails, and says so on every start.
_LIBTPU_NOISE = re.compile(r'TPU|libtpu|InitGoogle|Source Location Trace|^\S+\.cc:\d+$')


def library_logs() -> bool:
  """Whether AFFECTJAX_LIBRARY_LOGS asks for the libraries' own log output."""
  return os.environ.get('AFFECTJAX_LIBRARY_LOGS', '') not in ('', '0')


def _libtpu_without_tpus() -> bool:
  import importlib.util
  return (importlib.util.find_spec('libtpu') is not None
          and not glob.glob('/dev/accel*') and not os.path.exists('/dev/vfio')
          and not library_logs())


@contextlib.contextmanager
def quiet_libtpu():
  """Drops libtpu's start-up complaints from the body's standard error (written by C++
  straight to file descriptor 2), on a machine with libtpu and no TPU; every other line
  the body writes there comes out after it. AFFECTJAX_LIBRARY_LOGS=1 shows them all."""
  if not _libtpu_without_tpus():
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      lines = captured.read().decode(errors='replace').splitlines()
      kept = [line for line in lines if line.strip() and not _LIBTPU_NOISE.search(line)]
      if kept:
        sys.stderr.write('\n'.join(kept) + '\n')


def start_jax() -> None:
  """Initialises JAX's backends (after `distributed.initialize`), without libtpu's noise."""
  with quiet_libtpu():
    import jax
    jax.devices()
