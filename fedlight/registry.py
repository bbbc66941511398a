"""Plug-in registries: a defence, attack, dataset or model declares its name once.

``@DEFENSES.register("krum", params=KrumParams, order=40, paper="...")`` on the
class is all a new plug-in needs besides its module: the name is the config
group's option (``defense=krum``, made from the parameter dataclass's defaults
in Hydra's ConfigStore), the label in logs, W&B tags and reports, and ``order``
places it in the report's tables. Every module of a plug-in package is imported
when a registry is first read, so no list of plug-ins is kept by hand.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedlight.params import NoParams, defaults

if TYPE_CHECKING:
    from omegaconf import DictConfig


@dataclass(frozen=True)
class Plugin:
    """One registered plug-in."""

    group: str
    name: str
    cls: Any
    params: type
    order: int
    paper: str

    @property
    def summary(self) -> str:
        """The first line of the plug-in's docstring."""
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


class Registry:
    """The plug-ins of one config group, found in one package."""

    def __init__(self, group: str, package: str, config: bool = True) -> None:
        self.group = group
        self.package = package
        self.config = config  # whether the registry makes the group's options
        self._plugins: dict[str, Plugin] = {}
        self._loaded = False

    def register(
        self,
        name: str,
        *,
        params: type | None = None,
        order: int = 100,
        paper: str = "",
    ) -> Callable[[Any], Any]:
        """Class decorator: register ``cls`` under ``name``.

        ``params`` is the parameter dataclass; None means the class is its own
        (an attack) when it is a dataclass, else no parameters.
        """

        def add(cls: Any) -> Any:
            known = self._plugins.get(name)
            if known is not None and known.cls is not cls:
                raise ValueError(
                    f"{self.group} {name!r} is registered twice: "
                    f"{known.cls.__module__}.{known.cls.__qualname__} and "
                    f"{cls.__module__}.{cls.__qualname__}"
                )
            schema = params or (cls if dataclasses.is_dataclass(cls) else NoParams)
            plugin = Plugin(self.group, name, cls, schema, order, paper)
            self._plugins[name] = plugin
            cls.plugin_name = name
            if self.config:
                _store(plugin)
            return cls

        return add

    def load(self) -> None:
        """Import every module of the package (each registers its plug-ins)."""
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def get(self, name: str) -> Plugin:
        """The plug-in ``name``; a :class:`KeyError` lists the known names."""
        self.load()
        if name not in self._plugins:
            raise KeyError(
                f"no {self.group} named {name!r}; known: {', '.join(self.names())}"
            )
        return self._plugins[name]

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._plugins

    def __iter__(self) -> Iterator[Plugin]:
        self.load()
        return iter(sorted(self._plugins.values(), key=lambda p: (p.order, p.name)))

    def names(self) -> list[str]:
        """Every registered name, in the plug-ins' declared order."""
        return [p.name for p in self]

    def rank(self, name: str) -> tuple[int, str]:
        """Sort key of a name in reports: declared order, unknown names last."""
        self.load()
        plugin = self._plugins.get(name)
        return (plugin.order if plugin else 10**6, name)


def _store(plugin: Plugin) -> None:
    """Make ``group=name`` a Hydra option whose values are the declared defaults."""
    from hydra.core.config_store import ConfigStore

    node = {"name": plugin.name, **defaults(plugin.params)}
    ConfigStore.instance().store(group=plugin.group, name=plugin.name, node=node)


def load_plugins() -> None:
    """Register every plug-in (and its config option); call before composing."""
    from fedlight.attacks import ATTACKS
    from fedlight.defenses import DEFENSES

    DEFENSES.load()
    ATTACKS.load()


def compose_config(overrides: list[str], config_dir: Path | None = None) -> DictConfig:
    """fedlight's config for ``overrides``, composed as ``fedlight.run`` does:
    the plug-ins registered, the configs from ``config_dir`` (else the installed
    ``fedlight.configs``); inside an initialised Hydra (a fedlight app) there."""
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    load_plugins()  # the defence and attack options come from the plug-ins
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    if config_dir is None:
        context = initialize_config_module(
            config_module="fedlight.configs", version_base="1.3"
        )
    else:
        context = initialize_config_dir(config_dir=str(config_dir), version_base="1.3")
    with context:
        return compose(config_name="config", overrides=overrides)
