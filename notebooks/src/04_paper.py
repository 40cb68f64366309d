# %% [markdown]
# # The paper's tables and figures
#
# Built from the stored results of every dataset (`results/`), without recomputing anything. Run `01_boston` and `02_mnist` (and the CIFAR-10 runs on a GPU) first.

# %% tags=["parameters"]
results_dir = None   # None: env RELNAS_RESULTS (and RELNAS_RESULTS_READ) or results/
profile = "default"   # the runs of another profile ("paper") are in <results>/<profile>/

# %% tags=["nbval-check-output"]
import pandas as pd

from IPython.display import display

from relnas import report, views
from relnas.notebooks import check_parameters
from relnas.plans import load_runs, profile_results_dir

check_parameters(globals(), profile_results_dir)  # a mistyped -p name stops here
runs = load_runs(results_dir=profile_results_dir(profile, results_dir))
print(runs.groupby('dataset').size().to_string())

# %% tags=["nbval-check-output"]
summary = report.summary_table(runs)
tables = {dataset: report.format_table(part)
          for dataset, part in summary.groupby('dataset', sort=False)}
for dataset, table in tables.items():
    report.write_table(table, report.profile_name(f'paper_{dataset}', profile))
display(*(views.table(table, note=f'Dataset: {dataset}.') for dataset, table in tables.items()))

# %% tags=["nbval-check-output"]
views.table(report.anchors())

# %%
views.pareto(runs, report.profile_name('paper', profile))

# %%
views.times(runs, report.profile_name('paper', profile))
