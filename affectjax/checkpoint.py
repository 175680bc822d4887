"""Checkpoints that survive a kill at any instant, and say when they are corrupt.

Layout under `WORKDIR/checkpoints/`:
  latest/<step>/{state, data, meta}  train state (params, optimizer state, step, RNG),
                                     the data iterator state, and meta: best-so-far,
                                     the training losses since the last validation,
                                     and the digests below
  best/<step>/{params, meta}         parameters of the best validation evaluation
  corrupt/                           checkpoints that failed verification, moved aside

Each step is written by orbax into a temporary directory that is renamed to `<step>`
only when complete, so a kill leaves either a whole checkpoint or a temporary.
Every checkpoint's meta holds a SHA-256 digest of what it saved (every array's path,
dtype, shape and bytes; the iterator state's JSON); a restore recomputes it, so a
flipped byte or an edited iterator state is caught, not trained on. The meta also holds
the saved tree's structure (paths, shapes, dtypes): a checkpoint whose structure is not
this run's (another model's, copied in) is refused with an error, not moved aside as
corrupt and trained over from step 0. Only states whose
parameters are all finite are saved, so the newest checkpoint is always a good one.

The rule that makes the pieces consistent after a restart (`Checkpoints.recover`):
the newest latest checkpoint that verifies, and whose recorded best checkpoint also
verifies, is the one the run resumes from. Then
  * temporaries (names that are not a step number) are deleted;
  * newer latest checkpoints (they failed verification) are moved to corrupt/, with
    one line each saying so;
  * best checkpoints other than the recorded one are deleted (they were written
    after the resumed step, by a run killed before its next latest save);
  * the trainer keeps the metrics.jsonl records up to the resumed step only.
With no such checkpoint the run starts afresh (and the same cleaning applies), so
rerunning the same command after a kill at any instant gives the uninterrupted run.
A best checkpoint is deleted only after a latest checkpoint that no longer refers to
it has been written, which is what keeps the rule's checkpoint pair available.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from affectjax import faults
from affectjax import workdir as workdir_lib
from affectjax.errors import CheckpointError, NonFiniteLossError, one_line, write_error

log = logging.getLogger('affectjax')


def structure(tree) -> str:
  """SHA-256 of a tree's paths, shapes and dtypes (arrays or their abstract stand-ins)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return json_digest([[jax.tree_util.keystr(p), list(np.shape(x)), str(x.dtype)]
                      for p, x in leaves])


def digest(tree) -> str:
  """SHA-256 over every leaf's path, dtype, shape and bytes."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    a = _host(leaf)
    h.update(jax.tree_util.keystr(path).encode())
    h.update(f'{a.dtype}{a.shape}'.encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def json_digest(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _host(x) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def all_finite(tree) -> bool:
  return all(np.isfinite(a).all() for a in map(_host, jax.tree.leaves(tree))
             if np.issubdtype(a.dtype, np.inexact))


@dataclasses.dataclass
class Resume:
  """Where `recover` found the run: the step and everything saved with it."""
  step: int
  state: Any
  data_state: dict
  meta: dict


class _Corrupt(Exception):
  pass


def _is_step(name: str) -> bool:
  return name.isdigit() and str(int(name)) == name


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds a finished latest checkpoint directory (verified or not)."""
  latest = os.path.join(os.path.abspath(workdir), 'checkpoints', 'latest')
  return os.path.isdir(latest) and any(_is_step(n) for n in os.listdir(latest))


