"""Config files: load, override from the command line, validate, save.

A config is a Python file whose `get_config(arg=None)` returns a locked
`ml_collections.ConfigDict`. `path.py:arg` passes `arg` (e.g. `:smoke`).
Overrides are `--config.a.b=value`; the value is parsed as a Python literal and
must match the type already in the config, and the key must already exist.
"""

from __future__ import annotations

import ast
import difflib
import importlib.machinery
import importlib.util
import json
import math
import os
import sys
from typing import Any, Sequence

import ml_collections

from affectjax import errors
from affectjax.errors import ConfigError


# Config keys added after runs were recorded, with the value that reproduces the behaviour
# from before each existed: a workdir whose config.json lacks one still matches a config
# that holds it at this value (resume, and read-back of finished runs by the studies).
ADDED_KEYS = {
    'data.text_context': 0,
    'model.fusion': 'ssm',  # ContextualSSM.
    'data.unit': 'dialogue',  # ERC.
    'optim.groups': (),
    'train.eval_splits': ('valid', 'test'),
    'init.workdir': '',
    'init.checkpoint': 'best',
    'init.map': (),
    'init.dont_load': (),
    'init.hf': (),
    'data.audio_norm': 'clip',  # RAVDESS speech: per-clip statistics.
    'mesh.fsdp': 1,
    'optim.layer_decay': 1.0,
    'optim.layer_decay_prefix': '',
    # The speech data modules' encoder fields (affectjax/data/encoded.py): log-mel frames.
    'data.encoder': '',
    'data.encoder_mode': 'frozen',
    'data.encoder_pool': 4,
    'data.encoder_pad_seconds': 0.0,
    'data.encoder_norm': 'none',
}
# Keys removed since, with the value at which the old behaviour is the new default.
REMOVED_KEYS = {
    'optim.pretrained_learning_rate': 0.0,  # Now a config.optim.groups rule.
}


def base_config() -> ml_collections.ConfigDict:
  """Fields every experiment has; experiment files fill in `model` and `data`."""
  c = ml_collections.ConfigDict()
  c.name = ''  # Filled from the file name when empty.
  c.seed = 0

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: all devices not used by the other axes.
  c.mesh.fsdp = 1  # >1: parameters and optimizer state sharded too (see sharding.py).
  c.mesh.model = 1
  # Extra (logical_name, mesh_axis) pairs placed in front of sharding.LOGICAL_AXIS_RULES.
  c.mesh.rules = ()

  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic'
  c.data.dir = ''  # Else $AFFECTJAX_DATA_DIR.
  c.data.modalities = ('text', 'audio', 'vision')

  c.task = ml_collections.ConfigDict()
  c.task.name = 'classification'  # classification | regression
  c.task.num_classes = 2
  c.task.loss = 'cross_entropy'  # cross_entropy | l1 | mse
  c.task.metrics = 'classification'  # classification | regression | sentiment

  c.model = ml_collections.ConfigDict()
  c.model.name = 'tensor_fusion.TFN'
  c.model.dtype = 'float32'

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'adamw'  # adam | adamw | sgd
  c.optim.learning_rate = 1e-3
  # ((path regex, learning-rate scale), ...): the first rule matching a parameter path
  # scales its updates (same schedule); scale 0 freezes it. See affectjax/optim.py.
  c.optim.groups = ()
  # Layer-wise learning-rate decay under one subtree (1.0: off); see affectjax/optim.py.
  c.optim.layer_decay = 1.0
  c.optim.layer_decay_prefix = ''
  c.optim.schedule = 'cosine'  # constant | cosine | linear
  c.optim.warmup_steps = 0
  c.optim.weight_decay = 1e-4
  c.optim.grad_clip = 1.0  # 0 disables.

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64  # Global, over all processes.
  c.train.num_steps = 1000
  c.train.eval_every = 200  # Also the checkpoint interval.
  c.train.log_every = 50
  c.train.eval_batch_size = 256
  c.train.select_metric = 'accuracy'  # Chosen on the validation split.
  c.train.select_mode = 'max'  # max | min
  c.train.keep_checkpoints = 2
  c.train.eval_splits = ('valid', 'test')  # Evaluated at the end; valid also selects.

  # Weights to start from after random init (affectjax/transfer.py): another run's
  # checkpoint with a subtree map, and Hugging Face encoder folders.
  c.init = ml_collections.ConfigDict()
  c.init.workdir = ''
  c.init.checkpoint = 'best'  # best | latest
  c.init.map = ()  # ((source subtree, target subtree), ...); () = the whole tree.
  c.init.dont_load = ()  # Regexes of target paths kept at their random init.
  c.init.hf = ()  # ((target subtree, folder), ...); folder '' = all-MiniLM-L6-v2.
  return c


