"""Planning in a world model (an LM one, as in Hao et al. 2023, or the true simulator) and Dyna-style learning
from imagined transitions (Sutton 1990).

Every planner here talks to a *transition model* (`TransitionModel`): `predict(states, actions)` returns one
`Prediction` (next state, reward, done) per pair, in a batch, and `observe(env, obs)` says which model state a
real environment is in. Two implement it: `EnvModel`, the true simulator (a private copy of a toy-text env
reset to any state), and `tandem.lm_inside_agents.world_model.LMWorldModel`, a language model over rendered text. So the
same planner runs on both, and the comparison measures only the model.

* `tree_search_action`: breadth-first expansion of the states reachable within `horizon` steps (each state
  expanded once, at most `max_nodes`), then exact finite-horizon dynamic programming on that graph.
* `random_shooting_action`: model-predictive control by random shooting: `n_sequences` random action
  sequences rolled out in the model, first action of the best discounted return.
* `q_learning`: tabular Q-learning on real steps; with a `model` and `planning_steps > 0` it is Dyna (Sutton
  1990): after each real step, `planning_steps` imagined (s, a) -> (s', r, done) updates from the model, with
  s drawn from states seen for real and a drawn from every action (the model answers for untried actions too).
  `remember=True` keeps what each pair tried for real did (Dyna-Q's table model) and replays that instead of the
  model's answer; with no `model` it is Dyna-Q itself (imagined updates replay tried pairs only).
* `model_accuracy`: a transition model scored against the true simulator on every (state, action) of a toy-text
  env: where a model's mistakes are, before Dyna repeats them.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from tandem.lm_inside_agents.evaluation import play_episodes
from tandem.lm_inside_agents.world_model import Prediction


class TransitionModel(Protocol):
    n_actions: int

    def predict(self, states: Sequence[Any], actions: Sequence[int]) -> list[Prediction]: ...

    def observe(self, env: gym.Env, obs: Any) -> Any: ...


class EnvModel:
    """The true simulator as a transition model: a private copy of a discrete-state env (FrozenLake, Taxi...).

    States are the env's integer state `s`; predicting sets the copy to that state and steps it, so the env
    the agent acts in is never touched. Works for Gymnasium's toy-text envs (a table `P`, the state in `s`).
    """

    def __init__(self, env: gym.Env):
        base = env.unwrapped
        if not hasattr(base, "P"):  # Gymnasium's discrete toy-text envs: transition table P, current state s
            raise ValueError(f"{type(base).__name__} is not a discrete-state toy-text env; EnvModel cannot reset it")
        self.sim = copy.deepcopy(base)
        self.n_actions = int(env.action_space.n)

    def observe(self, env: gym.Env, obs: Any) -> int:
        return int(np.asarray(obs).item())

    def predict(self, states: Sequence[int], actions: Sequence[int]) -> list[Prediction]:
        predictions = []
        for state, action in zip(states, actions):
            self.sim.s = int(state)
            next_state, reward, terminated, _, _ = self.sim.step(int(action))
            predictions.append(Prediction(int(next_state), float(reward), bool(terminated)))
        return predictions


# ---- planners ----------------------------------------------------------------------------------------
def _argmax_random_tie(values: Sequence[float], rng: random.Random) -> int:
    best = max(values)
    return rng.choice([i for i, v in enumerate(values) if v >= best - 1e-9])


def expand_graph(
    model: TransitionModel, root: Any, horizon: int, max_nodes: int = 10_000
) -> dict[Any, list[Prediction]]:
    """Breadth-first: every state reachable from `root` within `horizon - 1` steps (non-terminal, valid),
    expanded once with all actions in one batched `predict` per depth; at most `max_nodes` states."""
    graph: dict[Any, list[Prediction]] = {}
    frontier = [root]
    for _ in range(horizon):
        frontier = [s for s in dict.fromkeys(frontier) if s not in graph][: max(0, max_nodes - len(graph))]
        if not frontier:
            break
        n = model.n_actions
        predictions = model.predict([s for s in frontier for _ in range(n)], [a for _ in frontier for a in range(n)])
        next_frontier = []
        for i, state in enumerate(frontier):
            graph[state] = predictions[i * n : (i + 1) * n]
            next_frontier += [p.next_state for p in graph[state] if p.valid and not p.done]
        frontier = next_frontier
    return graph


def finite_horizon_q(graph: dict[Any, list[Prediction]], root: Any, horizon: int, gamma: float) -> list[float]:
    """Q_H(root, a) by dynamic programming on an expanded graph (the Bellman optimality backup truncated at H steps):

        Q_h(s, a) = r(s, a) + gamma * (1 - done) * max_a' Q_{h-1}(s', a'),   Q_0 = 0,

    with value 0 beyond the expanded graph and for invalid model outputs (treated as dead ends).
    """
    values: dict[Any, float] = {}
    q_root = [0.0] * len(graph[root])
    for _ in range(horizon):
        q = {s: [0.0 if not p.valid else p.reward + (0.0 if p.done else gamma * values.get(p.next_state, 0.0))
                 for p in predictions] for s, predictions in graph.items()}
        values = {s: max(row) for s, row in q.items()}
        q_root = q[root]
    return q_root


def tree_search_action(
    model: TransitionModel, state: Any, rng: random.Random, horizon: int = 8, gamma: float = 0.99, max_nodes: int = 2000
) -> int:
    """Best first action of an exhaustive, breadth-limited search over action sequences of length `horizon`."""
    graph = expand_graph(model, state, horizon, max_nodes)
    return _argmax_random_tie(finite_horizon_q(graph, state, horizon, gamma), rng)


def random_shooting_action(
    model: TransitionModel, state: Any, rng: random.Random, horizon: int = 8, gamma: float = 0.99, n_sequences: int = 64
) -> int:
    """MPC by random shooting: first action of the random sequence with the best discounted model return."""
    sequences = [[rng.randrange(model.n_actions) for _ in range(horizon)] for _ in range(n_sequences)]
    returns = [0.0] * n_sequences
    states = [state] * n_sequences
    alive = list(range(n_sequences))
    for t in range(horizon):
        if not alive:
            break
        predictions = model.predict([states[i] for i in alive], [sequences[i][t] for i in alive])
        still = []
        for i, p in zip(alive, predictions):
            if not p.valid:
                continue  # a dead end: the sequence keeps what it had
            returns[i] += gamma**t * p.reward
            states[i] = p.next_state
            if not p.done:
                still.append(i)
        alive = still
    best = _argmax_random_tie(returns, rng)
    return sequences[best][0]


PLANNERS: dict[str, Callable[..., int]] = {"tree": tree_search_action, "shooting": random_shooting_action}


def get_planner(name: str) -> Callable[..., int]:
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}; known: {', '.join(PLANNERS)}")
    return PLANNERS[name]


@dataclass
class EpisodeResult:
    ret: float
    steps: int
    success: bool


def plan_episode(
    env: gym.Env, model: TransitionModel, planner: str = "tree", seed: int = 0, max_steps: int = 100, **options
) -> EpisodeResult:
    """Act in the real `env` by replanning in `model` at every step (MPC) and taking the plan's first action.

    Success means a positive reward on the last step (reaching the goal in FrozenLake, delivering in Taxi).
    """
    plan = get_planner(planner)
    rng = random.Random(seed)
    obs, _ = env.reset(seed=seed)
    total, reward = 0.0, 0.0
    for step in range(1, max_steps + 1):
        action = plan(model, model.observe(env, obs), rng, **options)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if terminated or truncated:
            return EpisodeResult(total, step, bool(terminated and reward > 0))
    return EpisodeResult(total, max_steps, False)


# ---- Dyna ---------------------------------------------------------------------------------------------
def q_update(q: dict[Any, np.ndarray], state, action: int, reward: float, next_state, done: bool,
             alpha: float, gamma: float, n_actions: int, initial: float = 0.0) -> None:
    """Q(s, a) += alpha * (r + gamma * (1 - done) * max_a' Q(s', a') - Q(s, a)), unseen states at `initial`."""
    row = q.setdefault(state, np.full(n_actions, initial))
    target = reward if done else reward + gamma * (float(q[next_state].max()) if next_state in q else initial)
    row[action] += alpha * (target - row[action])


def greedy_action(q: dict[Any, np.ndarray], state, n_actions: int, rng: random.Random) -> int:
    return _argmax_random_tie(list(q.get(state, np.zeros(n_actions))), rng)


@dataclass
class LearningCurve:
    """Greedy-policy evaluations over real environment steps; `steps_to_solve` is the first solved point."""

    real_steps: list[int] = field(default_factory=list)
    success: list[float] = field(default_factory=list)
    imagined_updates: int = 0
    invalid_predictions: int = 0
    steps_to_solve: int | None = None


def evaluate_greedy(make_env: Callable[[], gym.Env], q, observe, n_actions: int, episodes: int, max_steps: int,
                    seed: int) -> float:
    """Success rate (a positive reward on termination) of the greedy policy of `q` (ties broken at random) over
    `episodes` episodes of at most `max_steps` steps (reset seeds seed, seed + 1, ...)."""
    rng = random.Random(seed)
    env = make_env()
    outcomes = play_episodes([env], lambda live, obs: [greedy_action(q, observe(env, obs[0]), n_actions, rng)],
                             episodes, reset_seed=lambda k: seed + k, max_steps=max_steps)
    env.close()
    return sum(o.terminated and o.last_reward > 0 for o in outcomes) / episodes


def q_learning(
    make_env: Callable[[], gym.Env],
    real_steps: int,
    model: TransitionModel | None = None,
    planning_steps: int = 0,
    alpha: float = 0.5,
    gamma: float = 0.95,
    epsilon: float = 0.2,
    eval_every: int = 50,
    eval_episodes: int = 5,
    solved_at: float = 1.0,
    max_episode_steps: int = 100,
    seed: int = 0,
    progress: bool = False,
    remember: bool = False,
    optimism: float = 0.0,
) -> LearningCurve:
    """Epsilon-greedy tabular Q-learning for `real_steps` real steps; Dyna when `model` and `planning_steps` are given.

    Q is keyed by `model.observe(env, obs)` (text for a language model, the integer state otherwise), so
    imagined next states bootstrap from the same table as real ones. `steps_to_solve` is the first number of
    real steps after which the greedy policy's success rate reaches `solved_at`.

    `remember`: every (s, a) tried for real is kept with what it did (Dyna-Q's table model, Sutton 1990), and an
    imagined update of a tried pair replays that outcome instead of asking `model`, which then answers only for
    pairs never tried (the model as a prior over what has not been seen). Without `model` that is Dyna-Q: the
    imagined updates replay tried pairs, drawn uniformly.

    `optimism`: the value of every Q(s, a) before its first update, for states seen and unseen (optimistic initial
    values, Sutton & Barto 2018 sec. 2.6). At 0 exploration is epsilon-greedy alone; at the largest return (1 on
    FrozenLake) a pair keeps its promise until tried, and imagined updates carry that promise back from the edge of
    what is known, so the agent walks to it.
    """
    rng = random.Random(seed)
    env = make_env()
    n_actions = int(env.action_space.n)
    observe = model.observe if model is not None else (lambda e, o: int(np.asarray(o).item()))
    q: dict[Any, np.ndarray] = {}
    seen: dict[Any, None] = {}
    tried: dict[tuple[Any, int], Prediction] = {}
    curve = LearningCurve()
    obs, _ = env.reset(seed=seed)
    state = observe(env, obs)
    imagine = planning_steps > 0 and (model is not None or remember)
    for step in tqdm(range(1, real_steps + 1), desc="dyna" if imagine else "q-learning", disable=not progress):
        seen.setdefault(state, None)
        action = rng.randrange(n_actions) if rng.random() < epsilon else greedy_action(q, state, n_actions, rng)
        obs, reward, terminated, truncated, _ = env.step(action)
        next_state = observe(env, obs)
        q_update(q, state, action, float(reward), next_state, bool(terminated), alpha, gamma, n_actions, optimism)
        if remember:
            tried[(state, action)] = Prediction(next_state, float(reward), bool(terminated))
        if imagine:
            if model is None:  # Dyna-Q: replay pairs tried for real
                pool = list(tried)
                pairs = [pool[rng.randrange(len(pool))] for _ in range(planning_steps)]
            else:
                pool = list(seen)
                pairs = [(pool[rng.randrange(len(pool))], rng.randrange(n_actions)) for _ in range(planning_steps)]
            asked = [pair for pair in pairs if pair not in tried]
            answers = dict(zip(asked, model.predict(*zip(*asked)))) if asked else {}
            for s, a in pairs:
                p = tried[(s, a)] if (s, a) in tried else answers[(s, a)]
                if not p.valid:
                    curve.invalid_predictions += 1
                    continue
                q_update(q, s, a, p.reward, p.next_state, p.done, alpha, gamma, n_actions, optimism)
                curve.imagined_updates += 1
        if terminated or truncated:
            obs, _ = env.reset()
            next_state = observe(env, obs)
        state = next_state
        if step % eval_every == 0:
            success = evaluate_greedy(make_env, q, observe, n_actions, eval_episodes, max_episode_steps, seed + 7919)
            curve.real_steps.append(step)
            curve.success.append(success)
            if curve.steps_to_solve is None and success >= solved_at:
                curve.steps_to_solve = step
    env.close()
    return curve


def model_accuracy(model: TransitionModel, env: gym.Env, max_pairs: int = 1000, seed: int = 0) -> dict[str, float]:
    """`model` scored against the true simulator of the toy-text `env` on every (state, action) whose state is not
    terminal (at most `max_pairs`, drawn at random): the share whose next state, reward and done it gets right,
    and, of the steps that really end with a positive reward (reaching the goal), those it answers with that
    reward, and of the steps that go on, those it says end (false ends: Dyna then cuts the value there)."""
    truth, base = EnvModel(env), env.unwrapped
    live = [s for s in range(int(base.observation_space.n))
            if not all(t[1] == s and t[3] for a in base.P[s] for t in base.P[s][a])]
    pairs = [(s, a) for s in live for a in range(truth.n_actions)]
    if len(pairs) > max_pairs:
        pairs = random.Random(seed).sample(pairs, max_pairs)
    true = truth.predict([s for s, _ in pairs], [a for _, a in pairs])
    said = model.predict([model.observe(env, s) for s, _ in pairs], [a for _, a in pairs])
    right_state = [p.valid and p.next_state == model.observe(env, t.next_state) for p, t in zip(said, true)]
    goal = [(p, t) for p, t in zip(said, true) if t.done and t.reward > 0]
    going_on = [p for p, t in zip(said, true) if not t.done]
    n = max(len(pairs), 1)
    return {
        "pairs": float(len(pairs)),
        "next_state": sum(right_state) / n,
        "reward": sum(p.valid and p.reward == t.reward for p, t in zip(said, true)) / n,
        "done": sum(p.valid and p.done == t.done for p, t in zip(said, true)) / n,
        "all_correct": sum(ok and p.reward == t.reward and p.done == t.done
                           for ok, p, t in zip(right_state, said, true)) / n,
        "goal_steps": float(len(goal)),
        "goal_steps_rewarded": float(sum(p.valid and p.reward == t.reward for p, t in goal)),
        "false_ends": float(sum(p.valid and p.done for p in going_on)),
        "steps_going_on": float(len(going_on)),
        "invalid": float(sum(not p.valid for p in said)),
    }
