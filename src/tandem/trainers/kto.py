"""KTO lives with the rest of the DPO family in `tandem.trainers.dpo` (`tandem dpo --loss kto`); these names stay here."""

from tandem.trainers.dpo import KTOTrainer, run_kto, with_mismatched_partners

__all__ = ["KTOTrainer", "run_kto", "with_mismatched_partners"]
