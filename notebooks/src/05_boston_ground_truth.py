# %% [markdown]
# # Boston: the true optimum of the search space
#
# The Boston MLP space with the paper's per-vertex rule (each of the 3 hidden vertices keeps one (edge, op) pair, the head reads their sum) has 504 architectures: few enough to retrain every one of them, per seed, with the retrain protocol of the other methods (`relnas.exhaustive`). That gives what a NAS paper rarely shows: the true size/RMSE front of the space, and how far each method's choice is from the best. Run `01_boston` first: its runs are read from the results folder.

# %% tags=["parameters"]
profile = "default"                     # "default" or "smoke"
seeds = [0, 1, 2, 3, 4]
results_dir = None                      # None: env RELNAS_RESULTS or results/
workers = 2                             # runs in parallel processes (2 cores, 1 thread each)
recompute = False                       # True: retrain every architecture again

# %%
from relnas import ground_truth, report, views
from relnas.notebooks import check_parameters
from relnas.plans import run_experiment

check_parameters(globals(), run_experiment, ground_truth.run)

# %%
runs = run_experiment('boston', profile=profile, seeds=seeds, results_dir=results_dir,
                      workers=workers)
truth = ground_truth.run('boston', profile=profile, seeds=seeds, results_dir=results_dir,
                         workers=workers, recompute=recompute)
name = report.profile_name('boston', profile)
print(f'{len(truth)} architectures trained ({truth["seed"].nunique()} seeds)')

# %% [markdown]
# ## Where each method's net ranks in the space
#
# Per method (lambda selected on validation, as in the results table), the share of the space's architectures that beat its derived net on validation and on test RMSE, median over seeds (0 % = it found the best architecture of the space). Nets outside the per-vertex family (DARTS and the per-edge sweeps keep several inputs per vertex; the experts) are ranked by their RMSE all the same.

# %% tags=["nbval-check-output"]
ranks = ground_truth.ranks(runs, truth)
report.write_table(ranks, name + '_ground_truth')
views.table(ranks)

# %% [markdown]
# ## The true front
#
# Every architecture of one seed (grey), the true Pareto front (black), and each method's derived net of the same seed.

# %%
views.ground_truth(truth, runs, name, seed=int(truth['seed'].min()))
