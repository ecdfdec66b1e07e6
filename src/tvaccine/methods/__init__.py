"""Alignment methods, registered by name: each is a (config dataclass, Trainer subclass) pair.

``METHODS`` maps a name to its pair; ``tvaccine align --method``, ``tvaccine run`` and
``AlignSpec`` read it. A method joins it with :func:`register_method`, the built-in ones below as
well as a user's own defense. A defense kept outside this package is found without editing it,
the first time the registry is read, in two ways:

* ``TVACCINE_PLUGINS``: comma-separated module names (importable from ``sys.path``) or paths to
  ``.py`` files, imported in that order, e.g. ``TVACCINE_PLUGINS=my_defense`` or
  ``TVACCINE_PLUGINS=./my_defense.py``;
* the ``tvaccine.methods`` entry-point group of any installed package: each entry point names a
  module (``my_defense = "my_package.defense"`` under ``[project.entry-points."tvaccine.methods"]``
  in its pyproject.toml), imported on first read.

Importing the module runs its ``@register_method`` decorators. A plug-in that fails to import
stops the command with one line naming it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from tvaccine.errors import UserError
from tvaccine.methods.base import AlignmentConfig, AlignmentTrainer
from tvaccine.methods.repnoise import RepNoiseConfig, RepNoiseTrainer
from tvaccine.methods.sft import SFTConfig, SFTTrainer
from tvaccine.methods.tar import TARConfig, TARTrainer
from tvaccine.methods.tvaccine import TVaccineConfig, TVaccineTrainer
from tvaccine.methods.vaccine import VaccineConfig, VaccineTrainer

PLUGINS_ENV = "TVACCINE_PLUGINS"
ENTRY_POINT_GROUP = "tvaccine.methods"
# Lower-case words joined by - or _: a name that is also a YAML key, a directory name and a CLI choice.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Names that mean something else where methods are named (the run config's non-aligned model).
_RESERVED = {"none"}

_REGISTRY: dict[str, tuple[type, type]] = {}
_plugins_loaded = False


def register_method(name: str, config: type = SFTConfig):
    """Class decorator: make a Trainer subclass an alignment method called ``name``, with ``config``
    (an :class:`AlignmentConfig` subclass; by default SFT's, no options of its own) as its arguments.
    Its config's own fields become ``tvaccine align`` options and ``align.method_options`` keys.

    ```python
    from dataclasses import dataclass, field

    from tvaccine import AlignmentConfig, AlignmentTrainer
    from tvaccine.methods import METHODS, register_method

    @dataclass
    class ScaledConfig(AlignmentConfig):
        scale: float = field(default=0.5, metadata={"help": "Factor on the alignment loss."})

    @register_method("scaled-sft", config=ScaledConfig)
    class ScaledTrainer(AlignmentTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return self.args.scale * super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    assert METHODS["scaled-sft"] == (ScaledConfig, ScaledTrainer)
    ```

    A second registration of a name is refused unless it is the same class defined again (a
    re-run notebook cell or a reloaded module), which replaces the first.
    """
    if not isinstance(name, str) or not _NAME.match(name) or name in _RESERVED:
        raise ValueError(f"method name {name!r}: use lower-case letters, digits, - and _ (not 'none')")
    if not (isinstance(config, type) and issubclass(config, AlignmentConfig)):
        raise TypeError(f"method {name!r}: config must be a subclass of AlignmentConfig, got {config!r}")

    def wrap(trainer_class: type) -> type:
        if not (isinstance(trainer_class, type) and issubclass(trainer_class, AlignmentTrainer)):
            raise TypeError(f"method {name!r}: @register_method decorates a subclass of AlignmentTrainer, "
                            f"got {trainer_class!r}")
        known = _REGISTRY.get(name)
        if known is not None and _where(known[1]) != _where(trainer_class):
            raise ValueError(f"method {name!r} is already registered by {_where(known[1])}")
        _REGISTRY[name] = (config, trainer_class)
        return trainer_class

    return wrap


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def load_plugins() -> None:
    """Import the plug-ins named by ``TVACCINE_PLUGINS`` and the ``tvaccine.methods`` entry points,
    once per process. Reading ``METHODS`` calls it; call it yourself only to fail early."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True  # set first: a plug-in that reads METHODS while it imports sees the built-ins
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            entry.load()
        except Exception as exc:  # a broken plug-in is the user's to fix: say which one, in one line
            raise UserError(f"the {ENTRY_POINT_GROUP} entry point {entry.name!r} ({entry.value}) failed to "
                            f"load: {type(exc).__name__}: {exc}") from exc
    for item in os.environ.get(PLUGINS_ENV, "").split(","):
        if item.strip():
            _import_plugin(item.strip())


def _import_plugin(item: str) -> None:
    """Import one ``TVACCINE_PLUGINS`` entry: a module name, or a path to a ``.py`` file."""
    if not (item.endswith(".py") or "/" in item or os.sep in item):
        try:
            importlib.import_module(item)
        except Exception as exc:
            raise UserError(f"{PLUGINS_ENV} names {item}, which failed to import: {type(exc).__name__}: {exc} "
                            f"(python -c 'import {item}' shows where)") from exc
        return
    path = Path(item).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"{PLUGINS_ENV} names {item}, which is not a file")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if getattr(loaded, "__file__", None) == str(path):
            return
        raise UserError(f"{PLUGINS_ENV} names {item}, but a module called {name!r} is already imported "
                        f"from elsewhere; rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # Registered under its own name, so that its classes pickle (an alignment in its own process).
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UserError(f"{PLUGINS_ENV} names {item}, which failed to import: {type(exc).__name__}: {exc} "
                        f"(python {item} shows where)") from exc


class _Methods(Mapping):
    """The registry as a read-only mapping that loads the plug-ins before its first read."""

    def __getitem__(self, name: str) -> tuple[type, type]:
        load_plugins()
        return _REGISTRY[name]

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter(list(_REGISTRY))

    def __len__(self) -> int:
        load_plugins()
        return len(_REGISTRY)

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in _REGISTRY

    def __repr__(self) -> str:
        return f"METHODS({', '.join(self)})"


METHODS: Mapping[str, tuple[type, type]] = _Methods()

register_method("sft", SFTConfig)(SFTTrainer)
register_method("vaccine", VaccineConfig)(VaccineTrainer)
register_method("t-vaccine", TVaccineConfig)(TVaccineTrainer)
register_method("repnoise", RepNoiseConfig)(RepNoiseTrainer)
register_method("tar", TARConfig)(TARTrainer)
