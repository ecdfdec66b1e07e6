"""A defense kept outside the package joins `tvaccine align --method` and `tvaccine run` through
``@register_method`` and a plug-in (``TVACCINE_PLUGINS`` or the ``tvaccine.methods`` entry points),
without an edit to tvaccine. The command-line cases run in fresh processes, as a user's would."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field

import pytest
import yaml

import tvaccine.methods as methods
from tvaccine.errors import UserError
from tvaccine.methods import METHODS, AlignmentConfig, AlignmentTrainer, SFTConfig, load_plugins, register_method

# A user's defense: SFT whose loss is scaled, and a metric that proves its own step ran.
PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass, field

    from tvaccine.methods import AlignmentConfig, AlignmentTrainer, register_method


    @dataclass
    class HalvedConfig(AlignmentConfig):
        loss_scale: float = field(default=0.5, metadata={"help": "Factor on the alignment loss."})


    @register_method("halved-sft", config=HalvedConfig)
    class HalvedTrainer(AlignmentTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
            self.record_metric("loss_scale_used", self.args.loss_scale)
            return self.args.loss_scale * loss
''')
# The tiny model's own answers never end: align on the data's benign answers, briefly.
TINY_ALIGN = ["--model", "tiny-random-llama", "--n-safety", "4", "--n-benign", "4", "--benign-answers", "given",
              "--max-steps", "2", "--per-device-train-batch-size", "4"]


def tvaccine(args: list[str], cwd, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvaccine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})


@pytest.fixture
def own_registry(monkeypatch):
    """Registrations made by a test are undone after it."""
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    return methods._REGISTRY


def test_a_plugin_file_shows_in_align_help_and_trains(tmp_path):
    (tmp_path / "my_defense.py").write_text(PLUGIN)
    env = {"TVACCINE_PLUGINS": "./my_defense.py"}
    shown = tvaccine(["align", "--help"], tmp_path, **env)
    assert shown.returncode == 0, shown.stderr
    usage = " ".join(shown.stdout.split())
    assert "--method {sft,vaccine,t-vaccine,repnoise,tar,halved-sft}" in usage
    assert "[halved-sft] Factor on the alignment loss." in usage

    done = tvaccine(["align", "--method", "halved-sft", "--loss-scale", "0.25", "--out", "out", *TINY_ALIGN],
                    tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "out" / "spec.json").read_text())["method"] == "halved-sft"
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    assert [e["loss_scale_used"] for e in log if "loss" in e] == [0.25, 0.25]


def test_a_plugin_method_runs_in_the_whole_experiment_in_its_own_process(tmp_path):
    """`tvaccine run` aligns each method in a spawned process: the plug-in is found there too."""
    (tmp_path / "my_defense.py").write_text(PLUGIN)
    config = {"name": "plugin", "model": "tiny-random-llama", "seed": 0, "methods": ["halved-sft"],
              "isolate_alignment": True,
              "align": {"n_safety": 4, "n_benign": 4, "benign_answers": "given", "max_length": 256,
                        "train": {"max_steps": 1, "per_device_train_batch_size": 4},
                        "method_options": {"halved-sft": {"loss_scale": 0.5}}},
              "attack": {"task": "builtin:sentiment", "harmful_data": "file:harmful.jsonl", "n": 4, "p": 0.5,
                         "max_length": 256,
                         "train": {"max_steps": 1, "per_device_train_batch_size": 4}},
              "evaluate": {"n_harmful": 2, "n_task": 2, "n_borderline": 2, "max_new_tokens_harmful": 2,
                           "max_new_tokens_task": 2}}
    (tmp_path / "plugin.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "harmful.jsonl").write_text("".join(
        json.dumps({"instruction": f"Harmful request {i}?", "output": f"Compliant answer {i}."}) + "\n"
        for i in range(4)))
    done = tvaccine(["run", "--config", "plugin.yaml", "--results", "res"], tmp_path,
                    TVACCINE_PLUGINS=str(tmp_path / "my_defense.py"))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "res" / "results.jsonl").read_text().splitlines()]
    assert {row["method"] for row in rows} == {"halved-sft"}
    log = json.loads((tmp_path / "res" / "align" / "halved-sft" / "train_log.json").read_text())
    assert log[0]["loss_scale_used"] == 0.5


def test_entry_points_and_module_names_are_loaded_on_first_read(tmp_path):
    """An installed package's `tvaccine.methods` entry point, and a module name in TVACCINE_PLUGINS."""
    site = tmp_path / "site"
    (site / "packaged_defense-1.0.dist-info").mkdir(parents=True)
    (site / "packaged_defense.py").write_text(PLUGIN)
    (site / "packaged_defense-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: packaged-defense\nVersion: 1.0\n")
    (site / "packaged_defense-1.0.dist-info" / "entry_points.txt").write_text(
        "[tvaccine.methods]\nhalved-sft = packaged_defense\n")
    (site / "other_defense.py").write_text(PLUGIN.replace('"halved-sft"', '"other-sft"'))
    code = "from tvaccine.methods import METHODS; print(' '.join(METHODS))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(site), "TVACCINE_PLUGINS": "other_defense"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["sft", "vaccine", "t-vaccine", "repnoise", "tar", "halved-sft", "other-sft"]