class Checkpoints:
  """The latest and best checkpoints of one run (see the module docstring)."""

  def __init__(self, workdir: str, keep: int = 2):
    self.workdir = os.path.abspath(workdir)
    self.root = os.path.join(self.workdir, 'checkpoints')
    self.identity = workdir_lib.identity(self.workdir)  # Checked after every write.
    self.keep = max(1, keep)
    self._ckpt = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    self._latest_step = None

  def _dir(self, kind: str, step: int | None = None) -> str:
    path = os.path.join(self.root, kind)
    return path if step is None else os.path.join(path, str(step))

  def steps(self, kind: str) -> list[int]:
    path = self._dir(kind)
    if not os.path.isdir(path):
      return []
    return sorted(int(n) for n in os.listdir(path) if _is_step(n))

  def latest_step(self) -> int | None:
    """The newest latest checkpoint this process saved or resumed from."""
    return self._latest_step

  # -- saving ----------------------------------------------------------------------------

  def save(self, step: int, state, data_state: dict, meta: dict) -> None:
    """Writes latest/<step>, then drops the latest checkpoints beyond `keep` and every
    best checkpoint other than `meta['best_step']`."""
    host = jax.tree.map(_host, state)  # One device-to-host copy for both checks.
    if not all_finite(host.params):
      raise NonFiniteLossError(
          f'non-finite parameters at step {step}; not saved. {self.last_good()}')
    # The parameters' own digest lets another run load them without this run's state
    # structure (config.init from a latest checkpoint).
    meta = dict(meta, digest={'state': digest(host), 'data': json_digest(data_state),
                              'params': digest(host.params)}, structure=structure(host))
    self._write('latest', step, ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(meta)))
    self._latest_step = step
    faults.point('latest_saved')
    if jax.process_index() == 0:
      for s in self.steps('latest')[:-self.keep]:
        self._delete('latest', s)
      for s in self.steps('best'):
        if s != meta['best_step']:
          self._delete('best', s)
    _sync('affectjax_checkpoint_retention')

  def save_best(self, step: int, params, meta: dict) -> None:
    host = jax.tree.map(_host, params)
    if not all_finite(host):
      raise NonFiniteLossError(
          f'non-finite parameters at step {step}; not saved. {self.last_good()}')
    meta = dict(meta, digest={'params': digest(host)}, structure=structure(host))
    self._write('best', step, ocp.args.Composite(
        params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)))
    faults.point('best_saved')

  def _write(self, kind: str, step: int, args) -> None:
    path = self._dir(kind, step)
    try:
      os.makedirs(self._dir(kind), exist_ok=True)
      if os.path.exists(path):  # Left by a run whose recover() did not see it: stale.
        self._delete(kind, step)
      self._ckpt.save(path, args=args)
    except Exception as e:  # orbax and TensorStore raise many types for a failed write.
      workdir_lib.check_identity(self.workdir, self.identity,
                                 f'writing the {kind} checkpoint of step {step}')
      self._remove_temporaries(kind)
      raise write_error(path, f'the {kind} checkpoint of step {step}', e) from None
    # orbax creates missing parent folders: a workdir deleted during the write is back,
    # holding only this checkpoint.
    workdir_lib.check_identity(self.workdir, self.identity,
                               f'after writing the {kind} checkpoint of step {step}')

  def last_good(self) -> str:
    if self._latest_step is None:
      return ('No checkpoint was saved before it; a rerun starts from step 0 (lower '
              'config.optim.learning_rate, or check the data).')
    return f'Last good checkpoint: step {self._latest_step} in {self._dir("latest")}'

  # -- restoring ---------------------------------------------------------------------------

  def recover(self, abstract_state, abstract_params) -> Resume | None:
    """Applies the restart rule of the module docstring; the resume point or None."""
    if jax.process_index() == 0:
      for kind in ('latest', 'best'):
        self._remove_temporaries(kind)
    _sync('affectjax_checkpoint_temporaries')
    found, blocked = None, []
    for step in reversed(self.steps('latest')):
      try:
        resume = self._restore_latest(step, abstract_state)
      except _Corrupt as e:
        self._move_aside('latest', step, str(e))
        continue
      best = resume.meta.get('best_step')
      if best is not None:
        try:
          self._restore_best(best, abstract_params)
        except _Corrupt as e:
          self._move_aside('best', best, str(e))
          blocked.append(step)
          continue
      found = resume
      break
    if found is None and blocked:
      raise CheckpointError(
          f'{self._dir("latest")}: steps {blocked} verify but the best checkpoint they '
          'refer to is corrupt, so the run cannot finish as it would have; start it again '
          'in a new --workdir (or delete this checkpoints folder)')
    keep_best = found.meta.get('best_step') if found else None
    if jax.process_index() == 0:
      for s in self.steps('latest'):
        if found is None or s > found.step:
          self._delete('latest', s)
      for s in self.steps('best'):
        if s != keep_best:
          self._delete('best', s)
    _sync('affectjax_checkpoint_recover')
    self._latest_step = found.step if found else None
    return found

  @staticmethod
  def _check_structure(path: str, abstract) -> None:
    """CheckpointError when the checkpoint's recorded structure is not `abstract`'s: it
    is another run's, and neither corrupt (to be moved aside) nor resumable. A meta that
    cannot be read is left to the restore's verification."""
    try:
      with open(os.path.join(path, 'meta', 'metadata')) as f:
        saved = json.load(f).get('structure')
    except (OSError, ValueError, AttributeError):
      return
    if saved is not None and saved != structure(abstract):
      raise CheckpointError(
          f'{path}: a checkpoint of another model (its arrays\' paths, shapes or dtypes are '
          "not this run's), so not this run's checkpoint; refused: move it out of the "
          'workdir or use a new --workdir')

  def _restore_latest(self, step: int, abstract_state) -> Resume:
    path = self._dir('latest', step)
    self._check_structure(path, abstract_state)
    out = self._restore(path, ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    meta = out['meta']
    self._verify(path, meta, {'state': lambda: digest(out['state']),
                              'data': lambda: json_digest(out['data'])})
    if int(np.asarray(out['state'].step)) != step:
      raise _Corrupt(f'holds the state of step {int(np.asarray(out["state"].step))}')
    return Resume(step, out['state'], out['data'], meta)

  def _restore_best(self, step: int, abstract_params):
    path = self._dir('best', step)
    self._check_structure(path, abstract_params)
    out = self._restore(path, ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params), meta=ocp.args.JsonRestore()))
    self._verify(path, out['meta'], {'params': lambda: digest(out['params'])})
    return out['params']

  def _restore(self, path: str, args):
    if not os.path.isdir(path):
      raise _Corrupt('is missing')
    try:
      return self._ckpt.restore(path, args=args)
    except Exception as e:  # A corrupt file surfaces as almost any exception type.
      raise _Corrupt(f'unreadable ({type(e).__name__}: {one_line(e)[:160]})') from None

  @staticmethod
  def _verify(path: str, meta, digests: dict) -> None:
    if not isinstance(meta, dict):
      raise _Corrupt('meta is not a JSON object')
    saved = meta.get('digest')
    if saved is None:
      log.warning('%s: written before checkpoints carried digests; restored unverified', path)
      return
    for item, compute in digests.items():
      if not isinstance(saved, dict) or saved.get(item) != compute():
        raise _Corrupt(f'{item} does not match the digest saved with it')

  def restore_best(self, abstract_params):
    """The best parameters, verified; a one-line CheckpointError if they are not there."""
    steps = self.steps('best')
    if not steps:
      raise CheckpointError(f'{self._dir("best")}: no best checkpoint')
    try:
      return self._restore_best(steps[-1], abstract_params)
    except _Corrupt as e:
      raise CheckpointError(f'{self._dir("best", steps[-1])}: {e}') from None

  def load_params(self, kind: str = 'best') -> tuple[int, dict]:
    """(step, parameters as numpy arrays) of the newest `kind` ('best' or 'latest')
    checkpoint, read from the checkpoint's own metadata, so without this run's config,
    and verified against its digest. Nothing is cleaned or moved: the run is another's."""
    if kind not in ('best', 'latest'):
      raise CheckpointError(f'config.init.checkpoint: {kind!r} (best | latest)')
    steps = self.steps(kind)
    if not steps:
      raise CheckpointError(f'{self._dir(kind)}: no {kind} checkpoint to load from')
    step = steps[-1]
    path = self._dir(kind, step)
    item = 'params' if kind == 'best' else 'state'
    try:
      meta_tree = self._ckpt.metadata(path).item_metadata[item]
      meta_tree = getattr(meta_tree, 'tree', meta_tree)
      target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), meta_tree)
    except Exception as e:  # A corrupt checkpoint surfaces as almost any exception type.
      raise CheckpointError(f'{path}: unreadable ({type(e).__name__}: '
                            f'{one_line(e)[:160]})') from None
    try:
      out = self._restore(path, ocp.args.Composite(
          **{item: ocp.args.StandardRestore(target)}, meta=ocp.args.JsonRestore()))
      params = out[item] if kind == 'best' else out[item]['params']
      saved = out['meta'].get('digest') if isinstance(out['meta'], dict) else None
      if not isinstance(saved, dict) or 'params' not in saved:
        raise _Corrupt('carries no parameter digest (written by an older affectjax; '
                       'use config.init.checkpoint=best)')
      if saved['params'] != digest(params):
        raise _Corrupt('params do not match the digest saved with them')
    except (_Corrupt, KeyError, TypeError) as e:
      raise CheckpointError(f'{path}: {one_line(e)}') from None
    return step, params

  # -- files -------------------------------------------------------------------------------

  def _remove_temporaries(self, kind: str, patience_s: float = 30.0) -> None:
    """Removes everything in latest/ or best/ that is not a finished step. After a failed
    write, orbax's other array writes may still be running (its gather does not cancel
    them) and recreate files in the temporary directory, so this retries until it is gone
    or `patience_s` has passed."""
    path = self._dir(kind)
    deadline = time.monotonic() + patience_s
    while os.path.isdir(path):
      left = [n for n in os.listdir(path) if not _is_step(n)]
      if not left or time.monotonic() > deadline:
        return
      for name in left:
        shutil.rmtree(os.path.join(path, name), ignore_errors=True)
        with contextlib.suppress(OSError):
          os.remove(os.path.join(path, name))
      time.sleep(0.25)  # A clean listing counts only after the writers had time to act.

  def _delete(self, kind: str, step: int) -> None:
    # Renamed first, so a kill half-way through leaves a temporary, not a broken step.
    path = self._dir(kind, step)
    doomed = os.path.join(self._dir(kind), f'.deleting-{step}')
    shutil.rmtree(doomed, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
      os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)

  def _move_aside(self, kind: str, step: int, reason: str) -> None:
    path = self._dir(kind, step)
    if not os.path.lexists(path):
      log.warning('%s: %s; falling back to an older checkpoint', path, reason)
      return
    dest = os.path.join(self.root, 'corrupt', f'{kind}-{step}')
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      n = 1
      while os.path.exists(dest):
        n += 1
        dest = os.path.join(self.root, 'corrupt', f'{kind}-{step}.{n}')
      os.rename(path, dest)
    log.warning('%s: %s; moved to %s, falling back to an older checkpoint', path, reason, dest)

  def close(self) -> None:
    self._ckpt.close()


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
