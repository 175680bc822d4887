"""Reading pretrained weights from local folders, without PyTorch and without running code.

* Hugging Face folders: `config.json` plus `model.safetensors` (or a sharded
  `model.safetensors.index.json`); a `pytorch_model.bin` is read only through a restricted
  unpickler (`read_torch_checkpoint`) that rebuilds tensors from their raw storages and
  admits no other global, so a checkpoint cannot execute code.
* CTranslate2 model folders (`model.bin`, as faster-whisper ships them), possibly split
  into parts (`model.bin.part1`, `.part2`, ... read as one stream, never concatenated on
  disk): `read_ctranslate2` returns the named variables, int8 ones dequantised.

Every failure is a one-line `DataError` naming the file (and the field or tensor).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import zipfile
from typing import Iterable

import numpy as np

from affectjax.data.audio import file_sha256
from affectjax.errors import DataError

WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin')


def read_json(path: str, what: str = 'config') -> dict:
  try:
    with open(path, 'rb') as f:
      raw = json.loads(f.read().decode('utf-8'))
  except FileNotFoundError:
    raise DataError(f'{path}: not found') from None
  except (OSError, ValueError, UnicodeDecodeError) as e:
    raise DataError(f'{path}: not a readable JSON {what} ({e})') from None
  if not isinstance(raw, dict):
    raise DataError(f'{path}: expected a JSON object, got {type(raw).__name__}')
  return raw


def weight_files(folder: str) -> list[str]:
  """The files holding a Hugging Face folder's weights (safetensors preferred)."""
  single = os.path.join(folder, 'model.safetensors')
  if os.path.isfile(single):
    return [single]
  index = os.path.join(folder, 'model.safetensors.index.json')
  if os.path.isfile(index):
    shards = sorted(set(read_json(index, 'index').get('weight_map', {}).values()))
    if not shards:
      raise DataError(f'{index}: field weight_map is empty')
    return [os.path.join(folder, s) for s in shards]
  torch_file = os.path.join(folder, 'pytorch_model.bin')
  if os.path.isfile(torch_file):
    return [torch_file]
  raise DataError(f'{folder}: no weights (expected model.safetensors, a sharded '
                  'model.safetensors.index.json or pytorch_model.bin)')


def read_tensors(folder: str, keep=None) -> dict[str, np.ndarray]:
  """Every tensor of a Hugging Face folder's weights by name (`keep(name)`: only those)."""
  out: dict[str, np.ndarray] = {}
  for path in weight_files(folder):
    if path.endswith('.bin'):
      tensors = read_torch_checkpoint(path)
    else:
      from safetensors.numpy import load_file
      try:
        tensors = load_file(path)
      except Exception as e:  # safetensors raises its own types for corrupt headers.
        if 'bfloat16' in str(e).lower() or 'bf16' in str(e).lower():
          tensors = _safetensors_via_flax(path)
        else:
          raise DataError(f'{path}: not a readable safetensors file ({e})') from None
    out.update({k: v for k, v in tensors.items() if keep is None or keep(k)})
  return out


def _safetensors_via_flax(path: str) -> dict[str, np.ndarray]:
  """bfloat16 tensors, which safetensors' NumPy reader refuses, through the flax reader."""
  from safetensors.flax import load_file
  try:
    return {k: np.asarray(v, np.float32) for k, v in load_file(path).items()}
  except Exception as e:
    raise DataError(f'{path}: not a readable safetensors file ({e})') from None


def fingerprint(files: Iterable[str], name: str) -> str:
  """`<name>_<hash of the files' bytes>`: caches of features are keyed by the weights'
  content, so two folders of one name never share an entry."""
  digest = hashlib.sha256()
  for path in files:
    digest.update(file_sha256(path))
  return f'{name}_{digest.hexdigest()[:16]}'


# -- pytorch_model.bin ------------------------------------------------------------------------

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': 'bfloat16', 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class _StorageType:
  def __init__(self, name: str):
    self.name = name


def _rebuild_tensor(storage, offset, size, stride, *_):
  array, = storage
  itemsize = array.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(array[offset:], shape=tuple(size),
                                         strides=tuple(s * itemsize for s in stride))
  return np.array(view)


def _rebuild_parameter(data, *_):
  return data


class _TorchUnpickler(pickle.Unpickler):
  """Rebuilds tensors from a zip checkpoint's storages; refuses every other global."""

  def __init__(self, f, archive: zipfile.ZipFile, prefix: str, path: str):
    super().__init__(f)
    self._archive, self._prefix, self._path = archive, prefix, path

  def find_class(self, module, name):
    if (module, name) == ('collections', 'OrderedDict'):
      import collections
      return collections.OrderedDict
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return _rebuild_tensor
    if (module, name) == ('torch._utils', '_rebuild_parameter'):
      return _rebuild_parameter
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise DataError(f'{self._path}: refusing to unpickle global {module}.{name} (a weights '
                    'file holds tensors and dicts only)')

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == 'storage' and
            isinstance(pid[1], _StorageType)):
      raise DataError(f'{self._path}: unexpected persistent id {pid!r:.80}')
    dtype = _STORAGE_DTYPES[pid[1].name]
    raw = self._archive.read(f'{self._prefix}/data/{pid[2]}')
    if dtype == 'bfloat16':  # Upper halves of float32s.
      bits = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
      return (bits.view(np.float32),)
    return (np.frombuffer(raw, dtype),)


