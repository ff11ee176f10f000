"""Evaluation: a denoiser and classical baselines scored in HU windows on whole slices.

- :func:`evaluate` (:mod:`ldct.evaluation.core`): rows per slice and per (dose, method) means.
- :func:`write_results`, :func:`summary_table` (:mod:`ldct.evaluation.report`): CSV, JSON, figures, table.
- :func:`evaluate_run` (:mod:`ldct.evaluation.run`): what ``ldct evaluate`` does for a run or checkpoint.
"""

from ldct.evaluation.core import BASELINES, EvalResults, evaluate, summarize
from ldct.evaluation.report import summary_table, write_results

__all__ = ["BASELINES", "EvalResults", "evaluate", "evaluate_run", "summarize", "summary_table", "write_results"]


def __getattr__(name: str):
    if name == "evaluate_run":
        from ldct.evaluation.run import evaluate_run

        return evaluate_run
    raise AttributeError(name)