MODALITY_LETTERS = {'t': 'text', 'a': 'audio', 'v': 'vision'}


def _parse_value(raw: str, current: Any, key: str) -> Any:
  """Parses `raw` into the type of `current`."""
  if key.endswith('modalities') and raw and set(raw) <= set(MODALITY_LETTERS):
    # Shorthand used in ablations: --config.data.modalities=ta -> ('text', 'audio').
    return tuple(MODALITY_LETTERS[c] for c in 'tav' if c in raw)
  if isinstance(current, bool):
    low = raw.lower()
    if low in ('true', '1', 'yes'):
      return True
    if low in ('false', '0', 'no'):
      return False
    raise ConfigError(f'--config.{key}: expected a bool, got {raw!r}')
  if isinstance(current, str):
    return raw
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    if isinstance(current, (tuple, list)):
      # Convenience: --config.data.modalities=text,audio
      value = tuple(v.strip() for v in raw.split(',') if v.strip())
    else:
      raise ConfigError(
          f'--config.{key}: expected {type(current).__name__}, got {raw!r}') from None
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(current, (tuple, list)):
    if isinstance(value, (str, int, float)):
      value = (value,)
    if not isinstance(value, (tuple, list)):
      raise ConfigError(f'--config.{key}: expected a sequence, got {raw!r}')
    return tuple(value)
  if current is not None and type(value) is not type(current):
    raise ConfigError(
        f'--config.{key}: expected {type(current).__name__}, got {raw!r}')
  return value


def spec(name: str, *variants: str) -> str:
  """A config spec from a packaged config's name, which may carry its own variants, and
  more variants: spec('mosi:ssm', 'fold2') -> '<configs>/mosi.py:ssm,fold2' (empty ones
  dropped), for study scripts that name runs by family and model."""
  file, _, picks = name.partition(':')
  joined = ','.join(v for v in (picks, *variants) if v)
  return os.path.join(packaged_configs_dir(), f'{file}.py') + (f':{joined}' if joined else '')


def packaged_configs_dir() -> str:
  """The configs that come with affectjax: `affectjax/configs` in an installed wheel, the
  repository's `configs/` in a source checkout (or an editable install)."""
  here = os.path.dirname(os.path.abspath(__file__))
  inside = os.path.join(here, 'configs')
  return inside if os.path.isdir(inside) else os.path.join(os.path.dirname(here), 'configs')


def resolve_path(path: str) -> str:
  """A config file: the path as given if it exists, else a packaged config by name
  (`synthetic`, `synthetic.py` or `configs/synthetic.py`)."""
  if os.path.isfile(path):
    return path
  name = os.path.basename(path)
  packaged = os.path.join(packaged_configs_dir(), name if name.endswith('.py') else
                          name + '.py')
  if os.path.dirname(path) in ('', 'configs') and os.path.isfile(packaged):
    return packaged
  known = [n[:-3] for n in os.listdir(packaged_configs_dir())
           if n.endswith('.py') and n != 'common.py' and not n.startswith('_')]
  near = difflib.get_close_matches(os.path.splitext(name)[0], known, n=1)
  raise ConfigError(f'config file not found: {path} (nor a packaged config of that name in '
                    f'{packaged_configs_dir()})' + (f'; did you mean {near[0]}?' if near else ''))


