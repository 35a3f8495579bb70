"""Fuzz command lines/configs, server requests and reward functions with thousands of seeded cases; print counts.

    python benchmarks/fuzz_inputs.py configs --cases 2000     # ~3 min
    python benchmarks/fuzz_inputs.py requests --cases 3000    # ~6 min (a live tiny-model server)
    python benchmarks/fuzz_inputs.py rewards --cases 3000     # ~2 min (each case in both --reward-errors modes)

The generators and the rule each case must keep are in `tests/fuzz/{configs,requests,rewards}.py`
(data files: `benchmarks/fuzz_data.py`). Outcomes other than "refused"/"ok" are failures; the first
example of each is printed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_model(folder: Path) -> Path:
    from tandem.models.factory import ModelSize, build_model
    from tandem.models.tokenizer import train_tokenizer
    from tandem.tasks import get_task

    tokenizer = train_tokenizer(get_task("sentiment").pretrain_corpus(600, seed=0), vocab_size=512)
    size = ModelSize(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128, vocab_size=512)
    build_model(size, tokenizer, arch="llama", seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["configs", "requests", "rewards"])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rng, outcomes, first, kinds = random.Random(args.seed), Counter(), {}, Counter()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = tiny_model(scratch / "model")
        if args.kind == "configs":
            from fuzz import configs

            work = scratch / "work"
            work.mkdir()
            os.chdir(work)
            for number in range(args.cases):
                case = configs.make_case(rng, work, number, model)
                outcome, detail = configs.run_case(case, work)
                outcomes[outcome] += 1
                kinds[case.command] += 1
                first.setdefault(outcome, f"{case.name}: {detail}")
        elif args.kind == "requests":
            from fuzz import requests
            from tandem.serve import BackgroundServer, ServeConfig, create_app

            config = ServeConfig(model=model, model_name="tiny", api_key="KEY1", max_tokens=64, max_n=4,
                                 max_body_bytes=65536, max_request_tokens=2048, log_level="critical")
            with BackgroundServer(create_app(config)) as server:
                for number in range(args.cases):
                    case = requests.make_case(rng, number)
                    outcome, detail = requests.run_case(case, server.url, "KEY1")
                    outcomes[outcome] += 1
                    kinds[f"status {detail[:3]}" if outcome == "ok" else outcome] += 1
                    first.setdefault(outcome, f"{case.name}: {detail}")
                good = requests.run_case(requests.RequestCase("good", body=requests._dumps(requests.GOOD_COMPLETION)),
                                         server.url, "KEY1")
                print(f"a good request afterwards: {good}")
        else:
            from fuzz import rewards

            for number in range(args.cases):
                n = rng.randint(1, 6)
                case = rewards.make_case(rng, n)
                for mode in ("raise", "skip"):
                    outcome, detail = rewards.run_case(case, mode, n)
                    outcomes[outcome] += 1
                    kinds[case.name.split(" ")[0]] += 1
                    first.setdefault(outcome, f"{case.name} ({mode}): {detail}")
    print(f"{args.kind}: {args.cases} cases, seed {args.seed}, {time.perf_counter() - started:.0f} s")
    for outcome, count in outcomes.most_common():
        print(f"  {outcome:22s} {count:6d}   e.g. {first[outcome][:160]}")
    print("  by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    sys.exit(0 if set(outcomes) <= {"ok", "refused"} else 1)


if __name__ == "__main__":
    main()
