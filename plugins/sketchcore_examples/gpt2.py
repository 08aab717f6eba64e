"""A small GPT-2 built from a config (transformers, random initialization, no dropout) and its
next-token loss."""

from __future__ import annotations

__all__ = ["gpt2_lm", "causal_lm_loss"]


def gpt2_lm(*, vocab_size: int, seq_len: int, n_layer: int, n_embd: int, n_head: int = 4,
            special_token: int = 0, attn_implementation: str | None = None):
    """A ``GPT2LMHeadModel`` of ``n_layer`` layers of width ``n_embd`` for sequences of up to
    ``seq_len`` tokens, every dropout 0, ``special_token`` as both BOS and EOS; initialized from
    torch's global generator (seed it first). ``attn_implementation`` (e.g. ``"eager"``):
    transformers' default when None."""
    from transformers import GPT2Config, GPT2LMHeadModel

    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    config = GPT2Config(vocab_size=vocab_size, n_positions=seq_len, n_embd=n_embd,
                        n_layer=n_layer, n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, bos_token_id=special_token, eos_token_id=special_token,
                        **extra)
    return GPT2LMHeadModel(config)


def causal_lm_loss(output, batch):
    """Mean next-token cross-entropy of a causal LM output (``.logits``) on ``batch["labels"]``
    (computed in float32 at least)."""
    import torch.nn.functional as F

    logits = output.logits[:, :-1]
    labels = batch["labels"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