def _load_file(spec: str) -> ml_collections.ConfigDict:
  path, _, arg = spec.partition(':')
  path = resolve_path(path)
  name = os.path.splitext(os.path.basename(path))[0]
  # Python source whatever the file's extension (a config saved as .txt or .cfg).
  loader = importlib.machinery.SourceFileLoader(f'_affectjax_config_{name}', path)
  module_spec = importlib.util.spec_from_loader(loader.name, loader)
  module = importlib.util.module_from_spec(module_spec)
  # A config may import shared helpers beside it (configs/common.py).
  sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
  try:
    module_spec.loader.exec_module(module)
  except SystemExit as e:
    raise ConfigError(f'{path}: called sys.exit({e.code!r}) while being imported') from None
  except Exception as e:  # A config file is user code; report where it broke.
    raise ConfigError(f'{path}: failed to import: {type(e).__name__}: {e}') from e
  finally:
    sys.path.pop(0)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'{path}: has no get_config()')
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except ConfigError:
    raise
  except SystemExit as e:
    raise ConfigError(f'{spec}: get_config() called sys.exit({e.code!r})') from None
  except Exception as e:  # User code again: an unknown variant, a typo in a field.
    raise ConfigError(f'{spec}: get_config() failed: {type(e).__name__}: {e}') from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f'{path}: get_config() must return a ConfigDict')
  for group, value in base_config().items():  # Every run reads every group.
    if group not in config:
      raise ConfigError(f'{path}: get_config() returned no config.{group} (start from '
                        'affectjax.config.base_config())')
    if isinstance(value, ml_collections.ConfigDict) != isinstance(
        config[group], ml_collections.ConfigDict):
      raise ConfigError(f'{path}: config.{group} must be '
                        f'{"a group (ConfigDict)" if isinstance(value, ml_collections.ConfigDict) else "a value, not a group"}')
  with config.unlocked():
    if not config.get('name'):
      config.name = name + (f':{arg}' if arg else '')
  config.lock()
  return config


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """Applies `a.b=value` overrides in order; unknown keys are errors."""
  for item in overrides:
    key, sep, raw = item.partition('=')
    if not sep:
      raise ConfigError(f'--config.{key}: expected --config.{key}=VALUE')
    parent = config
    parts = key.split('.')
    for i, part in enumerate(parts):
      if not isinstance(parent, ml_collections.ConfigDict) or part not in parent:
        prefix = '.'.join(parts[:i])
        near = (difflib.get_close_matches(part, list(parent.keys()), n=1)
                if isinstance(parent, ml_collections.ConfigDict) else [])
        hint = f'; did you mean {".".join(filter(None, (prefix, near[0])))}?' if near else ''
        raise ConfigError(f'unknown config key: {".".join(parts[:i + 1])} '
                          f'(from --config.{key}){hint}')
      if i < len(parts) - 1:
        parent = parent[part]
    current = parent[parts[-1]]
    if isinstance(current, ml_collections.ConfigDict):
      # A group is replaced only by a dict literal, e.g. --config.model.lstm_out='{"text": 32}'.
      try:
        value = ast.literal_eval(raw)
      except (ValueError, SyntaxError):
        value = None
      if not isinstance(value, dict):
        raise ConfigError(f'--config.{key}: is a group; set one of its fields or give a '
                          'dict literal')
      value = ml_collections.ConfigDict(value)
    else:
      value = _parse_value(raw, current, key)
    try:
      parent[parts[-1]] = value
    except (TypeError, ValueError) as e:
      raise ConfigError(f'--config.{key}: {e}') from None
  return config


def load(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads `path.py[:arg]` and applies overrides (`a.b=value` strings)."""
  config = _load_file(spec)
  return apply_overrides(config, overrides)


def data_dir(config: ml_collections.ConfigDict) -> str:
  """The data directory: `config.data.dir`, else $AFFECTJAX_DATA_DIR, else ''."""
  return config.data.get('dir', '') or os.environ.get('AFFECTJAX_DATA_DIR', '')


def save(config: ml_collections.ConfigDict, path: str) -> None:
  """Writes the resolved config as JSON, atomically."""
  from affectjax import workdir
  text = config.to_json_best_effort(indent=2, sort_keys=True) + '\n'
  workdir.write_atomic(path, 'the config', lambda f: f.write(text))


def split_cli_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.a.b=v` (or `--config.a.b v`) from the other arguments."""
  rest, overrides = [], []
  argv = list(argv)
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith('--config.'):
      item = arg[len('--config.'):]
      if '=' not in item:
        if i + 1 >= len(argv):
          raise ConfigError(f'{arg}: expected a value')
        item = f'{item}={argv[i + 1]}'
        i += 1
      overrides.append(item)
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def to_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())



