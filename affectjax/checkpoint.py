"""Checkpoints with orbax: the latest training state for resumption, and the best
parameters on validation for the final test evaluation.

Layout under `WORKDIR/checkpoints/`:
  latest/<step>/{state, data, meta}  train state (params, optimizer state, step,
                                     RNG), the data iterator state, best-so-far
  best/<step>/{params, meta}         parameters of the best validation evaluation

Saves are synchronous and orbax finalises each step directory atomically (a
temporary directory renamed on completion), so a process killed at any moment
leaves every earlier checkpoint readable.
"""

from __future__ import annotations

import os

import orbax.checkpoint as ocp


class Checkpoints:
  """The two orbax CheckpointManagers of one run."""

  def __init__(self, workdir: str, keep: int = 2):
    root = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.root = root

    def manager(name, max_to_keep):
      return ocp.CheckpointManager(
          os.path.join(root, name),
          options=ocp.CheckpointManagerOptions(
              max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False))

    self.latest = manager('latest', max(1, keep))
    self.best = manager('best', 1)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state, data_state: dict, meta: dict) -> None:
    self.latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(meta)))
    self.latest.wait_until_finished()

  def restore(self, abstract_state, step: int | None = None):
    """Returns (state, data_state, meta) of `step` (default: the latest)."""
    step = self.latest.latest_step() if step is None else step
    restored = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    return restored['state'], restored['data'], restored['meta']

  def save_best(self, step: int, params, meta: dict) -> None:
    self.best.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)), force=True)
    self.best.wait_until_finished()

  def restore_best(self, abstract_params):
    step = self.best.latest_step()
    if step is None:
      raise FileNotFoundError(f'{self.root}/best: no best checkpoint')
    return self.best.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))['params']

  def forget_best_after(self, step: int) -> None:
    """Drops best checkpoints newer than `step` (written after the checkpoint we
    resume from, by a run that was killed before its next latest save)."""
    for s in self.best.all_steps():
      if s > step:
        self.best.delete(s)
    self.best.reload()

  def close(self) -> None:
    self.latest.close()
    self.best.close()
