"""Write the source of the experiment notebooks (no outputs); `make reproduce` executes them.

The notebooks are thin: a parameters cell (papermill), one call into relnas, tables and figures.
Run `python tools/build_notebooks.py` after changing this file, then `make reproduce`.
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
CHECK = {"tags": ["nbval-check-output"]}
PARAMS = {"tags": ["parameters"]}
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
          "language_info": {"name": "python"}}


def experiment_notebook(name: str, dataset: str, title: str, intro: str, params: str,
                        extra: str = "", call_args: str = ""):
    cells = [
        new_markdown_cell(f"# {title}\n\n{intro}\n\nRerun with other parameters, e.g. "
                          f"`papermill notebooks/{name}.ipynb out.ipynb -k python3 -p seeds '[0, 1]'`"
                          " (see the README)."),
        new_code_cell(params, metadata=PARAMS),
        new_code_cell(
            "from IPython.display import Markdown, display\n\n"
            "from relnas import report\n"
            "from relnas.plans import run_experiment\n\n"
            f"runs = run_experiment({dataset!r}, profile=profile, seeds=seeds, relaxations=relaxations,\n"
            "                      lambdas=lambdas, learned_precision=learned_precision, order=order,\n"
            "                      epochs=epochs, retrain_epochs=retrain_epochs, device=device,\n"
            "                      results_dir=results_dir, progress=progress, workers=workers,\n"
            f"                      recompute=recompute, checkpoint_interval=10.0{call_args})\n"
            "print(f'{len(runs)} runs')"),
        new_markdown_cell("## Results\n\nTest metric as mean ± std over seeds; for the relnas rows the "
                          "structural prior strength lambda is the one with the best mean *validation* "
                          "score. Parameters are those of the derived (or pruned) model; times are wall "
                          "clock on the device named."),
        new_code_cell(
            "summary = report.summary_table(runs)\n"
            "table = report.format_table(summary)\n"
            f"name = report.profile_name({dataset!r}, profile)  # files {dataset}_*; {dataset}_<profile>_* for other profiles\n"
            "report.write_table(table, name)\n"
            "print(table.to_markdown(index=False))", metadata=CHECK),
        new_markdown_cell("Published anchors (method.md), for orientation; they come from other "
                          "protocols and hardware."),
        new_code_cell(f"print(report.anchors({dataset!r}).to_markdown(index=False))", metadata=CHECK),
        new_markdown_cell("## Figures\n\nAccuracy against size, with the Pareto front over lambda and "
                          "methods; structure weights over the search; collapse diagnostics; learned "
                          "precisions; derived architectures; time per method."),
        new_code_cell("fig = report.plot_pareto(runs)\nreport.savefig(fig, name + '_pareto')\nfig"),
        new_code_cell(
            "selected = report.selected_runs(runs)\n"
            "searched = selected[selected['method'] == 'search']\n"
            "seed0 = int(runs['seed'].min())  # the per-seed figures show this seed\n"
            "for suffix, part in report.by_space(searched).items():  # one figure per search space\n"
            "    trajectories = report.read_per_label(part, report.read_trajectory, seed=seed0)\n"
            "    fig = report.plot_structure_trajectories(trajectories, seed=seed0)\n"
            "    report.savefig(fig, name + '_structure_weights' + suffix)\n"
            "    display(fig)"),
        new_code_cell(
            "for suffix, part in report.by_space(searched).items():\n"
            "    histories = report.read_per_label(part, report.read_history, seed=seed0)\n"
            "    fig = report.plot_collapse({k: h[h['phase'] == 'search'] for k, h in histories.items()},\n"
            "                               seed=seed0)\n"
            "    report.savefig(fig, name + '_collapse' + suffix)\n"
            "    display(fig)"),
        new_code_cell(
            "learned = searched[searched['learned_precision']]\n"
            "fig = report.plot_precisions(report.read_per_label(learned, report.read_precisions, seed=seed0))\n"
            "report.savefig(fig, name + '_precisions')\nfig"),
        new_code_cell(
            "genotypes = report.read_per_label(selected[selected['method'].isin(['search', 'random'])],\n"
            "                                  report.read_genotype, seed=seed0)\n"
            "for label, genotype in genotypes.items():\n"
            "    fig = report.plot_genotype(genotype, title=f'{label}, seed {seed0}')\n"
            "    report.savefig(fig, name + '_architecture_' + report.slug(label))\n"
            "    display(fig)"),
        new_code_cell("fig = report.plot_times(runs)\nreport.savefig(fig, name + '_times')\nfig"),
    ]
    if extra:
        cells.append(new_code_cell(extra))
    cells += [
        new_markdown_cell("## Relevance\n\nThe (edge, op) parameter groups of each learned-A search "
                          "(all seeds), removed least relevant first by structure mass, by learned "
                          "precision A (large A first), by weight magnitude and at random; test "
                          "metric of the supernet at the mean structure without and after a short "
                          "retrain (`relnas.relevance`)."),
        new_code_cell("from relnas import relevance\nfrom relnas.plans import profile_results_dir\n\n"
                      "curves = relevance.curves(runs, results_dir=profile_results_dir(profile, results_dir),\n"
                      "                          workers=workers)\n"
                      "fig = report.plot_relevance(curves)\n"
                      "report.savefig(fig, name + '_relevance')\nfig"),
        new_markdown_cell("## The paper's claims\n\nThe lambda sweep of the size prior (fixed A, first "
                          "order: median parameters of the derived model and mean test metric per "
                          "lambda), then each claim of method.md 7 with its evidence and verdict; the "
                          "rules of the verdicts are in `relnas.claims`."),
        new_code_cell("from relnas import claims\n\n"
                      "print(claims.sweep(runs).to_markdown(index=False, floatfmt='.4g'))\n"
                      "verdicts = claims.claims_table(runs, curves)\n"
                      "report.write_table(verdicts, name + '_claims')\n"
                      "print(verdicts.to_markdown(index=False))", metadata=CHECK),
    ]
    return new_notebook(cells=cells, metadata=KERNEL)


BOSTON_PARAMS = """# Parameters (papermill): the default runs the full Boston protocol on 2 CPU cores.
profile = "default"                     # "default" or "smoke"
relaxations = ["dirichlet", "gumbel"]   # structural priors of relnas
lambdas = [0, 0.1, 1, 10, 100]          # the size prior's sweep; per method chosen on validation
seeds = [0, 1, 2, 3, 4]
epochs = None                           # search epochs (None: profile default)
retrain_epochs = None                   # retrain epochs (None: profile default)
learned_precision = [False, True]       # True: learned vs fixed weight-prior precisions A too
order = 1                               # hypergradient order of relnas without learned A
device = None                           # "cpu", "cuda", "auto"; None: the profile's (cpu)
results_dir = None                      # None: env RELNAS_RESULTS or results/
progress = False                        # tqdm progress bars
workers = 2                             # runs in parallel processes (2 cores, 1 thread each)
recompute = False                       # True: rerun every config even if it is stored
"""

def _replace(text: str, *pairs: tuple[str, str]) -> str:
    """``text`` with each ``(old, new)`` replaced; an ``old`` that is not there is an error."""
    for old, new in pairs:
        if old not in text:
            raise ValueError(f"build_notebooks: {old!r} not found; update the replacement")
        text = text.replace(old, new)
    return text


MNIST_PARAMS = _replace(
    BOSTON_PARAMS,
    ("# Parameters (papermill): the default runs the full Boston protocol on 2 CPU cores.",
     "# Parameters (papermill): the default profile searches the MLP DAG on 2,500 + 2,500 images\n"
     "# and retrains on all 50,000, and a small conv cell on 1,000 images (CPU); profile=\"paper\" is the DARTS conv\n"
     "# cell for a GPU (device=\"cuda\"; hours per seed, see the README)."),
    ("None: the profile's (cpu)", "None: cpu; paper: cuda"),
    ('"default" or "smoke"', '"default", "smoke" or "paper"'),
    ("lambdas = [0, 0.1, 1, 10, 100]", "lambdas = [0, 1, 100]         "),
    ("order = 1 ", "conv_cell = True                        # also the profile's small conv cell "
     "(DARTS, relnas)\norder = 1 "))


def paper_notebook():
    cells = [
        new_markdown_cell("# The paper's tables and figures\n\nBuilt from the stored results of every "
                          "dataset (`results/`), without recomputing anything. Run `01_boston` and "
                          "`02_mnist` (and the CIFAR-10 runs on a GPU) first."),
        new_code_cell("results_dir = None   # None: env RELNAS_RESULTS (and RELNAS_RESULTS_READ) or results/\n"
                      "profile = \"default\"   # the runs of another profile (\"paper\") are in <results>/<profile>/",
                      metadata=PARAMS),
        new_code_cell("import pandas as pd\n\nfrom relnas import report\n"
                      "from relnas.plans import load_runs, profile_results_dir\n\n"
                      "runs = load_runs(results_dir=profile_results_dir(profile, results_dir))\n"
                      "print(runs.groupby('dataset').size().to_string())", metadata=CHECK),
        new_code_cell("summary = report.summary_table(runs)\n"
                      "for dataset, part in summary.groupby('dataset', sort=False):\n"
                      "    table = report.format_table(part)\n"
                      "    report.write_table(table, report.profile_name(f'paper_{dataset}', profile))\n"
                      "    print(f'### {dataset}')\n"
                      "    print(table.to_markdown(index=False))\n"
                      "    print()", metadata=CHECK),
        new_code_cell("print(report.anchors().to_markdown(index=False))", metadata=CHECK),
        new_code_cell("fig = report.plot_pareto(runs)\n"
                      "report.savefig(fig, report.profile_name('paper_pareto', profile))\nfig"),
        new_code_cell("fig = report.plot_times(runs)\n"
                      "report.savefig(fig, report.profile_name('paper_times', profile))\nfig"),
    ]
    return new_notebook(cells=cells, metadata=KERNEL)


def main():
    nbs = {
        "01_boston": experiment_notebook(
            "01_boston", "boston", "Boston housing: relevance of MLP structure",
            "Every method of the paper on Boston housing (506 rows, 13 features; see the README for "
            "the ethical note on feature B): the expert 13-50-50-1 MLP, random search, magnitude "
            "pruning, DARTS (1st/2nd order) and relnas with Dirichlet and Gumbel structural priors, "
            "with fixed or learned weight precisions A, over several seeds. Test RMSE is in $1000s.",
            BOSTON_PARAMS),
        "02_mnist": experiment_notebook(
            "02_mnist", "mnist", "MNIST: relevance of network structure",
            "The same methods on MNIST: LeNet-300-100 and LeNet-5 as experts, the MLP DAG space in "
            "the default profile (searched on 2,500 + 2,500 images, every derived and expert net "
            "retrained on all 50,000 training images, CPU) and beside it a small conv "
            "cell (1,000 images; DARTS 1st order and relnas at lambda 0.1, rows marked "
            "\"(conv cell)\"); the `paper` profile searches the DARTS conv cell on 10,000 images and "
            "retrains on all 50,000 (GPU, `device=\"cuda\"`; its runs go to `results/paper/`, its "
            "files are named `mnist_paper_*`).",
            MNIST_PARAMS, call_args=",\n                      conv_cell=conv_cell"),
        "04_paper": paper_notebook(),
    }
    for name, nb in nbs.items():
        for i, cell in enumerate(nb.cells):  # stable ids: a rebuild changes no unchanged cell
            cell.id = f"cell-{i:02d}"
        nbformat.write(nb, ROOT / "notebooks" / f"{name}.ipynb")


if __name__ == "__main__":
    main()
