"""Discovery and registration (cold path, once) and plain-dict lookups (hot path).

Entry points of the groups ``sketchcore.backends``, ``sketchcore.algorithms``,
``sketchcore.analyses`` and ``sketchcore.commands`` are loaded one by one. A third-party plugin that is broken must never take
the library down: whatever it does wrong is recorded with the plugin's name and the reason,
reported by ``sketchcore.backends()``, ``sketchcore.analyses()`` and ``sketchcore info``, and
everything else keeps working. That covers

* a module that raises at import, ``sys.exit()`` included (only ``KeyboardInterrupt`` passes);
* a hook implementation with a misspelled hook name, or one (or a hook wrapper) that raises
  when called;
* a backend whose ``owns()`` raises (it is then skipped and reported as faulty) or whose
  ``check()`` raises (reported as not usable);
* an analysis or command whose ``add_cli`` raises (``sketchcore.cli`` drops its subcommand and
  reports it).

Hooks run through pluggy, one plain implementation per call (``Registry._call``): for each, in
the order pluggy would call them (``tryfirst``/``trylast`` honored), a ``pm.subset_hook_caller``
that leaves the other plain implementations out. One ``pm.hook.<name>(register=...)`` call would
stop at the first implementation that raises, so one broken plugin would keep every plugin after
it from registering; calling through pluggy (rather than ``impl.function`` directly) keeps what
pluggy does around a call: ``pm.add_hookcall_monitoring`` and ``pm.trace`` see each one, and hook
wrappers wrap each one. An exception is the fault of the implementation whose code raised it: a
plain one is reported and skipped; a wrapper is reported and left out of the calls that follow
(the call it broke is retried without it when nothing was registered yet).

``SKETCHCORE_DISABLE_PLUGINS=a,b`` skips entry points by name.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from ._errors import BackendUnavailableError, unknown
from .backend import Backend, generic_for

__all__ = ["Registry", "registry", "refresh", "BackendInfo", "GROUPS"]

#: entry-point groups searched for plugins (any plugin may implement any hook; the group says
#: what it is for: a backend, a sketch algorithm, an analysis, a command)
GROUPS = ("sketchcore.backends", "sketchcore.algorithms", "sketchcore.analyses",
          "sketchcore.commands")

#: the core's own plugins: plugin name -> module. Loaded by import path, as an entry point is, so
#: the registry imports no algorithm and the modules the algorithms use (``param_cache``) may use
#: the registry without an import cycle; unlike an entry point, one that fails raises.
BUILTIN_PLUGINS = {"sketchcore.sketches": "sketchcore.sketches"}

#: longest reason kept for a faulty plugin (an exception's text can be arbitrarily long)
MAX_REASON = 1000


def capped(text: str, limit: int = MAX_REASON) -> str:
    """``text``, cut to ``limit`` characters with a note of how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def describe(err: BaseException, what: str = "") -> str:
    """One reason for a failure: ``"<what> raised ValueError: msg"`` or, for ``SystemExit``,
    ``"<what> called sys.exit(...)"`` (``what`` names the culprit, e.g. ``"owns()"``)."""
    if isinstance(err, SystemExit):
        text = f"called sys.exit({err.code!r})" if err.code is not None else "called sys.exit()"
    else:
        msg = str(err)
        text = f"raised {type(err).__name__}: {msg}" if msg else f"raised {type(err).__name__}"
    return capped(f"{what} {text}" if what else text)


