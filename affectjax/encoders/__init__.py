"""Pretrained encoders loaded from local weights (e.g. Flax BERT); see the ERC issue."""
