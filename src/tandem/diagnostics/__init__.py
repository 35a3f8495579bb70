"""What a training run watches about itself: reward hacking (proxy up, gold down), read by every RL loop."""

from tandem.diagnostics.monitor import RewardHackingMonitor, ema

__all__ = ["RewardHackingMonitor", "ema"]
