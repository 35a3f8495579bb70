"""A tiny model that already answers the corridor's prompts with a valid action, half left and half right."""

import pytest
import torch


def _corridor_corpus():
    from tandem.agentrl.env import Corridor

    env = Corridor(length=3)
    texts = []
    for position in range(4):
        env.position = position
        for action in ("left", "right"):
            texts.append(f"{env.instructions}\n\n{env._render()}\naction: {action}\n")
            texts.append(f"not an action; reply left or right.\n{env._render()}\naction: {action}\nobservation:\n")
    return texts * 4


@pytest.fixture(scope="session")
def corridor_model_dir(tmp_path_factory):
    """~0.2M-parameter Llama, behaviour-cloned on a uniformly random corridor policy (no model left untrained:
    RL needs valid replies to start from), saved as a Hugging Face directory."""
    from tandem.agentrl.env import Corridor
    from tandem.agentrl.rollout import PlainFormat
    from tandem.models.factory import ModelSize, build_model
    from tandem.models.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(_corridor_corpus(), vocab_size=400)
    size = ModelSize(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128,
                     vocab_size=len(tokenizer))
    model = build_model(size, tokenizer, arch="llama", seed=0)
    fmt, env = PlainFormat(tokenizer), Corridor(length=3)
    rows = []
    for position in range(3):
        env.position = position
        prompt = fmt.start(env.instructions, env._render())
        for action in (" left\n", " right\n"):
            rows.append((prompt, tokenizer(action, add_special_tokens=False)["input_ids"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(60):
        batch = [rows[i] for i in torch.randint(len(rows), (6,)).tolist()]
        width = max(len(p) + len(a) for p, a in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        for k, (p, a) in enumerate(batch):
            ids[k, : len(p) + len(a)] = torch.tensor(p + a)
            labels[k, len(p): len(p) + len(a)] = torch.tensor(a)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp("corridor-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
