"""Reading downloaded pickles without letting them run code.

`pickle.load` calls whatever callable a file names, so a pickle from the internet
can execute arbitrary code. `load` admits only what feature files legitimately
contain: NumPy arrays, dtypes and scalars, and plain containers; any other global
is refused with an error that names the file and the global.
"""

from __future__ import annotations

import io
import os
import pickle

# (module, name) pairs that rebuild NumPy arrays and scalars (NumPy 1.x and 2.x paths).
_ALLOWED = frozenset({
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'),
    ('numpy._core.numeric', '_frombuffer'),
    ('collections', 'OrderedDict'),
    ('builtins', 'set'),
    ('builtins', 'frozenset'),
    ('builtins', 'slice'),
    ('builtins', 'complex'),
})


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle names a global outside the allow-list."""


class _Restricted(pickle.Unpickler):

  def __init__(self, f, path):
    super().__init__(f, encoding='latin1')  # Python-2 pickles of NumPy arrays need latin1.
    self._path = path

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return super().find_class(module, name)
    raise UnsafePickleError(f'{self._path}: refusing to unpickle global {module}.{name} '
                            '(only NumPy arrays and plain containers are allowed)')


def load(path: str, what: str = 'a pickle'):
  """Unpickles `path` admitting only NumPy arrays and plain containers.

  Raises:
    FileNotFoundError, UnsafePickleError, or ValueError (corrupt file), each with
    a one-line message naming `path`.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: not found (expected {what})')
  with open(path, 'rb') as f:
    data = f.read()
  try:
    return _Restricted(io.BytesIO(data), path).load()
  except UnsafePickleError:
    raise
  except Exception as e:  # Truncated or garbage bytes surface as many exception types.
    raise ValueError(f'{path}: corrupt or unreadable pickle ({type(e).__name__}: '
                     f'{" ".join(str(e).split())[:120]}); expected {what}') from None
