"""Querying a store with a model: sketch test data with the store's sketch and score it.

Before anything is scored, the sketcher is checked against the store: the same sketch (algorithm,
options, seed, N, D, layout, mode) and the same model (parameter names, shapes and value hash),
else ``sketchcore.StoreMismatchError`` says what differs.
"""

from __future__ import annotations

__all__ = ["sketch_data", "check_sketcher", "sketch_spec", "attribute", "attribute_checkpoints",
           "score_checkpoints"]


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
              test_ids=None, batch_size: int = 32, progress: bool = False,
              soft_threshold=None, relative_damping=None):
    """Top-k proponents/opponents of each test example from one store (one checkpoint).
    ``method="trak"`` needs a TRAK store and its ``TRAKSketcher`` (see ``trak.py``)."""
    return attribute_checkpoints([(store, gs)], test_data, k=k, method=method, damping=damping,
                                 test_ids=test_ids, batch_size=batch_size, progress=progress,
                                 soft_threshold=soft_threshold,
                                 relative_damping=relative_damping)


def _checkpoints(pairs, test_data, method, weights, batch_size, progress):
    """Checked ``Checkpoint`` records of ``(store, sketcher)`` pairs with the test sketches."""
    from .scores import Checkpoint, _check_method

    _check_method(method)
    weights = [1.0] * len(pairs) if weights is None else list(weights)
    if len(weights) != len(pairs):
        raise ValueError(f"got {len(weights)} weights for {len(pairs)} checkpoints.")
    cps = []
    for (store, gs), w in zip(pairs, weights):
        check_sketcher(store, gs)
        if method == "trak":
            _check_trak_pair(store, gs)
        t = sketch_data(gs, test_data, batch_size=batch_size, progress=progress)
        cps.append(Checkpoint(store, t, float(w)))
    return cps


def _check_trak_pair(store, gs) -> None:
    """TRAK scores test examples with the output function the store was built from."""
    record = store.train_weights_record
    output = getattr(getattr(gs, "output", None), "name", None)
    if record is None:
        raise ValueError(
            f"method='trak' needs a TRAK store, but the store at {str(store.path)!r} holds "
            "loss-gradient sketches; build one with sketchcore_tda.api.build_trak_store (CLI: "
            "sketchcore tda build --trak), or use method='gauss-newton' (the loss-gradient score "
            "formerly called 'trak').")
    if output is None:
        raise ValueError("method='trak' sketches the test examples' output-function gradients: "
                         f"pass the store's sketchcore_tda.api.TRAKSketcher, not a "
                         f"{type(gs).__name__}.")
    if output != record.get("output"):
        raise ValueError(f"the store at {str(store.path)!r} was built with the output function "
                         f"{record.get('output')!r}, the sketcher differentiates {output!r}; "
                         "use the same output function for train and test.")


def attribute_checkpoints(pairs, test_data, *, k: int = 10, method: str = "dot", damping=None,
                          weights=None, test_ids=None, batch_size: int = 32,
                          progress: bool = False, soft_threshold=None, relative_damping=None):
    """Several checkpoints or models: ``pairs`` is a list of ``(store, sketcher)`` (the sketcher
    holds that checkpoint's model). ``dot``/``cosine``/``gauss-newton`` sum the scores with
    ``weights`` (default 1, TracIn-CP); ``trak`` averages them as a TRAK ensemble."""
    from .scores import top_k

    cps = _checkpoints(pairs, test_data, method, weights, batch_size, progress)
    return top_k(cps, k=k, method=method, damping=damping, test_ids=test_ids,
                 soft_threshold=soft_threshold, relative_damping=relative_damping)


def score_checkpoints(pairs, test_data, *, method: str = "trak", damping=None, weights=None,
                      batch_size: int = 32, progress: bool = False, soft_threshold=None,
                      relative_damping=None):
    """The whole score matrix of ``test_data`` against the train set of ``(store, sketcher)``
    pairs (TRAKer's ``finalize_scores``): ``(train_ids (n,), scores (m, n))``."""
    from .scores import score_matrix

    cps = _checkpoints(pairs, test_data, method, weights, batch_size, progress)
    return score_matrix(cps, method=method, damping=damping, soft_threshold=soft_threshold,
                        relative_damping=relative_damping)