# -- declared valid ranges of the model and data fields ----------------------------------------
# By field name, at any depth under config.model and config.data (a tower's `width` is
# checked as the model's is; a per-modality dict such as `dropouts.audio` by its own
# name). A value outside its range would otherwise run to the end (dropout 1.5 scales
# activations by -2, zero depths give an empty network, a zero window an empty log-mel)
# or fail hours in with an error that names neither field nor file.
PROBABILITY = ('dropout', 'dropouts', 'encoder_dropout', 'head_dropout', 'post_fusion_dropout',
               'mask_ratio', 'audio_mask_ratio', 'video_mask_ratio', 'mask_time_prob',
               'freq_mask', 'time_mask', 'token_drop')  # [0, 1)
POSITIVE = ('num_heads', 'num_layers', 'decoder_depth', 'fusion_depth', 'subnet_depth',
            'context_layers', 'context_heads', 'graph_heads', 'mlp_ratio', 'embed_dim',
            'fusion_dim', 'post_fusion_dim', 'rank', 'node_size', 'dense_size',
            'classifier_hidden', 'context_hidden', 'graph_hidden', 'fusion_hidden',
            'fusion_layers', 'enhancement_size', 'feature_nodes', 'stride',
            'hop_ms', 'window_ms', 'n_mels', 'max_seconds', 'top_db', 'num_frames', 'size',
            'max_tokens', 'num_folds', 'num_train', 'num_test', 'num_valid', 'encoder_pool',
            'repeat', 'valid_actors', 'num_speakers', 'face_margin', 'fold')  # > 0
NON_NEGATIVE = ('hidden', 'width', 'state_size', 'num_bases', 'window_past', 'window_future',
                'encoder_pad_seconds', 'max_utterances', 'text_context', 'noise',
                'unique_modality')  # >= 0 (0: off, or the model's default)


def check_ranges(config: ml_collections.ConfigDict) -> None:
  """ConfigError naming the field for a model or data value outside its declared range,
  a NaN or infinite number anywhere in them, or empty or repeated modalities."""
  def walk(prefix, node, parent=''):
    for key, value in node.items():
      where = f'config.{prefix}.{key}'
      if isinstance(value, (ml_collections.ConfigDict, dict)):
        walk(f'{prefix}.{key}', value, key)
        continue
      if key == 'modalities' and isinstance(value, (tuple, list)):
        if not value or len(set(value)) != len(value):
          raise ConfigError(f'{where}: must name at least one modality, each once, got '
                            f'{tuple(value)!r}')
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        continue
      if not math.isfinite(value):
        raise ConfigError(f'{where}: must be a finite number, got {value!r}')
      if key not in (*PROBABILITY, *POSITIVE, *NON_NEGATIVE):
        key = parent  # `dropouts.audio` is a dropout rate, `hidden.text` a size.
      if key in PROBABILITY and not 0 <= value < 1:
        raise ConfigError(f'{where}: must be in [0, 1), got {value!r}')
      if key in POSITIVE and value <= 0:
        raise ConfigError(f'{where}: must be > 0, got {value!r}')
      if key in NON_NEGATIVE and value < 0:
        raise ConfigError(f'{where}: must be >= 0, got {value!r}')
  for group in ('model', 'data'):
    if group in config:
      walk(group, config[group])