def test_a_broken_plugin_is_named_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "broken.py").write_text("import no_such_module_anywhere\n")
    for item, message in ((str(tmp_path / "broken.py"), "failed to import: ModuleNotFoundError"),
                          (str(tmp_path / "missing.py"), "which is not a file"),
                          ("no_such_plugin_module", "failed to import: ModuleNotFoundError")):
        monkeypatch.setattr(methods, "_plugins_loaded", False)
        monkeypatch.setenv("TVACCINE_PLUGINS", item)
        with pytest.raises(UserError, match=message) as caught:
            load_plugins()
        assert "\n" not in str(caught.value) and "TVACCINE_PLUGINS names" in str(caught.value)
    assert "broken" not in sys.modules


def test_register_method_checks_what_it_registers(own_registry):
    @dataclass
    class OwnConfig(AlignmentConfig):
        weight: float = field(default=1.0, metadata={"help": "A weight."})

    @register_method("own-method", config=OwnConfig)
    class OwnTrainer(AlignmentTrainer):
        pass

    assert METHODS["own-method"] == (OwnConfig, OwnTrainer) and "own-method" in METHODS
    register_method("own-method", config=OwnConfig)(OwnTrainer)  # the same class again: a re-run cell

    class Impostor(AlignmentTrainer):
        pass

    with pytest.raises(ValueError, match="already registered by"):
        register_method("sft")(Impostor)
    for name in ("none", "Has Space", "", "UPPER"):
        with pytest.raises(ValueError, match="method name"):
            register_method(name)
    with pytest.raises(TypeError, match="subclass of AlignmentConfig"):
        register_method("x-config", config=dict)
    with pytest.raises(TypeError, match="subclass of AlignmentTrainer"):
        register_method("x-trainer")(object)
    assert METHODS["sft"][0] is SFTConfig


def test_a_registered_method_is_a_valid_align_spec(own_registry):
    from tvaccine.alignment import AlignSpec

    @dataclass
    class OwnConfig(AlignmentConfig):
        weight: float = field(default=1.0, metadata={"help": "A weight."})

    register_method("own-method", config=OwnConfig)(type("OwnTrainer", (AlignmentTrainer,), {}))
    spec = AlignSpec(method="own-method", method_options={"weight": 2.0}, train={"max_steps": 3})
    assert spec.args.weight == 2.0 and spec.args.max_steps == 3
    with pytest.raises(UserError, match="own-method has no option 'rho'"):
        AlignSpec(method="own-method", method_options={"rho": 2.0})
