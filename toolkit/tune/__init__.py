"""Device-in-the-loop tuning: propose, build, measure on the devices, judge, store; resume."""

from toolkit.tune.budgets import BudgetRequest
from toolkit.tune.config import TuneConfig, load_run
from toolkit.tune.runner import run_tune

__all__ = ["BudgetRequest", "TuneConfig", "load_run", "run_tune"]
