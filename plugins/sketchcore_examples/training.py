"""The seeded Adam loop the example tasks train with, and the classification loss they share."""

from __future__ import annotations

__all__ = ["train_adam", "cross_entropy"]


def cross_entropy(output, batch):
    """Mean cross-entropy of logits ``output`` against the labels ``batch[1]`` of an ``(inputs,
    labels)`` batch (computed in float32 at least)."""
    import torch.nn.functional as F

    return F.cross_entropy(output.float(), batch[1])


def train_adam(model, loss_of_batch, batches, *, lr: float, epochs: int = 1,
               progress: bool = False, desc: str = "train") -> list[list[float]]:
    """Adam (torch's defaults but ``lr``) on the parameters of ``model`` that require gradients:
    ``epochs`` passes over ``batches()`` (a fresh iterable of batches per pass), one step on
    ``loss_of_batch(batch)`` each. The model is in train mode while it trains and in eval mode
    after. Returns each epoch's step losses.

    Seeding is the caller's: the model's initialization and whatever ``batches`` draws from."""
    import torch
    from tqdm.auto import tqdm

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress):
        losses.append([])
        for batch in batches():
            opt.zero_grad()
            loss = loss_of_batch(batch)
            loss.backward()
            opt.step()
            losses[-1].append(float(loss.detach()))
    model.eval()
    return losses
