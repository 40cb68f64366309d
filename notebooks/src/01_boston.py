# %% [markdown]
# # Boston housing: relevance of MLP structure
#
# Every method of the paper on Boston housing (506 rows, 13 features; see the README for the ethical note on feature B): the expert 13-50-50-1 MLP, random search, magnitude pruning, DARTS (1st/2nd order) and relnas with Dirichlet and Gumbel structural priors, with fixed or learned weight precisions A, over several seeds. Test RMSE is in $1000s.
#
# Rerun with other parameters, e.g. `papermill notebooks/01_boston.ipynb out.ipynb -k python3 -p seeds '[0, 1]'` (see the README).

# %% tags=["parameters"]
# Parameters (papermill): the default runs the full Boston protocol on 2 CPU cores.
profile = "default"                     # "default" or "smoke"
relaxations = ["dirichlet", "gumbel"]   # structural priors of relnas
lambdas = [0, 0.1, 1, 10, 100]          # the size prior's sweep; per method chosen on validation
seeds = [0, 1, 2, 3, 4]
size_seeds = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
              26, 27, 28, 29]           # claim 1's more seeds of the lambda sweeps: searched
                                        # and counted, not retrained ([] for none)
epochs = None                           # search epochs (None: profile default)
retrain_epochs = None                   # retrain epochs (None: profile default)
learned_precision = [False, True]       # True: learned vs fixed weight-prior precisions A too
order = 1                               # hypergradient order of relnas without learned A
device = None                           # "cpu", "cuda", "auto"; None: the profile's (cpu)
results_dir = None                      # None: env RELNAS_RESULTS or results/
progress = False                        # tqdm progress bars
workers = 2                             # runs in parallel processes (2 cores, 1 thread each)
population = "eager"                    # MLP searches differing in seed / lambda share one
                                        # vectorized step: "eager", "compiled" or "off"
recompute = False                       # True: rerun every config even if it is stored


# %%
from IPython.display import display

from relnas import report, views
from relnas.notebooks import check_parameters
from relnas.plans import run_experiment

check_parameters(globals(), run_experiment, 'config')  # a mistyped -p name stops here

# %%
all_runs = run_experiment('boston', profile=profile, seeds=seeds, relaxations=relaxations,
                          lambdas=lambdas, learned_precision=learned_precision, order=order,
                          epochs=epochs, retrain_epochs=retrain_epochs, device=device,
                          results_dir=results_dir, progress=progress, workers=workers,
                          population=population, recompute=recompute, checkpoint_interval=10.0,
                          size_seeds=size_seeds)
runs = all_runs[all_runs['retrained']]  # every table and figure; claim 1 reads all_runs
seed = int(runs['seed'].min())  # the figures of one seed show this one
print(f'{len(runs)} runs')

# %% [markdown]
# ## Results
#
# Test metric as mean ± std over seeds; for the relnas rows the structural prior strength lambda is the one with the best mean *validation* score. Parameters are those of the derived (or pruned) model; times are wall clock on the device named. Magnitude pruning and "Random search (matched size)" run at every size the lambda sweep derived on each seed, so their rows average over those sizes; the sweep table at the end compares them lambda by lambda.

# %% tags=["nbval-check-output"]
summary = report.summary_table(runs)
table = report.format_table(summary)
name = report.profile_name('boston', profile)  # files boston_*; boston_<profile>_* for other profiles
report.write_table(table, name)
views.table(table)

# %% [markdown]
# Published anchors (method.md), for orientation; they come from other protocols and hardware.

# %% tags=["nbval-check-output"]
views.table(report.anchors('boston'))

# %% [markdown]
# ## Figures
#
# Accuracy against size, with the Pareto front over lambda and methods; structure weights over the search; collapse diagnostics; learned precisions; derived architectures; time per method.

# %%
views.pareto(runs, name)

# %% [markdown]
# The size/accuracy front of one seed: each lambda sweep of the size prior (per vertex, fixed A) as a line over lambda, with magnitude pruning of the expert and random search run at exactly the sizes that seed's sweep derived (same data split), and the experts.

# %%
views.front(runs, name, seed=seed)

# %% [markdown]
# One seed's searches (lambda selected per method): the mean structure weights over the search, the normalized entropy and parameter-free leaders (collapse diagnostics), the learned precisions, and the derived architectures side by side.

# %%
views.structure_weights(runs, name, seed=seed)

# %%
views.collapse(runs, name, seed=seed)

# %%
views.precisions(runs, name, seed=seed)

# %%
views.architectures(runs, name, seed=seed)

# %%
views.times(runs, name)

# %% [markdown]
# ## Relevance
#
# The (edge, op) parameter groups of each learned-A search (all seeds), removed least relevant first by structure mass, by learned precision A (large A first), by weight magnitude and at random; test metric of the supernet at the mean structure without and after a short retrain (`relnas.relevance`).

# %%
from relnas import relevance
from relnas.plans import profile_results_dir

curves = relevance.curves(runs, results_dir=profile_results_dir(profile, results_dir),
                          workers=workers)
views.relevance(curves, name)

# %% [markdown]
# ## The paper's claims
#
# The lambda sweep of the size prior (fixed A, first order), per lambda: the median and mean parameters of the derived model over 30 seeds, the 5 retrained ones (`seeds`) and 25 size seeds (`size_seeds`: searched and counted, not retrained), with every seed's size and how many seeds derived it (`sizes`); the mean test metric and each retrained seed's size (`params_by_seed`), beside magnitude pruning and random search at the same sizes and seeds. The size seeds are there because a seed's net at a weak lambda is one of a few modes of about equal probability, so a median of five seeds moves by a whole mode (BENCHMARKS.md, "Thirty held-out seeds"); the size needs only the search. Then each claim of method.md 7 with its evidence and verdict; the rules of the verdicts are in `relnas.claims`: claim 1 reads every seed of the sweep and also gives the rank trend over all its runs (Kendall's tau between lambda and size, with a permutation p-value; `claims.size_trend`), the other claims the retrained runs.

# %% tags=["nbval-check-output"]
from relnas import claims

verdicts = claims.claims_table(all_runs, curves)
report.write_table(verdicts, name + '_claims')
display(views.table(claims.sweep(all_runs).round(4)), views.table(verdicts))
