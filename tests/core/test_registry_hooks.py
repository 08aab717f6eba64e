"""Registration runs through pluggy's hook callers: call monitoring sees each call, tryfirst and
trylast order it, wrappers wrap it, and a plugin (or wrapper) that raises stops only itself."""

from __future__ import annotations

import pluggy

import sketchcore as sk
from sketchcore import hookspecs
from sketchcore.hookspecs import hookimpl
from sketchcore.registry import Registry

HOOK = "sketchcore_register_backends"


def _backend(name):
    return type(f"B_{name}", (sk.Backend,), {"name": name})()


def _plugin(name, *, raises=False, shared=True, **marks):
    """A plugin registering the backend ``name`` and, with ``shared``, one named ``"shared"``
    (the first caller keeps it; the others fail on it)."""

    class Plugin:
        @hookimpl(**marks)
        def sketchcore_register_backends(self, register):
            register(_backend(name))
            if raises:
                raise RuntimeError(f"{name} is broken")
            if not shared:
                return
            be = _backend("shared")
            be.owner = name
            register(be)

    return Plugin()


def _run(plugins, *, wrappers=()):
    """Register ``plugins`` (name -> object) in that order, run the hook, return the registry and
    what call monitoring saw: one (plugin names of the call's implementations) per call."""
    reg = Registry(groups=())
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, plugin in [*plugins.items(), *wrappers]:
        pm.register(plugin, name=name)
    seen = []

    def before(hook_name, impls, kwargs):
        if hook_name == HOOK:
            seen.append([i.plugin_name for i in impls if not (i.wrapper or i.hookwrapper)])

    pm.add_hookcall_monitoring(before, lambda outcome, hook_name, impls, kwargs: None)
    reg._call(pm, HOOK, reg.backends, lambda b: b.name)
    return reg, seen


def test_monitoring_sees_one_call_per_plugin_in_tryfirst_trylast_order():
    reg, seen = _run({"late": _plugin("late", trylast=True), "plain": _plugin("plain"),
                      "early": _plugin("early", tryfirst=True)})
    assert seen == [["early"], ["plain"], ["late"]]
    assert reg.backends["shared"].owner == "early"  # the first call keeps a contested name
    assert {"early", "plain", "late"} <= set(reg.backends)
    assert set(reg.errors) == {"plain", "late"}  # both tried to take "shared"
    assert "already registered by 'early'" in reg.errors["plain"]


def test_a_plugin_that_raises_is_reported_and_the_others_still_register():
    reg, seen = _run({"ok1": _plugin("ok1"), "bad": _plugin("bad", raises=True),
                      "ok2": _plugin("ok2", trylast=True)})
    assert seen == [["bad"], ["ok1"], ["ok2"]]
    assert reg.errors == {"bad": "RuntimeError: bad is broken",
                          "ok2": reg.errors["ok2"]}  # ok2 lost "shared" to ok1
    assert {"ok1", "ok2", "bad"} <= set(reg.backends)  # what bad registered before raising stays
    assert reg.sources["ok1"] == "ok1" and reg.sources["shared"] == "ok1"


def test_wrappers_wrap_each_call_and_a_raising_wrapper_is_left_out():
    calls = []

    class Counting:
        @hookimpl(wrapper=True)
        def sketchcore_register_backends(self, register):
            calls.append("before")
            result = yield
            calls.append("after")
            return result

    class Raising:
        @hookimpl(wrapper=True, tryfirst=True)
        def sketchcore_register_backends(self, register):
            raise RuntimeError("the wrapper is broken")
            yield  # pragma: no cover - a generator that raises before it yields

    reg, seen = _run({"a": _plugin("a", tryfirst=True, shared=False),
                      "b": _plugin("b", shared=False)},
                     wrappers=[("counting", Counting()), ("raising", Raising())])
    # the raising wrapper broke the first call before anything registered: reported, left out,
    # and that call ran again without it
    assert seen == [["a"], ["a"], ["b"]]
    assert reg.errors["raising"] == "RuntimeError: the wrapper is broken"
    assert set(reg.errors) == {"raising"} and {"a", "b"} <= set(reg.backends)
    assert calls == ["before", "after", "before", "after"]


def test_the_process_registry_still_registers_every_builtin_once():
    from sketchcore.registry import registry

    reg = registry()
    assert reg.errors == {}, reg.errors
    assert sorted(reg.algorithms) == sk.algorithms()
    assert reg.sources["affd"] == "sketchcore.sketches"
