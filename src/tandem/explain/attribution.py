"""Per-token explanations: post-hoc attributions of a reward model's score, and of a policy's shift from its reference.

Reward-model attribution, on the input embeddings x (T, D) of prompt + response + EOS, with F the
reward model's score:

    integrated gradients   IG_t = sum_d (x - x')_td * integral_0^1 dF/dx_td (x' + a (x - x')) da
                           (Sundararajan et al. 2017), the integral by a trapezoid or Riemann rule over
                           `steps` intervals. Completeness: sum_t IG_t = F(x) - F(x') as steps grow.
    occlusion              O_t = F(x) - F(x with row t replaced by the baseline row x'_t)
                           (Zeiler & Fergus 2014): how much the score drops without token t.

The baseline x' replaces the response's tokens (scope "response": prompt and the final token, where the
head reads the reward, are kept) or every token (scope "all") by zeros ("zero") or the pad token's
embedding ("pad"). Zeros are a blank for RMSNorm models (the normalised row is 0, so the position adds
nothing to attention values); the pad embedding is a real, unusual token, and replacing any token by
it moves the sentiment reward model's score a lot whatever the token meant. The zero baseline needs
the quadratic grid (`integration_points`) for IG to converge; so does "pad" in a model whose pad row
is still zero (Hugging Face initialises it so).

Policy against reference, for each response token y_t with prefix s_t = (x, y_<t):

    log-prob change   log pi(y_t | s_t) - log pi_ref(y_t | s_t)       (the k1 estimator, Schulman 2020; sums to the
                                                                      sequence log-ratio whose mean over samples
                                                                      is KL(pi || pi_ref))
    next-token KL     sum_v pi(v | s_t) log(pi(v | s_t) / pi_ref(v | s_t))   (exact, over the vocabulary)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from tandem.algorithms.kl import kl_estimate
from tandem.algorithms.losses import token_log_probs
from tandem.data import tokenize_sft

ScoreFn = Callable[[Tensor], Tensor]  # embeddings (B, T, D) -> scores (B,)


def integration_points(steps: int, method: str = "trapezoid") -> tuple[Tensor, Tensor]:
    """Points a in [0, 1] and weights w with sum_j w_j f(a_j) ~ integral_0^1 f(a) da over `steps` intervals.

    trapezoid: a_j = j / m, j = 0..m, w = 1/m with halves at both ends; trapezoid_quadratic: the
    trapezoid rule on the grid a_j = (j / m)^2, dense near the baseline (w_j = (a_{j+1} - a_{j-1}) / 2,
    halved intervals at the ends); riemann_left / right / middle: a_j = j / m (j = 0..m-1), (j + 1) / m,
    (j + 1/2) / m, w = 1/m.

    The quadratic grid is for the zero baseline of RMSNorm models: F(a x) is flat in a except for
    a ~ sqrt(eps) / rms(x), where all of F(x) - F(0) is gained, so a uniform grid steps over it.
    """
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    m = steps
    if method in ("trapezoid", "trapezoid_quadratic"):
        points = torch.linspace(0, 1, m + 1, dtype=torch.float64)
        if method == "trapezoid_quadratic":
            points = points**2
        gaps = points[1:] - points[:-1]
        weights = torch.zeros(m + 1, dtype=torch.float64)
        weights[:-1] += gaps / 2
        weights[1:] += gaps / 2
        return points, weights
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if method not in offsets:
        raise ValueError(f"unknown integration method {method!r}; known: trapezoid, trapezoid_quadratic, {', '.join(offsets)}")
    points = (torch.arange(m, dtype=torch.float64) + offsets[method]) / m
    return points, torch.full((m,), 1.0 / m, dtype=torch.float64)


def integrated_gradients(score_fn: ScoreFn, inputs: Tensor, baseline: Tensor, steps: int = 64,
                         method: str = "trapezoid", batch_size: int = 16) -> Tensor:
    """IG attribution of each position (row) of `inputs` (T, D) against `baseline` (T, D), summed over D: (T,)."""
    if inputs.shape != baseline.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and baseline {tuple(baseline.shape)} differ in shape")
    points, weights = integration_points(steps, method)
    delta = (inputs - baseline).detach()
    average_gradient = torch.zeros_like(inputs, dtype=torch.float64)
    for start in range(0, len(points), batch_size):
        alphas = points[start : start + batch_size].to(inputs.dtype).view(-1, 1, 1)
        path = (baseline.detach().unsqueeze(0) + alphas * delta.unsqueeze(0)).requires_grad_(True)
        (gradient,) = torch.autograd.grad(score_fn(path).sum(), path)
        average_gradient += (weights[start : start + batch_size].view(-1, 1, 1) * gradient.double()).sum(0)
    return (delta.double() * average_gradient).sum(-1).to(inputs.dtype)


@torch.no_grad()
def occlusion(score_fn: ScoreFn, inputs: Tensor, baseline: Tensor, batch_size: int = 32) -> Tensor:
    """O_t = F(inputs) - F(inputs with row t set to baseline row t), for every row t: (T,)."""
    if inputs.shape != baseline.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and baseline {tuple(baseline.shape)} differ in shape")
    full = score_fn(inputs.unsqueeze(0))[0]
    length = inputs.shape[0]
    drops = []
    for start in range(0, length, batch_size):
        positions = torch.arange(start, min(start + batch_size, length))
        occluded = inputs.unsqueeze(0).repeat(len(positions), 1, 1)
        occluded[torch.arange(len(positions)), positions] = baseline[positions]
        drops.append(full - score_fn(occluded))
    return torch.cat(drops)


def next_token_kl(policy_logits: Tensor, reference_logits: Tensor) -> Tensor:
    """sum_v pi(v) (log pi(v) - log pi_ref(v)) at every position: (..., V) logits -> (...)."""
    log_p = policy_logits.float().log_softmax(-1)
    log_q = reference_logits.float().log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


# ----- models --------------------------------------------------------------------------------------


def reward_score_fn(model) -> ScoreFn:
    """F(embeddings) of a sequence-classification reward model: its head on the last position's hidden state.

    The rows are unpadded, so the last position is the last real token, where `tandem rm` reads the reward.
    """
    backbone = getattr(model, model.base_model_prefix)

    def score(embeddings: Tensor) -> Tensor:
        hidden = backbone(inputs_embeds=embeddings, use_cache=False).last_hidden_state
        return model.score(hidden[:, -1]).squeeze(-1).float()

    return score


def baseline_embeddings(model, input_ids: Tensor, kind: str, pad_id: int | None, replaced: Tensor | None = None) -> Tensor:
    """The IG / occlusion baseline of a sequence: its embeddings with the rows where `replaced` is True
    (all rows when None) set to zeros ("zero") or to the pad token's embedding ("pad")."""
    embeddings = model.get_input_embeddings()(input_ids).detach()
    if kind == "zero":
        blank = torch.zeros_like(embeddings)
    elif kind == "pad":
        if pad_id is None:
            raise ValueError("the 'pad' baseline needs a tokenizer with a pad token")
        blank = model.get_input_embeddings()(torch.full_like(input_ids, pad_id)).detach()
    else:
        raise ValueError(f"unknown baseline {kind!r}; known: zero, pad")
    if replaced is None:
        return blank
    return torch.where(replaced.unsqueeze(-1), blank, embeddings)


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """Each token decoded on its own (special tokens kept, so EOS shows)."""
    return [tokenizer.decode([token]) for token in ids]


