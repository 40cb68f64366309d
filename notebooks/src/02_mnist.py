# %% [markdown]
# # MNIST: relevance of network structure
#
# The same methods on MNIST: LeNet-300-100 and LeNet-5 as experts, the MLP DAG space in the default profile (searched on 2,500 + 2,500 images, every derived and expert net retrained on all 50,000 training images, CPU) and beside it a small conv cell (1,000 images; DARTS 1st order and relnas at lambda 0.1, rows marked "(conv cell)"); the `paper` profile searches the DARTS conv cell on 10,000 images and retrains on all 50,000 (GPU, `device="cuda"`; its runs go to `results/paper/`, its files are named `mnist_paper_*`).
#
# Rerun with other parameters, e.g. `papermill notebooks/02_mnist.ipynb out.ipynb -k python3 -p seeds '[0, 1]'` (see the README).

# %% tags=["parameters"]
# Parameters (papermill): the default profile searches the MLP DAG on 2,500 + 2,500 images
# and retrains on all 50,000, and a small conv cell on 1,000 images (CPU); profile="paper" is the DARTS conv
# cell for a GPU (device="cuda"; hours per seed, see the README).
profile = "default"                     # "default", "smoke" or "paper"
relaxations = ["dirichlet", "gumbel"]   # structural priors of relnas
lambdas = [0, 1, 100]                   # the size prior's sweep; per method chosen on validation
seeds = [0, 1, 2, 3, 4]
epochs = None                           # search epochs (None: profile default)
retrain_epochs = None                   # retrain epochs (None: profile default)
learned_precision = [False, True]       # True: learned vs fixed weight-prior precisions A too
conv_cell = True                        # also the profile's small conv cell (DARTS, relnas)
order = 1                               # hypergradient order of relnas without learned A
device = None                           # "cpu", "cuda", "auto"; None: cpu; paper: cuda
results_dir = None                      # None: env RELNAS_RESULTS or results/
progress = False                        # tqdm progress bars
workers = 2                             # runs in parallel processes (2 cores, 1 thread each)
recompute = False                       # True: rerun every config even if it is stored


# %%
from IPython.display import Markdown, display

from relnas import report
from relnas.plans import run_experiment

runs = run_experiment('mnist', profile=profile, seeds=seeds, relaxations=relaxations,
                      lambdas=lambdas, learned_precision=learned_precision, order=order,
                      epochs=epochs, retrain_epochs=retrain_epochs, device=device,
                      results_dir=results_dir, progress=progress, workers=workers,
                      recompute=recompute, checkpoint_interval=10.0,
                      conv_cell=conv_cell)
print(f'{len(runs)} runs')

# %% [markdown]
# ## Results
#
# Test metric as mean ± std over seeds; for the relnas rows the structural prior strength lambda is the one with the best mean *validation* score. Parameters are those of the derived (or pruned) model; times are wall clock on the device named.

# %% tags=["nbval-check-output"]
summary = report.summary_table(runs)
table = report.format_table(summary)
name = report.profile_name('mnist', profile)  # files mnist_*; mnist_<profile>_* for other profiles
report.write_table(table, name)
print(table.to_markdown(index=False))

# %% [markdown]
# Published anchors (method.md), for orientation; they come from other protocols and hardware.

# %% tags=["nbval-check-output"]
print(report.anchors('mnist').to_markdown(index=False))

# %% [markdown]
# ## Figures
#
# Accuracy against size, with the Pareto front over lambda and methods; structure weights over the search; collapse diagnostics; learned precisions; derived architectures; time per method.

# %%
fig = report.plot_pareto(runs)
report.savefig(fig, name + '_pareto')
fig

# %%
selected = report.selected_runs(runs)
searched = selected[selected['method'] == 'search']
seed0 = int(runs['seed'].min())  # the per-seed figures show this seed
for suffix, part in report.by_space(searched).items():  # one figure per search space
    trajectories = report.read_per_label(part, report.read_trajectory, seed=seed0)
    fig = report.plot_structure_trajectories(trajectories, seed=seed0)
    report.savefig(fig, name + '_structure_weights' + suffix)
    display(fig)

# %%
for suffix, part in report.by_space(searched).items():
    histories = report.read_per_label(part, report.read_history, seed=seed0)
    fig = report.plot_collapse({k: h[h['phase'] == 'search'] for k, h in histories.items()},
                               seed=seed0)
    report.savefig(fig, name + '_collapse' + suffix)
    display(fig)

# %%
learned = searched[searched['learned_precision']]
fig = report.plot_precisions(report.read_per_label(learned, report.read_precisions, seed=seed0))
report.savefig(fig, name + '_precisions')
fig

# %%
genotypes = report.read_per_label(selected[selected['method'].isin(['search', 'random'])],
                                  report.read_genotype, seed=seed0)
for label, genotype in genotypes.items():
    fig = report.plot_genotype(genotype, title=f'{label}, seed {seed0}')
    report.savefig(fig, name + '_architecture_' + report.slug(label))
    display(fig)

# %%
fig = report.plot_times(runs)
report.savefig(fig, name + '_times')
fig

# %% [markdown]
# ## Relevance
#
# The (edge, op) parameter groups of each learned-A search (all seeds), removed least relevant first by structure mass, by learned precision A (large A first), by weight magnitude and at random; test metric of the supernet at the mean structure without and after a short retrain (`relnas.relevance`).

# %%
from relnas import relevance
from relnas.plans import profile_results_dir

curves = relevance.curves(runs, results_dir=profile_results_dir(profile, results_dir),
                          workers=workers)
fig = report.plot_relevance(curves)
report.savefig(fig, name + '_relevance')
fig

# %% [markdown]
# ## The paper's claims
#
# The lambda sweep of the size prior (fixed A, first order: median parameters of the derived model and mean test metric per lambda), then each claim of method.md 7 with its evidence and verdict; the rules of the verdicts are in `relnas.claims`.

# %% tags=["nbval-check-output"]
from relnas import claims

print(claims.sweep(runs).to_markdown(index=False, floatfmt='.4g'))
verdicts = claims.claims_table(runs, curves)
report.write_table(verdicts, name + '_claims')
print(verdicts.to_markdown(index=False))
