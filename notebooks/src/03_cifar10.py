# %% [markdown]
# # CIFAR-10: relevance of cell structure
#
# The paper's third experiment: the DARTS cell space on CIFAR-10, with the published DARTS_V2 cell and a ResNet-20 as experts, random search, magnitude pruning of the ResNet at the sizes the lambda sweep derived, DARTS first and second order, and relnas with the Dirichlet and the Gumbel size prior.
#
# Profiles: `cpu` (the default here) is the honest small run of the whole protocol on 2 CPU cores, about 40 minutes from empty results with its 2 seeds (25 for the runs, 15 for the relevance curves; 3 seeds take longer): a small cell (3 cells of 2 nodes, 4 ops, 8 channels) searched on 2,000 + 2,000 images for 4 epochs, every derived and expert net retrained on 4,000 images for 3 epochs. Its accuracies are those of minutes of CPU training, far below the published numbers beside them. `quick` (one GPU, minutes) and `paper` (the DARTS protocol, GPU days) need `device="cuda"`; their runs go to `results/<profile>/`, their files are named `cifar10_<profile>_*`.
#
# Test accuracy is reported on all 10,000 test images and on the first 1,000, the only ones our shared copy holds losslessly (the rest were decoded from JPEG; `exact` in the data README).
#
# Rerun with other parameters, e.g. `papermill notebooks/03_cifar10.ipynb out.ipynb -k python3 -p seeds '[0, 1, 2]'` (see the README).

# %% tags=["parameters"]
# Parameters (papermill): the cpu profile runs the whole protocol small on 2 CPU cores;
# "quick" and "paper" are for a GPU (device="cuda").
profile = "cpu"                         # "cpu", "smoke", "quick" or "paper"
relaxations = ["dirichlet", "gumbel"]   # structural priors of relnas
lambdas = [0, 10, 100]                  # the size prior's sweep; per method chosen on validation
seeds = [0, 1]                          # 2 keep the cpu profile near 40 minutes
epochs = None                           # search epochs (None: profile default)
retrain_epochs = None                   # retrain epochs (None: profile default)
learned_precision = [False]             # [False, True]: learned vs fixed A too (order 2, costly)
order = 1                               # hypergradient order of relnas without learned A
device = None                           # "cpu", "cuda", "auto"; None: the profile's
results_dir = None                      # None: env RELNAS_RESULTS or results/
progress = False                        # tqdm progress bars
workers = 2                             # runs in parallel processes (2 cores, 1 thread each)
recompute = False                       # True: rerun every config even if it is stored


# %%
from IPython.display import display

from relnas import report, views
from relnas.notebooks import check_parameters
from relnas.plans import run_experiment

check_parameters(globals(), run_experiment, 'config')  # a mistyped -p name stops here

# %%
runs = run_experiment('cifar10', profile=profile, seeds=seeds, relaxations=relaxations,
                      lambdas=lambdas, learned_precision=learned_precision, order=order,
                      epochs=epochs, retrain_epochs=retrain_epochs, device=device,
                      results_dir=results_dir, progress=progress, workers=workers,
                      recompute=recompute, checkpoint_interval=10.0)
seed = int(runs['seed'].min())  # the figures of one seed show this one
print(f'{len(runs)} runs')

# %% [markdown]
# ## Results
#
# Test accuracy as mean ± std over seeds, on all test images and on the 1,000 lossless ones; for the relnas rows lambda is the one with the best mean *validation* accuracy. Parameters and MFLOPs (one forward pass of one image, a multiply-add counted as 2) are those of the derived (or pruned, dense) network; times are wall clock on the device named.

# %% tags=["nbval-check-output"]
summary = report.summary_table(runs)
table = report.format_table(summary)
name = report.profile_name('cifar10', profile)  # files cifar10_*; cifar10_<profile>_* for GPU profiles
report.write_table(table, name)
views.table(table)

# %% [markdown]
# Published anchors (method.md), for orientation; they come from the full DARTS protocol on GPUs.

# %% tags=["nbval-check-output"]
views.table(report.anchors('cifar10'))

# %% [markdown]
# ## Figures
#
# Accuracy against size with the Pareto front; the front of one seed with the matched baselines; the structure weights over the search, collapse diagnostics (parameter-free ops leading, entropy), the derived cells (normal and reduction) and time per method.

# %%
views.pareto(runs, name)

# %%
views.front(runs, name, seed=seed)

# %%
views.structure_weights(runs, name, seed=seed)

# %%
views.collapse(runs, name, seed=seed)

# %%
views.architectures(runs, name, seed=seed)

# %%
views.times(runs, name)

# %% [markdown]
# ## Relevance
#
# The (cell kind, edge, op) parameter groups of the sweep's searches at its smallest lambda above 0 (every relaxation and seed; the plans learn no A in cells, so no precision order), removed least relevant first by structure mass, by weight magnitude and at random; a group holds that op on that edge of every cell of its kind, which share their structure weights. Test accuracy of the supernet at the mean structure without and after a short retrain (`relnas.relevance`; for the `cpu` profile one retrain epoch on the search's 2,000 images and the first 2,000 test images, `relevance.PROFILE_OPTIONS`).

# %%
from relnas import relevance
from relnas.plans import profile_results_dir

curves = relevance.curves(runs, results_dir=profile_results_dir(profile, results_dir),
                          workers=workers, **relevance.options('cifar10', profile))
views.relevance(curves, name)

# %% [markdown]
# ## The paper's claims
#
# The lambda sweep of the size prior (fixed A, first order: median parameters of the derived cell (each seed's in `params_by_seed`) and mean test accuracy per lambda, beside magnitude pruning and random search at the same sizes and seeds), then each claim of method.md 7 with its evidence and verdict (`relnas.claims`).

# %% tags=["nbval-check-output"]
from relnas import claims

verdicts = claims.claims_table(runs, curves)
report.write_table(verdicts, name + '_claims')
display(views.table(claims.sweep(runs).round(4)), views.table(verdicts))
