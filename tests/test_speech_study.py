"""The speech-encoder study's tables, from made-up fold summaries: every row and column
is filled from the summaries (none typed), paired comparisons against the column's
baseline, per-speaker rows apart, targets judged on the validation-selected rows."""

import argparse

from conftest import load_script


def _row(uar, valid, emodb=None, **extra):
  out = {'uar': uar, 'accuracy': uar + 0.01, 'valid_uar': valid, **extra}
  if emodb is not None:
    out['emodb'] = emodb
  return out


def _run(uar, valid, emodb=None):
  return _row(uar, valid, emodb, train_s=60.0, commit='abc1234567', host='CPU X',
              devices='1 x cpu', finished='2026-12-07', best_step=100, timed_steps=800,
              steps=800)


def test_tables_from_summaries():
  study = load_script('speech_encoders', 'run.py')
  rav, emo = [], []
  for k in range(6):
    fold = {'lr_logmel': _row(0.40 + 0.01 * k, 0.41, 0.20), 'lr_au': _row(0.50, 0.5),
            'lr_logmel_au': _row(0.60 + 0.01 * k, 0.6), 'ssm': _run(0.45, 0.46, 0.25),
            'lr_last': _row(0.66, 0.65, 0.3), 'lr_layer': _row(0.70, 0.69, 0.31, layer='meanstd_3'),
            'lr_layer_av': _row(0.80, 0.81, layer='av_2'), 'head': _run(0.72 + 0.01 * k, 0.73, 0.33),
            'head_av': _run(0.85, 0.86), 'spk_lr_layer': _row(0.77, 0.76, layer='meanstd_3'),
            'spk_lr_layer_av': _row(0.88, 0.87, layer='av_3'), 'spk_lr_logmel': _row(0.5, 0.5),
            'spk_lr_logmel_au': _row(0.7, 0.7), 'spk_head': _run(0.79, 0.78),
            'spk_head_av': _run(0.9, 0.9)}
    if k == 0:
      fold['finetune'] = _run(0.9, 0.95, 0.5)
    fold['selected'] = study._select(fold, ('lr_last', 'lr_layer', 'head', 'finetune'))
    fold['selected_av'] = study._select(fold, ('lr_layer_av', 'head_av'))
    rav.append(fold)
  for k in range(10):
    fold = {'lr_logmel': _row(0.5, 0.5), 'lr_last': _row(0.7, 0.7),
            'lr_layer': _row(0.75, 0.74, layer='meanstd_4'), 'head': _run(0.8, 0.8),
            'spk_lr_layer': _row(0.8, 0.8, layer='meanstd_4'), 'spk_lr_logmel': _row(0.6, 0.6),
            'spk_head': _run(0.85, 0.85)}
    fold['selected'] = study._select(fold, ('lr_last', 'lr_layer', 'head'))
    emo.append(fold)
  assert rav[0]['selected']['chosen'] == 'finetune' and rav[1]['selected']['chosen'] == 'head'
  args = argparse.Namespace(workdir='/tmp/w', finetune_folds=[1], head_steps=800,
                            emodb_steps=800, folds=[1, 2, 3, 4, 5, 6],
                            emodb_folds=list(range(1, 11)), command='--workdir /tmp/w')
  text = study.results_md(rav, emo, args, 60.0)
  assert 'run.py --workdir /tmp/w` (commit' in text
  assert 'leave one speaker out (10 of 10 folds: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)' in text
  assert '6 of 6 speaker-independent folds (1, 2, 3, 4, 5, 6)' in text
  assert '| whisper-base fine-tuned (loop) | 90.0 (n=1) |' in text
  # Head 72..77 against LR log-mel 40..45: +32 on every fold, all 6 wins.
  assert '| whisper-base frozen, layer mix + mean/std pooling, linear head (loop) | 74.5 +- 1.9 |' in text
  assert '+32.0 [+32.0, +32.0], 6/0, p=0.031' in text
  assert 'RAVDESS speech: ' in text and 'not met' in text and '(chosen rows per fold: finetune, head' in text
  assert 'Per-speaker normalisation' in text and '| LR, whisper-base layer chosen on validation, mean+std | 77.0 +- 0.0 |' in text
  assert 'Layers chosen on validation by the LR (speech): 3, 3, 3, 3, 3, 3' in text
  assert '| RAVDESS | head | 6 | abc1234567 | 1 x cpu (CPU X) | 2026-12-07 .. 2026-12-07 | 6.0 | 4800 / 4800 |' in text
  summary = study.summary_md(rav, emo)
  assert summary.startswith(study.START) and summary.endswith(study.END)
  assert '| whisper-base frozen + head | 74.5 +- 1.9 | 85.0 +- 0.0 | 80.0 +- 0.0 |' in summary
