"""Registry: wildcards, natural sort, did-you-mean, clashes, lazy entries, plugins."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

import xbench
from xbench.errors import PluginError, RegistryClashError, UnknownNameError
from xbench.registry import AUTOLOAD_ENV, Registry, natural_key


class Dummy:
    """A registrable thing."""


def test_natural_sort_and_wildcards():
    reg = Registry("thing")
    for name in ["resnet10", "resnet9", "dann", "dann_cond", "coral"]:
        reg.register(name, type(name, (), {}))
    assert reg.names() == ["coral", "dann", "dann_cond", "resnet9", "resnet10"]
    assert reg.list("dann*") == ["dann", "dann_cond"]
    assert reg.list("*", exclude="resnet*") == ["coral", "dann", "dann_cond"]
    assert reg.list(["coral", "res*"]) == ["coral", "resnet9", "resnet10"]
    assert sorted(["a10", "a2", "a1"], key=natural_key) == ["a1", "a2", "a10"]


def test_tags_filter():
    reg = Registry("thing")
    reg.register("x", type("X", (), {}), tags={"dg", "alignment"})
    reg.register("y", type("Y", (), {}), tags={"dg"})
    assert reg.list(tags={"dg"}) == ["x", "y"]
    assert reg.list(tags={"alignment"}) == ["x"]


def test_unknown_name_did_you_mean_and_available():
    reg = Registry("method")
    reg.register("coral", type("C", (), {}))
    reg.register("dann", type("D", (), {}))
    with pytest.raises(UnknownNameError) as info:
        reg.get("corral")
    message = str(info.value)
    assert "Unknown method 'corral'" in message
    assert "Did you mean: coral?" in message
    assert "Available: coral, dann" in message
    assert "\n" not in message


def test_clash_names_both_origins():
    reg = Registry("method")
    reg.register("erm", type("A", (), {}), origin="xbench==0.1.0")
    with pytest.raises(RegistryClashError) as info:
        reg.register("erm", type("B", (), {}), origin="myplugin==2.0")
    assert "xbench==0.1.0" in str(info.value) and "myplugin==2.0" in str(info.value)


def test_same_object_twice_is_not_a_clash():
    reg = Registry("thing")
    obj = type("A", (), {})
    reg.register("a", obj)
    reg.register("a", obj)
    assert reg.get("a") is obj


def test_lazy_entry_imported_on_first_get(tmp_path, monkeypatch):
    (tmp_path / "lazy_mod_xb.py").write_text("LOADED = True\nclass Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("thing")
    reg.register_lazy("thing", "lazy_mod_xb:Thing", origin="somedist==1.0")
    assert "lazy_mod_xb" not in sys.modules
    assert reg.get("thing").__name__ == "Thing"
    assert reg.entry("thing").origin == "somedist==1.0"


def test_lazy_entry_that_fails_to_import_names_the_plugin():
    reg = Registry("method")
    reg.register_lazy("ghost", "no_such_module_xb:Ghost", origin="ghostdist==0.1")
    with pytest.raises(PluginError, match="ghostdist==0.1.*no_such_module_xb:Ghost"):
        reg.get("ghost")


def test_builtin_origin_is_xbench_with_version():
    assert xbench.registry.METHODS.entry("erm").origin == f"xbench=={xbench.__version__}"


PLUGIN_MODULE = '''
"""A third-party method shipped by a test distribution."""
from xbench.methods.erm import ERM
from xbench.registry import register_method


@register_method("plugin_erm", tags={"plugin"})
class PluginERM(ERM):
    """ERM, as shipped by a plugin."""
'''


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """A tiny installed-looking distribution with an ``xbench.methods`` entry point."""
    (tmp_path / "xb_plugin_pkg.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    info = tmp_path / "xb_plugin_pkg-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xb-plugin-pkg\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[xbench.methods]\nplugin_erm = xb_plugin_pkg:PluginERM\n")
    (info / "top_level.txt").write_text("xb_plugin_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("xb_plugin_pkg", None)


def test_entry_point_plugin_discovered_with_distribution_and_version(plugin_dist, monkeypatch):
    monkeypatch.delenv(AUTOLOAD_ENV, raising=False)
    reg = Registry("method", group="xbench.methods")
    assert "plugin_erm" in reg.names()
    cls = reg.get("plugin_erm")  # importing runs the module's own decorator: not a clash
    assert cls.__name__ == "PluginERM"
    assert reg.entry("plugin_erm").origin == "xb-plugin-pkg==1.2.3"
    assert "plugin" in reg.entry("plugin_erm").tags
    xbench.registry.METHODS.unregister("plugin_erm")  # the module registered on the global one


def test_autoload_can_be_switched_off(plugin_dist, monkeypatch):
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    reg = Registry("method", group="xbench.methods")
    assert "plugin_erm" not in reg.names()


def test_create_method_checks_hparam_names():
    method = xbench.create_method("erm", lr=0.01)
    assert method.get_params() == {"lr": 0.01, "weight_decay": 0.0}
    with pytest.raises(xbench.XbenchError, match="no hyper-parameter.*'learning_rate'.*lr"):
        xbench.create_method("erm", learning_rate=0.01)
