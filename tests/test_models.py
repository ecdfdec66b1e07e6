import json
import random
import re

import pytest
import torch

from tiny_models import FAMILIES, tiny_model, token_batch
from tvaccine.errors import UserError
from tvaccine.models import (
    TINY_RANDOM_MODEL,
    add_lora,
    cache_dir,
    check_adapter,
    default_lora_targets,
    find_decoder_layers,
    load_adapter,
    load_model,
    merge_adapter,
    resolve_model,
    save_adapter,
)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_layer_discovery_finds_every_layer_and_its_self_attention(family):
    model = tiny_model(family, layers=3)
    layers = find_decoder_layers(model)
    assert [layer.index for layer in layers] == [0, 1, 2]
    seen = []
    for layer in layers:
        assert layer.attention in list(layer.layer.children())
        layer.attention.register_forward_hook(lambda m, a, out: seen.append(out[0] if isinstance(out, tuple) else out))
    model(**{k: v for k, v in token_batch(2, 6).items() if k != "labels"})
    assert len(seen) == 3 and all(h.shape == (2, 6, 32) for h in seen)
    # The same modules are found through a PEFT wrapper.
    wrapped = add_lora(model)
    assert [d.attention for d in find_decoder_layers(wrapped)] == [d.attention for d in layers]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_default_lora_targets_cover_attention_and_mlp(family):
    model = tiny_model(family, layers=2)
    targets = default_lora_targets(model)
    lora = add_lora(model, dropout=0.0)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # every projection of every layer has an A and a B matrix, the MLP ones included
    projections = [n for layer in find_decoder_layers(model) for n, m in layer.layer.named_modules()
                   if n.rsplit(".", 1)[-1] in targets and getattr(m, "weight", None) is not None]
    assert len(trainable) == 2 * len(projections)
    layer = find_decoder_layers(lora)[0]
    in_attention = {n.rsplit(".", 1)[-1] for n, _ in layer.attention.named_modules()}
    assert set(targets) & in_attention and set(targets) - in_attention


def test_unsupported_model_gets_an_error_naming_its_class():
    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

    with pytest.raises(UserError, match="Flat"):
        find_decoder_layers(Flat())


def test_lora_save_load_merge_round_trip(tmp_path):
    model = add_lora(tiny_model("llama"), dropout=0.0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)  # B starts at zero; make the adapter do something
    batch = token_batch(2, 8)
    model.eval()
    expected = model(**batch).logits
    save_adapter(model, tmp_path / "adapter", "tiny")
    assert check_adapter(tmp_path / "adapter")["num_layers"] == 4
    reloaded = load_adapter(tiny_model("llama"), tmp_path / "adapter").eval()
    torch.testing.assert_close(reloaded(**batch).logits, expected)
    merged = merge_adapter(reloaded)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-5, rtol=1e-4)


def test_adapter_for_another_architecture_is_refused(tmp_path):
    save_adapter(add_lora(tiny_model("llama", layers=4)), tmp_path / "a", "tiny")
    with pytest.raises(UserError, match="does not match the base model: num_layers"):
        load_adapter(tiny_model("llama", layers=2), tmp_path / "a")


def test_model_spec_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf")
    with pytest.raises(UserError, match="not a GGUF file"):
        resolve_model(str(fake))
    with pytest.raises(UserError, match="no config.json"):
        resolve_model(str(tmp_path))
    assert resolve_model("org/model") == ("hub", "org/model")


def test_pickled_weights_are_refused_unless_allowed(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UserError, match="--allow-pickle"):
        resolve_model(str(tmp_path))
    assert resolve_model(str(tmp_path), allow_pickle=True) == ("dir", tmp_path)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(UserError, match="no adapter_model.safetensors"):
        check_adapter(adapter)


# ---------------------------------------------------------------- damaged files: one line naming the file

def saved_adapter(tmp_path):
    directory = tmp_path / "adapter"
    save_adapter(add_lora(tiny_model("llama")), directory, "tiny")
    return directory


@pytest.mark.parametrize("damage,reason", [
    (lambda data: data[:len(data) // 2], "incomplete metadata"),
    (lambda data: b"", "header too small"),
    (lambda data: bytes(random.Random(0).randrange(256) for _ in range(4096)), "header"),
])
def test_damaged_adapter_weights_are_named(tmp_path, damage, reason):
    weights = saved_adapter(tmp_path) / "adapter_model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    for call in (lambda: check_adapter(weights.parent), lambda: load_adapter(tiny_model("llama"), weights.parent)):
        with pytest.raises(UserError) as e:
            call()
        assert str(e.value).startswith(f"{weights}: not a readable safetensors file (")
        assert reason in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text,message", [
    ("{bad", "adapter_config.json: invalid JSON at line 1"),
    ("[]", "adapter_config.json: expected a JSON object, got a list"),
    ("{}", "adapter_config.json: no 'peft_type'"),
])
def test_invalid_adapter_config_is_named(tmp_path, text, message):
    adapter = saved_adapter(tmp_path)
    (adapter / "adapter_config.json").write_text(text)
    with pytest.raises(UserError, match=re.escape(message)):
        load_adapter(tiny_model("llama"), adapter)


def test_adapter_config_that_does_not_fit_the_weights_is_one_line(tmp_path):
    adapter = saved_adapter(tmp_path)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "r": 4}))
    with pytest.raises(UserError) as e:
        load_adapter(tiny_model("llama"), adapter)
    assert str(e.value).startswith(f"could not load the adapter {adapter}: RuntimeError:") and "size mismatch" in \
        str(e.value) and "\n" not in str(e.value)


def test_truncated_model_weights_are_named_before_loading(tmp_path):
    directory = tmp_path / "model"
    tiny_model("llama").save_pretrained(directory)
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UserError, match=re.escape(f"{weights}: not a readable safetensors file")):
        load_model(str(directory), device="cpu")
    (directory / "config.json").write_text('{"model_type": ')
    with pytest.raises(UserError, match=re.escape(f"{directory / 'config.json'}: invalid JSON at line 1")):
        load_model(str(directory), device="cpu")


def test_cache_path_that_is_a_file_is_refused(tmp_path, monkeypatch):
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TVACCINE_CACHE", str(blocker))
    with pytest.raises(UserError, match=re.escape(f"the cache folder {blocker} (TVACCINE_CACHE) is a file")):
        load_model(TINY_RANDOM_MODEL, device="cpu")
    monkeypatch.setenv("TVACCINE_CACHE", str(blocker / "below"))
    with pytest.raises(UserError, match=re.escape(f"cannot create the cache folder {blocker / 'below'}")):
        cache_dir()
