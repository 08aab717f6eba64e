"""Discovery and registration (cold path, once) and plain-dict lookups (hot path).

Entry points of the groups ``sketchcore.backends`` and ``sketchcore.analyses`` are loaded one by
one; a plugin that fails to import, or whose hook raises, is recorded with its error and reported
by ``sketchcore.backends()`` / ``sketchcore.analyses()``, and everything else keeps working.
``SKETCHCORE_DISABLE_PLUGINS=a,b`` skips entry points by name.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from ._errors import BackendUnavailableError, unknown
from .backend import Backend, generic_for

__all__ = ["Registry", "registry", "refresh", "BackendInfo", "GROUPS"]

GROUPS = ("sketchcore.backends", "sketchcore.analyses")


@dataclass(frozen=True)
class BackendInfo:
    """One discovered backend: whether it can run here and, if not, why."""

    name: str
    usable: bool
    reason: str | None
    priority: int
    array_module: str | None
    description: str
    source: str


class Registry:
    """Backends, algorithms and analyses found through pluggy, loaded once."""

    def __init__(self, groups=GROUPS) -> None:
        self.groups = groups
        self.backends: dict[str, Backend] = {}
        self.algorithms: dict[str, type] = {}
        self.analyses: dict = {}
        self.errors: dict[str, str] = {}  # plugin name -> error
        self.error_group: dict[str, str] = {}  # plugin name -> entry-point group
        self.sources: dict[str, str] = {}  # registered name -> plugin name
        self._checks: dict[str, str | None] = {}
        self._by_type: dict[type, Backend] = {}
        self._loaded = False
        self._lock = threading.Lock()

    # ---- cold path --------------------------------------------------------------------------
    def load(self) -> Registry:
        if self._loaded:
            return self
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True
        return self

    def _load(self) -> None:
        from . import sketches

        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        pm.register(sketches, name="sketchcore.sketches")
        disabled = {s.strip() for s in os.environ.get("SKETCHCORE_DISABLE_PLUGINS", "").split(",")}
        for group in self.groups:
            for ep in entry_points(group=group):
                if ep.name in disabled or pm.has_plugin(ep.name) or ep.name in self.errors:
                    continue
                try:
                    pm.register(ep.load(), name=ep.name)
                except Exception as err:  # noqa: BLE001 - a broken plugin must not break others
                    self.errors[ep.name] = f"{type(err).__name__}: {err}"
                    self.error_group[ep.name] = group
        pm.check_pending()
        self._call(pm, "sketchcore_register_algorithms", self.algorithms, lambda c: c.name)
        self._call(pm, "sketchcore_register_backends", self.backends, lambda b: b.name)
        self._call(pm, "sketchcore_register_analyses", self.analyses, lambda a: a.name)

    def _call(self, pm, hook, table, name_of) -> None:
        for impl in getattr(pm.hook, hook).get_hookimpls():
            plugin = impl.plugin_name

            def register(obj, _plugin=plugin):
                name = name_of(obj)
                if name in table:
                    raise ValueError(
                        f"{hook}: name {name!r} from plugin {_plugin!r} is already registered by "
                        f"{self.sources.get(name)!r}; rename one of them."
                    )
                table[name] = obj
                self.sources[name] = _plugin

            try:
                impl.function(register=register)
            except Exception as err:  # noqa: BLE001
                self.errors[plugin] = f"{type(err).__name__}: {err}"

    # ---- hot path ---------------------------------------------------------------------------
    def check(self, name: str) -> str | None:
        """Why backend ``name`` cannot run here (None if it can); computed once."""
        if name not in self._checks:
            self._checks[name] = self.backends[name].check()
        return self._checks[name]

    def backend(self, name: str) -> Backend:
        """The registered backend ``name``, usable here, or a clear error."""
        be = self.backends.get(name)
        if be is None:
            hint = ""
            if name in self.errors:
                hint = f"Its plugin failed to load: {self.errors[name]}"
            raise unknown("backend", name, self.backends, hint or "See `sketchcore info`.")
        why = self.check(name)
        if why is not None:
            raise BackendUnavailableError(f"backend {name!r} cannot run here: {why}")
        return be

    def backend_for(self, x) -> Backend:
        """The backend for ``x`` when none is named: the usable registered backend of the
        highest priority that owns ``x``, else the reference kernels on ``x``'s namespace."""
        t = type(x)
        be = self._by_type.get(t)
        if be is None:
            owners = [b for b in self.backends.values() if b.owns(x)]
            owners.sort(key=lambda b: -b.priority)
            be = next((b for b in owners if self.check(b.name) is None), None) or generic_for(x)
            self._by_type[t] = be
        return be

    def info(self) -> list[BackendInfo]:
        out = []
        for name, be in sorted(self.backends.items()):
            why = self.check(name)
            out.append(
                BackendInfo(name, why is None, why, be.priority, be.array_module,
                            be.description, self.sources.get(name, "?"))
            )
        for name, err in sorted(self.errors.items()):
            if self.error_group.get(name) == "sketchcore.backends" and name not in self.backends:
                out.append(BackendInfo(name, False, f"plugin failed to load: {err}", 0, None, "", name))
        return out


_REGISTRY: Registry | None = None


def registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY.load()


def refresh() -> Registry:
    """Forget everything discovered and load again (after installing a plugin)."""
    global _REGISTRY
    _REGISTRY = None
    return registry()
