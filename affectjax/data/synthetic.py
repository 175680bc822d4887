"""A synthetic multimodal interaction benchmark, generated in-process.

Three modalities (named like the real ones: text, audio, vision) whose label
information is, by `config.data.variant`:

* `redundant`: every modality encodes the label;
* `unique`: only modality `config.data.unique_modality` encodes it, the others
  carry the same kind of structure but independent of the label;
* `synergy`: each modality encodes an independent latent, and the label is an
  interaction of all of them (classification: the sum of the per-modality classes
  modulo C, parity for C = 2; regression: the product of per-modality scalars).
  Each modality alone is independent of the label, and so is any additive
  combination f_1(x_1) + f_2(x_2) + f_3(x_3): for parity and for products of
  independent zero-mean latents the label has no first- or second-order term in
  its ANOVA expansion, only the three-way interaction.

A modality is `latent -> fixed random projection + Gaussian noise (config.data.noise)`.
Everything derives from `config.data.seed`, so the benchmark is identical across
training seeds, machines and processes.
"""

from __future__ import annotations

import numpy as np

from affectjax.data import base

VARIANTS = ('redundant', 'unique', 'synergy')
MODALITIES = ('text', 'audio', 'vision')


def _codes(seed: int, dims, rows: int) -> list[np.ndarray]:
  """Class prototypes (rows = C) or a direction (rows = 1) per modality, norm ~2."""
  prng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
  return [prng.normal(size=(rows, d)) * 2 / np.sqrt(d) for d in dims]


def bayes_accuracy(arrays: dict, variant: str, num_classes: int, dims, noise: float,
                   seed: int, unique_modality: int = 0) -> float:
  """Accuracy of the Bayes-optimal classifier, which knows the generator's prototypes
  and noise: the ceiling any model can reach on `arrays` (one classification split)."""
  codes = _codes(seed, dims, num_classes)
  posts = []
  for name, proto in zip(MODALITIES, codes):
    loglik = -((arrays[name][:, None, :] - proto[None]) ** 2).sum(-1) / (2 * noise ** 2)
    posts.append(loglik)
  if variant == 'redundant':
    score = sum(posts)
  elif variant == 'unique':
    score = posts[unique_modality]
  else:
    # p(y | x) = sum over (k_1, k_2, k_3) with sum = y mod C of prod_m p(k_m | x_m).
    probs = [np.exp(p - p.max(1, keepdims=True)) for p in posts]
    probs = [p / p.sum(1, keepdims=True) for p in probs]
    score = probs[0]
    for p in probs[1:]:
      score = sum(np.roll(p, shift, axis=1) * score[:, shift:shift + 1]
                  for shift in range(num_classes))
  return float((score.argmax(1) == arrays['label']).mean())


def generate(variant: str, regression: bool, num_classes: int, dims, sizes: dict,
             noise: float, seed: int, unique_modality: int = 0) -> dict:
  """Returns {split: {modality: (N, d) float32, 'label': (N,)}}."""
  if variant not in VARIANTS:
    raise ValueError(f'config.data.variant: unknown {variant!r}; choose one of {VARIANTS}')
  if len(dims) != len(MODALITIES):
    raise ValueError(f'config.data.dims: need {len(MODALITIES)} sizes, got {tuple(dims)}')
  if not 0 <= unique_modality < len(MODALITIES):
    raise ValueError(f'config.data.unique_modality: {unique_modality} is not in 0..2')
  if not regression and num_classes < 2:
    raise ValueError(f'config.task.num_classes: need >= 2, got {num_classes}')
  if not np.isfinite(noise) or noise < 0:
    raise ValueError(f'config.data.noise: must be a finite number >= 0, got {noise!r}')
  for d in dims:
    if not isinstance(d, int) or d <= 0:
      raise ValueError(f'config.data.dims: sizes must be positive integers, got {tuple(dims)}')
  for split, n in sizes.items():
    if not isinstance(n, int) or n <= 0:
      raise ValueError(f'config.data.num_{split}: must be a positive integer, got {n!r}')
  codes = _codes(seed, dims, 1 if regression else num_classes)
  split_seeds = np.random.SeedSequence(seed).spawn(1 + len(sizes))[1:]

  out = {}
  for (split, n), sseed in zip(sizes.items(), split_seeds):
    rng = np.random.default_rng(sseed)
    m = len(MODALITIES)
    latents = (rng.normal(size=(n, m)) if regression else
               rng.integers(0, num_classes, size=(n, m)))
    if variant == 'redundant':
      latents[:] = latents[:, :1]
      label = latents[:, 0]
    elif variant == 'unique':
      label = latents[:, unique_modality]
    else:
      label = latents.prod(axis=1) if regression else latents.sum(axis=1) % num_classes
    if regression:
      feats = [latents[:, i:i + 1] * codes[i] for i in range(m)]
    else:
      feats = [codes[i][latents[:, i]] for i in range(m)]
    arrays = {}
    for name, f, d in zip(MODALITIES, feats, dims):
      arrays[name] = (f + noise * rng.normal(size=(n, d))).astype(np.float32)
    arrays['label'] = label.astype(np.float32 if regression else np.int32)
    out[split] = arrays
  return out


def load(config) -> base.Dataset:
  c = config.data
  regression = config.task.name == 'regression'
  sizes = {'train': c.num_train, 'valid': c.num_valid, 'test': c.num_test}
  splits = generate(c.variant, regression, config.task.num_classes, tuple(c.dims), sizes,
                    c.noise, c.seed, c.unique_modality)
  return base.Dataset.from_arrays(
      splits, modalities=tuple(config.data.modalities),
      num_classes=None if regression else config.task.num_classes,
      where=f'synthetic[{c.variant}]')
