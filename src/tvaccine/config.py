"""Specs from YAML, flags and ``--set``: each value converted and checked by its dataclass field's type.

PyYAML reads ``1e-3`` as a string and every flag arrives as text, so a value is coerced by the type
of the field it fills before a spec is built; one that does not fit is a one-line UserError naming
the field. Specs validate in ``__post_init__`` and are not edited afterwards. The TrainingArguments
of a run are built once, from a spec's ``train`` (TrainingArguments fields) and ``method_options``
(the method's own fields), by :func:`training_arguments`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import math
import types
import typing
from importlib import resources
from pathlib import Path

import yaml

from tvaccine.errors import UserError

PRESETS = ("smoke", "cpu", "paper")
DEFAULT_SEED = 42
DEFAULT_TEMPLATE = "auto"  # the chat template of a chat model, else alpaca (the papers' format, for base models)
DTYPES = ("fp32", "bf16", "fp16")

# Names that were replaced, by the section they sit in: the old name gets a one-line error naming
# the new one instead of an "unknown field".
RENAMED = {
    "attack": {"harmful": "harmful_data", "learning_rate": "train.learning_rate", "epochs": "train.num_train_epochs",
               "max_steps": "train.max_steps", "batch_size": "train.per_device_train_batch_size",
               "warmup_ratio": "train.warmup_steps", "lr_scheduler": "train.lr_scheduler_type",
               "save_steps": "train.save_steps", "use_cpu": "train.use_cpu"},
    "evaluate": {"harmful": "eval_harmful"},
    "train": {"lr": "learning_rate", "epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
              "warmup_ratio": "warmup_steps", "lr_scheduler": "lr_scheduler_type"},
    "method_options": {"tau": "perturbation_interval"},
}
MAX_SEED = 2**32 - 1  # numpy's seed range, which transformers' set_seed passes the seed to
SEED_FIELDS = ("seed", "data_seed")
# transformers' report_to integrations: the module each imports, and how to install it (an extra of
# tvaccine where there is one).
INTEGRATIONS = {"wandb": (("wandb",), "wandb"),
                "tensorboard": (("tensorboard", "tensorboardX"), "'tvaccine[tensorboard]'"),
                "mlflow": (("mlflow",), "mlflow"), "comet_ml": (("comet_ml",), "comet_ml"),
                "neptune": (("neptune",), "neptune"), "clearml": (("clearml",), "clearml"),
                "codecarbon": (("codecarbon",), "codecarbon"), "dvclive": (("dvclive",), "dvclive"),
                "swanlab": (("swanlab",), "swanlab"), "trackio": (("trackio",), "trackio"),
                "azure_ml": (("azureml",), "azureml-core"), "flyte": (("flytekit",), "flytekit"),
                "dagshub": (("dagshub",), "dagshub")}
_WARMUP_NOTE = " (transformers 5 has no warmup_ratio: a warmup_steps value below 1 is a ratio of the steps)"


def option(default=dataclasses.MISSING, help: str = "", *, factory=dataclasses.MISSING, **metadata):
    """A spec field with its help text; ``metadata`` may add ``choices``, ``metavar`` or ``flag``."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"help": help, **metadata})


@functools.cache
def type_hints(cls) -> dict:
    return typing.get_type_hints(cls)


