"""Compare distributed optimisers in one call: a sweep over algorithms × SlowMo variants ×
workers × λ × repeats (``sweep``), and the report of its tables and figures (``report``).

Example::

    from distkeras.study import Study
    Study(model="hlf", algorithms=["single", "arsgd", "adpsgd"], slowmo=["none", "avg"],
          num_workers=[1, 2], epochs=5, out="study-hlf").run(train_df, validation=test_df)
"""
from distkeras.study.analysis import analyse, time_to_target
from distkeras.study.report import write_report
from distkeras.study.sweep import (SLOWMO, SLOWMO_BASES, TRAINERS, WINDOWED, RunConfig, Study,
                                   load_runs)

__all__ = ["Study", "RunConfig", "load_runs", "write_report", "analyse", "time_to_target",
           "TRAINERS", "SLOWMO", "SLOWMO_BASES", "WINDOWED"]