def validate(config) -> None:
  """ConfigError naming the field for any value of the config that cannot be right: the
  declared ranges (`check_ranges`), the train, seed and optimizer numbers. Checked
  before training writes anything, and on a saved config before eval and predict."""
  check_ranges(config)
  t = config.train
  for field in ('batch_size', 'num_steps', 'eval_every', 'log_every', 'eval_batch_size',
                'keep_checkpoints'):
    if not isinstance(t[field], int) or t[field] <= 0:
      raise ConfigError(f'config.train.{field}: must be positive, got {t[field]}')
  if t.select_mode not in ('max', 'min'):
    raise ConfigError(f'config.train.select_mode: {t.select_mode!r} (max | min)')
  if not isinstance(config.seed, int) or not 0 <= config.seed < 2 ** 32:
    raise ConfigError(f'config.seed: must be an integer in [0, 2**32), got '
                                 f'{config.seed!r}')
  splits = t.get('eval_splits', ('valid', 'test'))
  if not isinstance(splits, (tuple, list)) or 'valid' not in splits or len(set(splits)) != len(
      splits):
    raise ConfigError(f'config.train.eval_splits: must name distinct splits and '
                                 f'include valid (selection), got {splits!r}')
  o = config.optim
  for field, low, strict in (('learning_rate', 0.0, True), ('weight_decay', 0.0, False),
                             ('grad_clip', 0.0, False)):
    value = o.get(field, 0.0)
    if not isinstance(value, (int, float)) or not math.isfinite(value) or (
        value <= low if strict else value < low):
      raise ConfigError(
          f'config.optim.{field}: must be a finite number {">" if strict else ">="} {low}, '
          f'got {value!r}')
  if not isinstance(o.warmup_steps, int) or o.warmup_steps < 0:
    raise ConfigError(f'config.optim.warmup_steps: must be >= 0, got '
                                 f'{o.warmup_steps!r}')
  if o.warmup_steps and o.schedule == 'constant':
    raise ConfigError(f'config.optim.warmup_steps={o.warmup_steps}: the constant '
                                 'schedule has no warmup (use cosine or linear, or 0)')
  if o.warmup_steps >= t.num_steps:
    raise ConfigError(
        f'config.optim.warmup_steps={o.warmup_steps}: must be shorter than the run '
        f'(config.train.num_steps={t.num_steps})')


# -- a config against the run already in a workdir ----------------------------------------


def _has_progress(workdir: str) -> bool:
  """Whether the workdir holds a run worth protecting: a checkpoint or results."""
  from affectjax import checkpoint as checkpoint_lib
  return (os.path.exists(os.path.join(workdir, 'results.json')) or
          checkpoint_lib.has_checkpoint(workdir))


def check_workdir(config, workdir: str) -> int | None:
  """Refuses a config that differs from the one the workdir's run was made with. A
  workdir without a checkpoint or results holds no progress (a run that failed before
  its first checkpoint), and its config.json is simply replaced. The one change allowed
  is a larger `train.num_steps` (a run extended from its last checkpoint): then the
  recorded number of steps is returned."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, ValueError) as e:
    if not _has_progress(workdir):
      return None
    raise ConfigError(f'{path}: unreadable ({errors.one_line(e)}); the workdir '
                                 'holds a run whose config cannot be checked') from None
  new = to_dict(config)
  if old != new:
    flat_old, flat_new = flat(old), flat(new)
    # A run recorded before a key existed matches a config that leaves it at the value
    # that reproduces the old behaviour.
    for key, value in ADDED_KEYS.items():
      if key not in flat_old and flat_new.get(key) == json.dumps(value):
        del flat_new[key]
    for key, value in REMOVED_KEYS.items():
      if key not in flat_new and flat_old.get(key) == json.dumps(value):
        del flat_old[key]
    diff = sorted(flat_old.items() ^ flat_new.items())
    if not diff or not _has_progress(workdir):
      return None
    keys = {k for k, _ in diff}
    if keys == {'train.num_steps'}:
      before, after = json.loads(flat_old[keys.pop()]), config.train.num_steps
      if after > before:
        return before
      raise ConfigError(
          f'--config.train.num_steps={after}: the run in {workdir} was made for {before} '
          'steps; it can be extended (more steps), not shortened')
    key = diff[0][0]
    raise ConfigError(
        f'{path}: the workdir holds a run with a different config (first difference: '
        f'{key}); use a new --workdir or the same config')
  return None


def flat(d: dict, prefix: str = '') -> dict:
  """A nested dict as {'a.b': JSON text of the value}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = json.dumps(v)
  return out