def field_default(cls, name: str):
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def init_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def admits_list(hint) -> bool:
    """Whether a field of this type can hold a list (else a list in a run config is a sweep)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(admits_list(member) for member in typing.get_args(hint))
    return hint in (list, tuple) or typing.get_origin(hint) in (list, tuple)


def type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(m) for m in typing.get_args(hint) if m is not type(None))
    if origin in (list, tuple):
        return "a list"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            dict: "a mapping"}.get(hint, getattr(hint, "__name__", str(hint)))


def coerce(value, hint, name: str, text: bool = False):
    """``value`` as the type ``hint``, or a UserError naming ``name``.

    Numbers and booleans are also read from strings (YAML's ``1e-3``). ``text`` marks a value typed on
    the command line, where a list may be written ``0,1`` or as one item, and ``none`` means None.
    """
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        if optional and (value is None or (isinstance(value, str) and value.strip().lower() in
                                           (("", "none", "null") if text else ("",)))):
            return None
        if len(members) == 1:  # Optional[X]: X's own message says what is wrong
            return coerce(value, members[0], name, text)
        # A list goes to a list member first, anything else to the others first.
        members.sort(key=lambda m: admits_list(m) != isinstance(value, (list, tuple)))
        for member in members:
            try:
                return coerce(value, member, name, text)
            except UserError:
                continue
        raise UserError(f"{name}: expected {type_name(hint)}, got {value!r}")
    if origin in (list, tuple) or hint in (list, tuple):
        (item,) = typing.get_args(hint)[:1] or (typing.Any,)
        if text and isinstance(value, str):
            value = _yaml_list(value, name) if value.strip().startswith("[") else \
                [part.strip() for part in value.split(",") if part.strip()]
        elif text and not isinstance(value, (list, tuple)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{name}: expected a list, e.g. [{value}], got {value!r}")
        return [coerce(v, item, f"{name}[{i}]", text) for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{name}: expected a mapping (key: value), got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return build_spec(hint, value, name)
        raise UserError(f"{name}: expected a mapping of {hint.__name__} fields, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        words = {"true": True, "yes": True, "on": True, "1": True,
                 "false": False, "no": False, "off": False, "0": False}
        if isinstance(value, (str, int)) and str(value).strip().lower() in words:
            return words[str(value).strip().lower()]
        raise UserError(f"{name}: expected true or false, got {value!r}")
    if hint is int:
        number = _number(value)
        if number is None or not float(number).is_integer():
            raise UserError(f"{name}: expected an integer, got {value!r}")
        return int(number)
    if hint is float:
        number = _number(value)
        if number is None:
            raise UserError(f"{name}: expected a number, got {value!r}")
        return float(number)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{name}: expected a string, got {value!r}")
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        choices = [m.value for m in hint]
        if isinstance(value, hint) or value in choices:
            return value
        raise UserError(f"{name}: expected one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def _yaml_list(text: str, name: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise UserError(f"{name}: expected a list such as [0, 1] or 0,1, got {text!r}") from None


def _number(value) -> float | int | None:
    """A finite number from a number or its text; None for anything else (booleans included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            try:
                value = float(value.strip())
            except ValueError:
                return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return value
    return None


def coerce_fields(spec) -> None:
    """Every field of a spec as its declared type: the first thing each spec's ``__post_init__`` does."""
    hints = type_hints(type(spec))
    for field in init_fields(type(spec)):
        setattr(spec, field.name, coerce(getattr(spec, field.name), hints[field.name], field.name))
        if field.name in SEED_FIELDS:
            check_seed(getattr(spec, field.name), field.name)


def check_seed(value, name: str) -> None:
    """A seed (or a list of them) in numpy's range: outside it, set_seed fails only after the model loaded."""
    for seed in value if isinstance(value, list) else [value]:
        if isinstance(seed, int) and not 0 <= seed <= MAX_SEED:
            raise UserError(f"{name} must be in [0, 2**32 - 1], got {seed}")


def check_integrations(report_to, label: str = "report_to") -> None:
    """Each integration named by report_to is installed: the Trainer would refuse it only when it starts."""
    import importlib.util

    for name in report_to or []:
        modules, install = INTEGRATIONS.get(name, ((), ""))
        if modules and not any(importlib.util.find_spec(module) for module in modules):
            raise UserError(f"{label}: {name} needs the package {modules[0]}, which is not installed: "
                            f"pip install {install}")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def unknown_name(section: str, name: str, known) -> UserError:
    """The error for a name a section does not have: the new name if it was renamed, else close matches."""
    if name in RENAMED.get(section, {}):
        new = RENAMED[section][name]
        return UserError(f"{section}.{name} was renamed: use {section}.{new}"
                         + (_WARMUP_NOTE if "warmup" in name else ""))
    close = difflib.get_close_matches(name, list(known), n=1)
    return UserError(f"unknown field {section}.{name}" + (f"; did you mean {close[0]}?" if close else ""))


def build_spec(cls, values, section: str):
    """``cls(**values)`` from a run config's section: unknown or renamed names are refused by name, every
    value is coerced by its field's type, and errors name the section."""
    if not isinstance(values, dict):
        raise UserError(f"{section}: expected a mapping of {cls.__name__} fields, got {values!r}")
    known = [f.name for f in init_fields(cls)]
    for name in values:
        if name not in known:
            raise unknown_name(section, str(name), known)
    try:
        return cls(**values)
    except UserError as exc:
        raise UserError(f"{section}: {exc}") from None


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``--set key=value`` items as ``{key: text}``; the text is coerced later by the key's field type."""
    assigned = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        if key in assigned:
            raise UserError(f"--set {key} given twice")
        assigned[key] = value
    return assigned


def method_option_names(config_class) -> list[str]:
    """The fields a method's config adds to TrainingArguments: the method's own options."""
    from transformers import TrainingArguments

    base = {f.name for f in init_fields(TrainingArguments)}
    return [f.name for f in init_fields(config_class) if f.name not in base]


def training_arguments(config_class, train: dict, method_options: dict, label: str, **fixed):
    """``config_class`` (a TrainingArguments subclass) built once from TrainingArguments fields (``train``)
    and the method's own fields (``method_options``), each coerced by its type; ``fixed`` are the fields
    the spec sets itself (seeds). Checks what TrainingArguments lets through: a learning rate <= 0, and
    ``max_steps`` <= 0, which TrainingArguments reads as "train the epochs instead"."""
    from transformers import TrainingArguments

    base = {f.name for f in init_fields(TrainingArguments)}
    own = method_option_names(config_class)
    hints = type_hints(config_class)
    require(isinstance(train, dict), f"train: expected a mapping of TrainingArguments fields, got {train!r}")
    require(isinstance(method_options, dict), f"method_options: expected a mapping of {label}'s options, got "
                                              f"{method_options!r}")
    values = {}
    for key, value in train.items():
        require(key not in own, f"train.{key} is an option of {label}: set it in method_options")
        require(key not in fixed and key != "output_dir", f"train.{key} is set by the run itself, not in train")
        if key not in base:
            raise unknown_name("train", key, base)
        values[key] = coerce(value, hints[key], f"train.{key}")
        if key in SEED_FIELDS:
            check_seed(values[key], f"train.{key}")
    for key, value in method_options.items():
        if key not in own:
            require(key not in base, f"method_options.{key} is a training argument: set it in train")
            if key in RENAMED["method_options"]:
                raise unknown_name("method_options", key, own)
            raise UserError(f"{label} has no option {key!r}" + (f"; its options: {', '.join(own)}" if own else
                                                                 " (it has no options of its own)"))
        values[key] = coerce(value, hints[key], f"method_options.{key}")
    require(values.get("max_steps", 1) >= 1, f"train.max_steps must be >= 1, got {values.get('max_steps')} "
                                              "(leave it unset to train num_train_epochs epochs)")
    require(values.get("save_steps", 1) > 0, f"train.save_steps must be > 0, got {values.get('save_steps')}")
    if "save_steps" in values:  # asking for a checkpoint interval asks for checkpoints
        values.setdefault("save_strategy", "steps")
        values.setdefault("save_total_limit", 2)
    try:
        args = config_class(**values, **fixed)
    except ValueError as exc:
        raise UserError(f"{label}: {first_line(exc)}") from None
    check_integrations(args.report_to, "train.report_to")
    for name, low, inclusive in (("learning_rate", 0, False), ("num_train_epochs", 0, False),
                                 ("per_device_train_batch_size", 1, True), ("gradient_accumulation_steps", 1, True),
                                 ("weight_decay", 0, True), ("warmup_steps", 0, True)):
        value = getattr(args, name)
        require(value >= low if inclusive else value > low,
                f"train.{name} must be {'>=' if inclusive else '>'} {low}, got {value}")
    return args


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def load_config(preset: str | None = None, path: str | None = None) -> dict:
    """A run config: the YAML file at ``path``, or a built-in preset (default ``cpu``)."""
    if path:
        file = Path(path)
        if not file.exists():
            raise UserError(f"config file not found: {path}")
        if not file.is_file():  # a pipe would block the read forever
            raise UserError(f"config file {path} is not a regular file (a folder, pipe or device)")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{path} is not UTF-8 text (byte {exc.start}): save the config as UTF-8") from None
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}") from None
    else:
        preset = preset or "cpu"
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        text = (resources.files("tvaccine") / "presets" / f"{preset}.yaml").read_text(encoding="utf-8")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {first_line(exc)}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path or preset}: the config must be a mapping")
    return config
