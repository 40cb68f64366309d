"""Reporting under one name, as the notebooks use it: the runs table, tables, figures.

Nothing is defined here; each name lives in the module of its job: ``relnas.runs`` (the runs
table and the files of a run folder), ``relnas.tables`` (summaries and their files),
``relnas.figures`` (style, colours, ``savefig``, result plots), ``relnas.diagnostics`` (search
diagnostics and architecture drawings). Importing it does nothing else (no style is applied,
seaborn is not imported).
"""
from relnas.diagnostics import (plot_collapse, plot_genotype, plot_precisions,
                                plot_structure_trajectories, trajectory_array)
from relnas.figures import (label_colors, pareto_front, plot_front, plot_pareto, plot_relevance,
                            plot_times, savefig, set_style)
from relnas.runs import (by_space, load_runs, profile_name, read_genotype, read_history,
                         read_per_label, read_precisions, read_trajectory, selected_runs, slug,
                         sort_rows)
from relnas.store import figures_dir, tables_dir
from relnas.tables import (PUBLISHED, anchors, format_mean_std, format_seconds, format_table,
                           summary_table, write_table)

__all__ = [
    "PUBLISHED", "anchors", "by_space", "figures_dir", "format_mean_std", "format_seconds",
    "format_table", "label_colors", "load_runs", "pareto_front", "plot_collapse", "plot_genotype",
    "plot_front", "plot_pareto", "plot_precisions", "plot_relevance",
    "plot_structure_trajectories", "plot_times", "profile_name",
    "read_genotype", "read_history", "read_per_label", "read_precisions", "read_trajectory",
    "savefig", "selected_runs", "set_style", "slug", "sort_rows", "summary_table", "tables_dir",
    "trajectory_array", "write_table"]