def read_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
  """The tensors of a `torch.save` zip checkpoint (a state dict) as NumPy arrays, read
  with a restricted unpickler; the legacy (pre-1.6, non-zip) format is refused with the
  command that converts it."""
  convert = ('convert it to model.safetensors (python -c "import torch, safetensors.torch as '
             's; s.save_file(torch.load(\'pytorch_model.bin\'), \'model.safetensors\')")')
  if not zipfile.is_zipfile(path):
    raise DataError(f'{path}: not a zip-format PyTorch checkpoint; {convert}')
  try:
    with zipfile.ZipFile(path) as archive:
      pickles = [n for n in archive.namelist() if n.endswith('/data.pkl') or n == 'data.pkl']
      if not pickles:
        raise DataError(f'{path}: no data.pkl in the archive; {convert}')
      prefix = pickles[0].rpartition('/')[0]
      state = _TorchUnpickler(io.BytesIO(archive.read(pickles[0])), archive, prefix,
                              path).load()
  except DataError:
    raise
  except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
    raise DataError(f'{path}: corrupt PyTorch checkpoint ({type(e).__name__}: {e}); '
                    f'{convert}') from None
  if isinstance(state, dict) and 'state_dict' in state and isinstance(state['state_dict'],
                                                                       dict):
    state = state['state_dict']
  if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
    raise DataError(f'{path}: not a state dict of tensors')
  return dict(state)


# -- CTranslate2 model.bin --------------------------------------------------------------------

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16,
               5: 'bfloat16'}


def ctranslate2_parts(folder: str) -> list[str]:
  """`model.bin`, or its parts `model.bin.part1`, `.part2`, ... in order."""
  whole = os.path.join(folder, 'model.bin')
  if os.path.isfile(whole):
    return [whole]
  parts = []
  while os.path.isfile(os.path.join(folder, f'model.bin.part{len(parts) + 1}')):
    parts.append(os.path.join(folder, f'model.bin.part{len(parts) + 1}'))
  if not parts:
    raise DataError(f'{folder}: no CTranslate2 model.bin (nor model.bin.part1, ...)')
  return parts


class _Stream:
  """Several files read as one byte stream."""

  def __init__(self, paths: list[str]):
    self._files = [open(p, 'rb') for p in paths]
    self._i = 0
    self.where = paths[0] if len(paths) == 1 else f'{paths[0]} (+{len(paths) - 1} parts)'

  def read(self, n: int) -> bytes:
    chunks = []
    while n > 0 and self._i < len(self._files):
      chunk = self._files[self._i].read(n)
      if not chunk:
        self._i += 1
        continue
      chunks.append(chunk)
      n -= len(chunk)
    if n > 0:
      raise DataError(f'{self.where}: truncated CTranslate2 model (ends early)')
    return b''.join(chunks)

  def skip(self, n: int) -> None:
    while n > 0 and self._i < len(self._files):
      f = self._files[self._i]
      here, end = f.tell(), os.fstat(f.fileno()).st_size
      step = min(n, end - here)
      f.seek(step, os.SEEK_CUR)
      n -= step
      if f.tell() >= end:
        self._i += 1
    if n > 0:
      raise DataError(f'{self.where}: truncated CTranslate2 model (ends early)')

  def close(self):
    for f in self._files:
      f.close()


def read_ctranslate2(paths: list[str], keep=None,
                     shapes: dict | None = None) -> tuple[str, dict[str, np.ndarray]]:
  """(spec name, {variable: array}) of a CTranslate2 model file (binary versions 3-6),
  keeping the variables `keep(name)` accepts; int8 weights come back dequantised with
  their `weight_scale`, float16 and bfloat16 as float32. `shapes`, if given, receives
  every variable's shape (kept or not)."""
  stream = _Stream(paths)
  unpack = lambda fmt: struct.unpack(fmt, stream.read(struct.calcsize(fmt)))[0]  # noqa: E731

  def string():
    n = unpack('<H')
    return stream.read(n)[:-1].decode('utf-8')
  try:
    version = unpack('<I')
    if not 3 <= version <= 6:
      raise DataError(f'{stream.where}: CTranslate2 binary version {version} (this reader '
                      'knows 3 to 6)')
    spec = string()
    unpack('<I')  # The spec's revision.
    out = {}
    for _ in range(unpack('<I')):
      name = string()
      shape = tuple(unpack('<I') for _ in range(unpack('<B')))
      type_id = unpack('<B')
      size = unpack('<I')
      if shapes is not None:
        shapes[name] = shape
      if keep is not None and not keep(name):
        stream.skip(size)
        continue
      if type_id not in _CT2_DTYPES:
        raise DataError(f'{stream.where}: variable {name!r} has unknown type {type_id}')
      raw = stream.read(size)
      dtype = _CT2_DTYPES[type_id]
      if dtype == 'bfloat16':
        value = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
      else:
        value = np.frombuffer(raw, dtype)
      out[name] = value.reshape(shape)
  finally:
    stream.close()
  for name in [n for n in out if n.endswith('/weight_scale')]:
    weight = name[:-len('_scale')]
    if weight in out and out[weight].dtype == np.int8:
      scale = out.pop(name).astype(np.float32)
      out[weight] = out[weight].astype(np.float32) / scale.reshape(-1, *[1] * (
          out[weight].ndim - 1))
  return spec, {k: (v.astype(np.float32) if v.dtype in (np.float16,) else v)
                for k, v in out.items()}
