# %% [markdown]
# # The paper's tables and figures
#
# Built from the stored results of every dataset (`results/`), without recomputing anything. Run `01_boston` and `02_mnist` (and the CIFAR-10 runs on a GPU) first.

# %% tags=["parameters"]
results_dir = None   # None: env RELNAS_RESULTS (and RELNAS_RESULTS_READ) or results/
profile = "default"   # the runs of another profile ("paper") are in <results>/<profile>/

# %% tags=["nbval-check-output"]
import pandas as pd

from relnas import report
from relnas.plans import load_runs, profile_results_dir

runs = load_runs(results_dir=profile_results_dir(profile, results_dir))
print(runs.groupby('dataset').size().to_string())

# %% tags=["nbval-check-output"]
summary = report.summary_table(runs)
for dataset, part in summary.groupby('dataset', sort=False):
    table = report.format_table(part)
    report.write_table(table, report.profile_name(f'paper_{dataset}', profile))
    print(f'### {dataset}')
    print(table.to_markdown(index=False))
    print()

# %% tags=["nbval-check-output"]
print(report.anchors().to_markdown(index=False))

# %%
fig = report.plot_pareto(runs)
report.savefig(fig, report.profile_name('paper_pareto', profile))
fig

# %%
fig = report.plot_times(runs)
report.savefig(fig, report.profile_name('paper_times', profile))
fig
