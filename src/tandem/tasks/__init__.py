"""Built-in tasks: self-generated data and a deterministic gold reward, offline and seed-reproducible.

    from tandem.tasks import get_task
    task = get_task("sentiment", negative_fraction=0.1)
    pairs = task.preference_pairs(1000, seed=0, label_noise=0.1)

`get_task("rg:leg_counting:size=1000")` wraps a reasoning-gym dataset (the `reasoning` extra).
`TASKS` maps each registered name to its class; `register_task(name)` adds one.
"""

from tandem.tasks.base import TASKS, Task, check_task_spec, get_task, register_task
from tandem.tasks.arithmetic import ArithmeticTask
from tandem.tasks.code import CodeTask
from tandem.tasks.polite import PoliteTask
from tandem.tasks.reasoning_gym import ReasoningGymTask  # reasoning-gym itself is imported only when one is built
from tandem.tasks.sentiment import SentimentTask

__all__ = ["TASKS", "Task", "check_task_spec", "get_task", "register_task", "ArithmeticTask", "CodeTask", "PoliteTask", "ReasoningGymTask", "SentimentTask"]