@dataclass
class RewardAttribution:
    """One prompt + response explained: per-token values over prompt + response + EOS."""

    tokens: list[str]
    response_start: int
    score: float
    baseline_score: float
    integrated_gradients: list[float]
    occlusion: list[float]

    @property
    def completeness_gap(self) -> float:
        """sum IG - (F(x) - F(x')): zero for exact integration."""
        return sum(self.integrated_gradients) - (self.score - self.baseline_score)

    def to_dict(self) -> dict:
        return {**asdict(self), "completeness_gap": self.completeness_gap}


def explain_reward(model, tokenizer, prompt: str, response: str, steps: int = 64, method: str = "trapezoid_quadratic",
                   baseline: str = "zero", scope: str = "response", max_length: int | None = None) -> RewardAttribution:
    """Integrated gradients and occlusion of the reward model's score of prompt + response + EOS.

    scope "response" attributes the score to the response's tokens (prompt and last token kept in the
    baseline, so theirs are 0); "all" replaces every token in the baseline.
    """
    if scope not in ("response", "all"):
        raise ValueError(f"unknown attribution scope {scope!r}; known: response, all")
    example = tokenize_sft({"prompt": prompt, "completion": response}, tokenizer, max_length)
    device = next(model.parameters()).device
    ids = torch.tensor(example["input_ids"], device=device)
    model.eval()
    score_fn = reward_score_fn(model)
    inputs = model.get_input_embeddings()(ids).detach()
    replaced = None
    if scope == "response":
        replaced = torch.tensor(example["completion_mask"], dtype=torch.bool, device=device)
        replaced[-1] = False
    reference = baseline_embeddings(model, ids, baseline, tokenizer.pad_token_id, replaced)
    with torch.no_grad():
        score, baseline_score = score_fn(torch.stack([inputs, reference])).tolist()
    return RewardAttribution(
        tokens=token_texts(tokenizer, example["input_ids"]),
        response_start=example["completion_mask"].index(1),
        score=score,
        baseline_score=baseline_score,
        integrated_gradients=integrated_gradients(score_fn, inputs, reference, steps, method).tolist(),
        occlusion=occlusion(score_fn, inputs, reference).tolist(),
    )


