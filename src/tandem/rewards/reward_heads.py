"""An ensemble of K small reward heads r_k on *frozen* features phi(x, y) of a causal LM, the reward model of
active learning (`tandem.preference_studies.active`).

phi is the last hidden state averaged over the response tokens (`response_features`). Each head is linear
(r = w . phi) or a one-layer MLP; P_k(A > B) = sigma(r_k(phi_A) - r_k(phi_B)) (Bradley & Terry 1952) and each
member is fitted with the Bradley-Terry loss -log sigma(r_k(phi_w) - r_k(phi_l)) (Ouyang et al. 2022, eq. 1) on
its own bootstrap resample of the labelled pairs (Poisson(1) weights) from its own initialisation, which is what
makes the members disagree where the data say little (Lakshminarayanan et al. 2017, "deep ensembles").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tandem.algorithms.losses import bradley_terry_loss
from tandem.data import pad_sft_batch, tokenize_sft


# ----- frozen features -----------------------------------------------------------------------------


@torch.no_grad()
def response_features(model, tokenizer, prompts: list[str], responses: list[str], layer: int = 0,
                      batch_size: int = 64, max_length: int | None = 256) -> Tensor:
    """phi(x, y): hidden states of layer `layer` averaged over the response tokens (and EOS), (N, hidden).

    `layer` indexes Hugging Face's `hidden_states`: 0 is the input embeddings, -1 the last layer.
    """
    backbone = getattr(model, model.base_model_prefix)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = [tokenize_sft({"prompt": p, "completion": r}, tokenizer, max_length) for p, r in zip(prompts, responses, strict=True)]
    features = []
    for start in range(0, len(rows), batch_size):
        batch = pad_sft_batch(rows[start : start + batch_size], tokenizer.pad_token_id)
        hidden = backbone(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                          output_hidden_states=True).hidden_states[layer]
        mask = (batch["labels"] != -100).to(device).unsqueeze(-1).float()
        features.append(((hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu())
    model.train(was_training)
    return torch.cat(features) if features else torch.zeros(0, model.config.hidden_size)


# ----- the ensemble of reward heads ----------------------------------------------------------------


@dataclass(frozen=True)
class EnsembleConfig:
    """K reward heads on frozen features, trained full-batch with Adam."""

    members: int = 5
    head: str = "linear"        # "linear": r = w . phi; "mlp": r = v . tanh(W phi + b)
    hidden_size: int = 32
    steps: int = 150
    lr: float = 0.05
    weight_decay: float = 1e-2  # L2 penalty on every weight, per member
    bootstrap: bool = True


class RewardHeadEnsemble(nn.Module):
    """K reward heads evaluated together: `rewards(phi)` is (K, N), `preference_probs` is (K, N)."""

    def __init__(self, dim: int, config: EnsembleConfig, generator: torch.Generator):
        super().__init__()
        if config.head not in ("linear", "mlp"):
            raise ValueError(f"unknown reward head {config.head!r}; known: linear, mlp")
        if config.members < 1:
            raise ValueError(f"an ensemble needs at least one member, got {config.members}")
        k, h = config.members, config.hidden_size
        self.head = config.head
        if self.head == "linear":
            self.weight = nn.Parameter(torch.randn(k, dim, generator=generator) / math.sqrt(dim))
        else:
            self.hidden = nn.Parameter(torch.randn(k, dim, h, generator=generator) / math.sqrt(dim))
            self.bias = nn.Parameter(torch.zeros(k, h))
            self.weight = nn.Parameter(torch.randn(k, h, generator=generator) / math.sqrt(h))

    def rewards(self, features: Tensor) -> Tensor:
        if self.head == "linear":
            return torch.einsum("nd,kd->kn", features, self.weight)
        activations = torch.tanh(torch.einsum("nd,kdh->knh", features, self.hidden) + self.bias[:, None, :])
        return torch.einsum("knh,kh->kn", activations, self.weight)

    def preference_probs(self, features_a: Tensor, features_b: Tensor) -> Tensor:
        """P_k(A > B) = sigma(r_k(phi_A) - r_k(phi_B)) for every member k and pair n."""
        return torch.sigmoid(self.rewards(features_a) - self.rewards(features_b))


def fit_ensemble(features_a: Tensor, features_b: Tensor, labels: Tensor, config: EnsembleConfig, seed: int) -> RewardHeadEnsemble:
    """Train every member on its bootstrap resample with -log sigma(r_w - r_l) (Bradley-Terry); labels 1 = A better."""
    generator = torch.Generator().manual_seed(seed)
    ensemble = RewardHeadEnsemble(features_a.shape[1], config, generator)
    n = len(labels)
    weights = torch.ones(config.members, n)
    if config.bootstrap and config.members > 1:
        weights = torch.poisson(torch.ones(config.members, n), generator=generator)
    weights = weights / weights.sum(1, keepdim=True).clamp(min=1)
    a_better = labels.bool()
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=config.lr)
    for _ in range(config.steps):
        rewards_a, rewards_b = ensemble.rewards(features_a), ensemble.rewards(features_b)
        chosen, rejected = torch.where(a_better, rewards_a, rewards_b), torch.where(a_better, rewards_b, rewards_a)
        loss = (weights * bradley_terry_loss(chosen, rejected)).sum()
        loss = loss + config.weight_decay * sum((p**2).sum() for name, p in ensemble.named_parameters() if name != "bias")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return ensemble.requires_grad_(False)


def ensemble_accuracy(ensemble: RewardHeadEnsemble, features_a: Tensor, features_b: Tensor, labels: Tensor) -> float:
    """Share of pairs where the ensemble-mean P(A > B) is on the side of the label."""
    mean = ensemble.preference_probs(features_a, features_b).mean(0)
    return float(((mean > 0.5).float() == labels).float().mean())
