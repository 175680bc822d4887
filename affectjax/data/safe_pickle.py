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

from affectjax.errors import UnsafePickleError

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


def _latin1_encode(text, encoding='utf-8', errors='strict'):
  """What `_codecs.encode` does in a Python-3 pickle of protocol 0-2 (array bytes written
  as a latin-1 string), and nothing else: another codec (zlib, base64, ...) is refused."""
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1') or errors != 'strict':
    raise UnsafePickleError(f'refusing _codecs.encode with {encoding!r} of a '
                            f'{type(text).__name__} (only latin1 text rebuilds array bytes)')
  return text.encode('latin1')


class _Restricted(pickle.Unpickler):

  def __init__(self, f, path):
    super().__init__(f, encoding='latin1')  # Python-2 pickles of NumPy arrays need latin1.
    self._path = path

  def find_class(self, module, name):
    if (module, name) == ('_codecs', 'encode'):
      return _latin1_encode
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
  except UnsafePickleError as e:
    message = str(e)
    raise UnsafePickleError(message if message.startswith(path) else f'{path}: {message}') \
        from None
  except Exception as e:  # Truncated or garbage bytes surface as many exception types.
    raise ValueError(f'{path}: corrupt or unreadable pickle ({type(e).__name__}: '
                     f'{" ".join(str(e).split())[:120]}); expected {what}') from None