@dataclass
class PolicyShift:
    """Per response token (and EOS): log-probs under policy and reference, their difference, and next-token KL."""

    tokens: list[str]
    policy_log_probs: list[float]
    reference_log_probs: list[float]
    log_prob_change: list[float]
    next_token_kl: list[float]

    def to_dict(self) -> dict:
        return {**asdict(self), "sequence_log_ratio": sum(self.log_prob_change), "sequence_kl": sum(self.next_token_kl)}


@torch.no_grad()
def explain_policy_shift(policy, reference, tokenizer, prompt: str, response: str, max_length: int | None = None) -> PolicyShift:
    """How the policy moved from its reference on each token of a given response (teacher-forced)."""
    example = tokenize_sft({"prompt": prompt, "completion": response}, tokenizer, max_length)
    device = next(policy.parameters()).device
    ids = torch.tensor([example["input_ids"]], device=device)
    labels = ids.masked_fill(torch.tensor([example["completion_mask"]], device=device) == 0, -100)
    policy_logits = policy(input_ids=ids, use_cache=False).logits
    reference_logits = reference(input_ids=ids.to(next(reference.parameters()).device), use_cache=False).logits.to(device)
    policy_logps, mask = token_log_probs(policy_logits, labels)
    reference_logps, _ = token_log_probs(reference_logits, labels)
    keep = mask[0]  # position t predicts token t + 1; keep the response's
    kl = next_token_kl(policy_logits[0, :-1], reference_logits[0, :-1])[keep]
    policy_logps, reference_logps = policy_logps[0][keep], reference_logps[0][keep]
    response_ids = [example["input_ids"][t + 1] for t in keep.nonzero().flatten().tolist()]
    return PolicyShift(
        tokens=token_texts(tokenizer, response_ids),
        policy_log_probs=policy_logps.tolist(),
        reference_log_probs=reference_logps.tolist(),
        log_prob_change=kl_estimate("k1", policy_logps, reference_logps).tolist(),
        next_token_kl=kl.tolist(),
    )
