"""Querying a store with a model: sketch test data with the store's sketch and score it.

Before anything is scored, the sketcher is checked against the store: the same sketch (algorithm,
options, seed, N, D, layout, mode) and the same model (parameter names, shapes and value hash),
else ``sketchcore.StoreMismatchError`` says what differs.
"""

from __future__ import annotations

__all__ = ["sketch_data", "check_sketcher", "sketch_spec", "attribute", "attribute_checkpoints"]


def sketch_spec(store) -> dict:
    """The ``sketch=`` argument that rebuilds a store's sketch in a ``GradientSketcher``
    (None for a store built without a sketch)."""
    desc = store.metadata["sketch"]
    if desc.get("algo") in (None, "none"):
        return None
    return {"algo": desc["algo"], "out_dim": int(desc["out_dim"]), "seed": int(desc["seed"]),
            **(desc.get("options") or {})}


def check_sketcher(store, gs) -> None:
    """Refuse a sketcher whose sketch or model differs from the store's."""
    from .build import sketcher_identity

    store.check_model(gs.fingerprint())  # first: names/shapes say more than a digest
    store.check_sketch(sketcher_identity(gs))


def sketch_data(gs, data, *, batch_size: int = 32, num_examples: int | None = None,
                progress: bool = False):
    """Per-example sketches of all examples of ``data`` (arrays or an iterable of batches):
    numpy float32 (n, D), in order."""
    import numpy as np

    from .sources import as_source

    source = as_source(data, num_examples)
    out = []
    if source.sliceable:
        it = (b for _r, b in source.batches(0, source.num_examples, batch_size))
    else:
        it = (b for _r, b in source.pieces(lambda a, b: [(a, b)]))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=source.num_examples, unit="ex", desc="sketching test examples")
    for batch in it:
        s = np.asarray(gs.sketch_batch(batch), dtype=np.float32)
        out.append(s)
        if bar is not None:
            bar.update(len(s))
    if bar is not None:
        bar.close()
    return np.concatenate(out, axis=0)


def attribute(store, gs, test_data, *, k: int = 10, method: str = "dot", damping=None,
              test_ids=None, batch_size: int = 32, progress: bool = False):
    """Top-k proponents/opponents of each test example from one store (one checkpoint)."""
    return attribute_checkpoints([(store, gs)], test_data, k=k, method=method, damping=damping,
                                 test_ids=test_ids, batch_size=batch_size, progress=progress)


def attribute_checkpoints(pairs, test_data, *, k: int = 10, method: str = "dot", damping=None,
                          weights=None, test_ids=None, batch_size: int = 32,
                          progress: bool = False):
    """TracIn-CP: ``pairs`` is a list of ``(store, sketcher)`` per checkpoint (the sketcher holds
    that checkpoint's model); scores are summed with ``weights`` (default 1)."""
    from .scores import Checkpoint, top_k

    weights = [1.0] * len(pairs) if weights is None else list(weights)
    if len(weights) != len(pairs):
        raise ValueError(f"got {len(weights)} weights for {len(pairs)} checkpoints.")
    cps = []
    for (store, gs), w in zip(pairs, weights):
        check_sketcher(store, gs)
        t = sketch_data(gs, test_data, batch_size=batch_size, progress=progress)
        cps.append(Checkpoint(store, t, float(w)))
    return top_k(cps, k=k, method=method, damping=damping, test_ids=test_ids)