@dataclass(frozen=True)
class BackendInfo:
    """One discovered backend: whether it can run here and, if not, why. ``usable`` is None
    only in ``Registry.info(check=False)``, for a backend whose ``check()`` was not run."""

    name: str
    usable: bool | None
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
        self.commands: dict = {}  # CLI subcommands that are not analyses (sketchcore demo)
        self.errors: dict[str, str] = {}  # plugin name -> error
        self.error_group: dict[str, str] = {}  # plugin name -> entry-point group
        self.sources: dict[str, str] = {}  # registered name -> plugin name
        self.cli_errors: dict[str, str] = {}  # analysis or command -> why its add_cli failed
        self._group_of: dict[str, str] = {}  # plugin name -> entry-point group it came from
        self._checks: dict[str, str | None] = {}
        self._by_type: dict[type, Backend] = {}
        self._faulty: set[str] = set()  # backends whose owns() raised
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
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        for name, module in BUILTIN_PLUGINS.items():
            pm.register(importlib.import_module(module), name=name)
        disabled = {s.strip() for s in os.environ.get("SKETCHCORE_DISABLE_PLUGINS", "").split(",")}
        for group in self.groups:
            for ep in entry_points(group=group):
                if ep.name in disabled or pm.has_plugin(ep.name) or ep.name in self.errors:
                    continue
                try:
                    plugin = ep.load()
                except KeyboardInterrupt:
                    raise
                except SystemExit as err:  # a plugin must not end the process
                    self._fail(ep.name, group, f"plugin {describe(err)} at import")
                    continue
                except BaseException as err:  # noqa: BLE001 - a broken plugin must not break others
                    self._fail(ep.name, group, capped(f"{type(err).__name__}: {err}"))
                    continue
                try:
                    pm.register(plugin, name=ep.name)
                except Exception as err:  # noqa: BLE001 - e.g. pluggy's PluginValidationError
                    self._fail(ep.name, group, capped(f"{type(err).__name__}: {err}"))
                    continue
                unknown_hooks = self._unknown_hooks(pm, ep.name)
                if unknown_hooks:
                    pm.unregister(name=ep.name)
                    self._fail(ep.name, group, f"unknown hook {unknown_hooks[0]!r}; sketchcore's "
                               f"hooks are {', '.join(sorted(self._hook_names()))}")
                    continue
                self._group_of[ep.name] = group
        pm.check_pending()
        self._call(pm, "sketchcore_register_algorithms", self.algorithms, lambda c: c.name)
        self._call(pm, "sketchcore_register_backends", self.backends, lambda b: b.name)
        self._call(pm, "sketchcore_register_analyses", self.analyses, lambda a: a.name)
        self._call(pm, "sketchcore_register_commands", self.commands, lambda c: c.name)

    def _fail(self, plugin: str, group: str, reason: str) -> None:
        self.errors[plugin] = reason
        self.error_group[plugin] = group

    @staticmethod
    def _hook_names() -> list[str]:
        return [n for n in dir(hookspecs) if n.startswith(hookspecs.PROJECT + "_")]

    @staticmethod
    def _unknown_hooks(pm, plugin_name: str) -> list[str]:
        """Hooks that ``plugin_name`` implements but sketchcore does not specify (typos):
        ``pm.check_pending()`` would raise for them and stop every other plugin from loading."""
        plugin = pm.get_plugin(plugin_name)
        return [hc.name for hc in pm.get_hookcallers(plugin) or []
                if not hc.has_spec()
                and any(i.plugin is plugin and not i.optionalhook for i in hc.get_hookimpls())]

    def _call(self, pm, hook, table, name_of) -> None:
        """Run ``hook`` once per plain implementation, in pluggy's order, each through a
        ``pm.subset_hook_caller`` that leaves out the other plain implementations: hook call
        monitoring and tracing see every call, wrappers wrap each one, and an exception stops
        only the plugin it came from (see the module docstring)."""
        impls = getattr(pm.hook, hook).get_hookimpls()
        plain = [i for i in impls if not _is_wrapper(i)]
        wrappers = [i for i in impls if _is_wrapper(i)]
        faulty: list = []  # wrappers that raised: left out of the calls that follow
        # pluggy calls the end of get_hookimpls() first (tryfirst sorts last, trylast first)
        for impl in reversed(plain):
            plugin = impl.plugin_name
            count = [0]

            def register(obj, _plugin=plugin, _count=count):
                name = name_of(obj)
                if name in table:
                    raise ValueError(
                        f"{hook}: name {name!r} from plugin {_plugin!r} is already registered by "
                        f"{self.sources.get(name)!r}; rename one of them."
                    )
                table[name] = obj
                self.sources[name] = _plugin
                _count[0] += 1

            while True:
                others = [i.plugin for i in plain if i is not impl] + [i.plugin for i in faulty]
                try:
                    pm.subset_hook_caller(hook, remove_plugins=others)(register=register)
                except KeyboardInterrupt:
                    raise
                except BaseException as err:  # noqa: BLE001 - a broken plugin must not break others
                    culprit = _culprit(err, impl, [w for w in wrappers if w not in faulty])
                    self._fail(culprit.plugin_name, self._group_of.get(culprit.plugin_name, ""),
                               f"plugin {describe(err)} in {hook}"
                               if isinstance(err, SystemExit) else
                               capped(f"{type(err).__name__}: {err}"))
                    if culprit is not impl:
                        faulty.append(culprit)
                        if count[0] == 0:
                            continue  # the wrapper stopped the call before it registered
                break

    # ---- hot path ---------------------------------------------------------------------------
    def check(self, name: str) -> str | None:
        """Why backend ``name`` cannot run here (None if it can); computed once. A ``check()``
        that raises, or an ``owns()`` that raised, makes the backend not usable, with the reason."""
        why = self._checks.get(name, False)
        if why is False:
            try:
                why = self.backends[name].check()
            except KeyboardInterrupt:
                raise
            except BaseException as err:  # noqa: BLE001 - a faulty check means "not usable"
                why = describe(err, "check()")
            else:
                if why is not None and not isinstance(why, str):
                    why = capped(f"check() returned {why!r} instead of None or a reason")
            self._checks[name] = why
        return why

    def _owns(self, be: Backend, x) -> bool:
        """``be.owns(x)``; one that raises marks ``be`` faulty (reported, skipped from then on)."""
        if be.name in self._faulty:
            return False
        try:
            return bool(be.owns(x))
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: BLE001 - a faulty owns() must not break sketch()
            self._faulty.add(be.name)
            self._checks[be.name] = describe(err, "owns()")
            # arrays of other types may have been routed to it before it raised: ask again
            for t in [t for t, chosen in self._by_type.items() if chosen is be]:
                del self._by_type[t]
            return False

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
            owners = [b for b in list(self.backends.values()) if self._owns(b, x)]
            owners.sort(key=lambda b: -b.priority)
            be = next((b for b in owners if self.check(b.name) is None), None) or generic_for(x)
            self._by_type[t] = be
        return be

    def info(self, *, check: bool = True) -> list[BackendInfo]:
        """Every backend with whether it can run here. ``check=False`` (``sketchcore info``)
        runs no ``check()``, so no array library is imported: a backend whose array library
        cannot be found (``importlib.util.find_spec``) is reported not usable, one already
        checked in this process keeps its result, and the others get ``usable=None``."""
        self._probe_owns()
        out = []
        for name, be in sorted(self.backends.items()):
            if check or name in self._checks:
                why = self.check(name)
                usable = why is None
            else:
                why = _missing_library(be)
                usable = False if why else None
            out.append(
                BackendInfo(name, usable, why, be.priority, be.array_module,
                            be.description, self.sources.get(name, "?"))
            )
        for name, err in sorted(self.errors.items()):
            if self.error_group.get(name) == "sketchcore.backends" and name not in self.backends:
                out.append(BackendInfo(name, False, f"plugin failed to load: {err}", 0, None, "", name))
        return out

    def _probe_owns(self) -> None:
        """Ask every backend whether it owns a numpy array, as ``backend_for`` would, so that an
        ``owns()`` that raises is reported before the first sketch runs into it."""
        import numpy as np

        probe = np.empty(0)
        for be in list(self.backends.values()):
            self._owns(be, probe)


def _is_wrapper(impl) -> bool:
    return bool(impl.hookwrapper or getattr(impl, "wrapper", False))


def _culprit(err: BaseException, impl, wrappers):
    """The hook implementation ``err`` came from: ``impl`` when its code is in the traceback,
    else a wrapper whose code is, else ``impl`` (e.g. a call that did not match its signature)."""
    codes = set()
    tb = err.__traceback__
    while tb is not None:
        codes.add(tb.tb_frame.f_code)
        tb = tb.tb_next
    if getattr(impl.function, "__code__", None) in codes:
        return impl
    return next((w for w in wrappers if getattr(w.function, "__code__", None) in codes), impl)


def _missing_library(be: Backend) -> str | None:
    """Why ``be`` cannot run, found without importing anything: its ``array_module`` is not
    installed (None when it is, or when the backend names none)."""
    from importlib.util import find_spec

    module = getattr(be, "array_module", None)
    if not isinstance(module, str) or not module:
        return None
    try:
        found = find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"its array library {module!r} is not installed"


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
