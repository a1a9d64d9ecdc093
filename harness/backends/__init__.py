"""lm-eval model backends of our own, one module each.

- ``selfalign_hf``: ``--model selfalign-hf``, a drop-in for ``hf`` that shares prefixes and
  computes the LM head only where log-probs are read. Importing the module registers it with
  lm-eval (import ``lm_eval.models`` first so lm-eval's registry is complete).
- ``kv_prefix`` / ``prefix_tree``: the exact KV-reuse machinery it shares with the pipeline's
  transformers generation engine; ``slot_cache``: the engine's in-place decoding cache.
"""
