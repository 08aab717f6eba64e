"""Scale-out: the missing row chunks of a store, split into shards that run as Ray tasks.

``num_workers`` Ray actors each build the sketcher once (from a picklable recipe: model, loss and
sketch settings, see ``SketcherRecipe``) and then run shard tasks: a shard is a run of row chunks
with its rows of the data; the task writes those chunks of the same store, each marked complete
after its data (store.py). The driver shows progress from the completion markers. If Ray is not
initialized yet, a local cluster of ``num_workers`` CPUs is started and shut down afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["build_with_ray", "split_shards", "SketcherRecipe", "recipe_of"]

SHARDS_PER_WORKER = 4  # more shards than workers: finer progress, less left for the last one


@dataclass
class SketcherRecipe:
    """What a worker needs to build its own ``GradientSketcher`` (picklable with the model)."""

    model: object
    loss_fn: object
    sketch: object = None
    params: list | None = None
    layout: str = "flat"
    mode: str = "explicit"
    forward: object = None

    def __call__(self):
        from sketchcore.gradients import GradientSketcher

        return GradientSketcher(self.model, self.loss_fn, sketch=self.sketch, params=self.params,
                                layout=self.layout, mode=self.mode, forward=self.forward)


def recipe_of(sketcher):
    """A picklable recipe for ``sketcher``: factories are used as they are; a
    ``GradientSketcher`` is described by its model, loss, forward, sketch spec, selected
    parameter names, layout and mode."""
    if not hasattr(sketcher, "sketch_batch"):
        return sketcher  # already a factory
    adapter = getattr(sketcher, "adapter", None)
    plan = getattr(sketcher, "plan", None)
    model = getattr(adapter, "model", None)
    if model is None or plan is None:
        raise TypeError(
            f"engine='ray' cannot ship {type(sketcher).__name__} to workers; pass a zero-argument "
            "factory that builds it instead, e.g. sketchcore_tda.ray_engine.SketcherRecipe(model, "
            "loss_fn, sketch=..., layout=..., mode=...)."
        )
    return SketcherRecipe(
        model=model, loss_fn=adapter.loss_fn, sketch=plan.spec,
        params=list(sketcher.param_names), layout=sketcher.layout, mode=sketcher.mode,
        forward=getattr(adapter, "forward", None),
    )


def split_shards(chunks: list[int], num_shards: int) -> list[list[int]]:
    """Split chunk indices into at most ``num_shards`` runs of consecutive list entries."""
    num_shards = max(1, min(num_shards, len(chunks)))
    base, extra = divmod(len(chunks), num_shards)
    out, i = [], 0
    for s in range(num_shards):
        n = base + (s < extra)
        out.append(chunks[i:i + n])
        i += n
    return out


class ShardWriter:
    """A Ray actor: builds the sketcher once, then writes shards of one store."""

    def __init__(self, store_path: str, recipe, ids, batch_size: int) -> None:
        from .build import resolve_sketcher
        from .store import SketchStore

        self.store = SketchStore.open(store_path)
        self.gs = resolve_sketcher(recipe)
        self.ids = ids
        self.batch_size = batch_size

    def write(self, chunks: list[int], source, offset: int) -> int:
        """Sketch and write ``chunks``; rows of ``source`` start at store row ``offset``."""
        from .build import write_chunks

        return write_chunks(self.store, self.gs, source, chunks, self.ids, self.batch_size,
                            offset=offset)


def build_with_ray(store, sketcher, source, missing, ids, batch_size: int, num_workers: int,
                   bar=None) -> int:
    """Write the ``missing`` chunks of ``store`` with Ray tasks; returns the rows written."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("engine='ray' needs ray: pip install 'sketchcore[ray]' "
                          "(or use engine='local').") from err
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
    recipe = recipe_of(sketcher)
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=num_workers, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        writer = ray.remote(num_cpus=1, max_restarts=0)(ShardWriter)
        recipe_ref, ids_ref = ray.put(recipe), ray.put(ids)
        shards = split_shards(list(missing), num_workers * SHARDS_PER_WORKER)
        actors = [writer.remote(str(store.path), recipe_ref, ids_ref, batch_size)
                  for _ in range(min(num_workers, len(shards)))]
        pending = []
        for k, shard in enumerate(shards):
            start = store.chunk_range(shard[0])[0]
            stop = store.chunk_range(shard[-1])[1]
            actor = actors[k % len(actors)]
            pending.append(actor.write.remote(shard, source.subset(start, stop), start))
        refs = list(pending)
        while pending:
            _ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            if bar is not None:
                missing_rows = sum(b - a for a, b in map(store.chunk_range, store.missing_chunks()))
                bar.update(max(0, store.num_examples - missing_rows - bar.n))
        written = int(sum(ray.get(refs)))
        for actor in actors:
            ray.kill(actor)
        return written
    finally:
        if started:
            ray.shutdown()
