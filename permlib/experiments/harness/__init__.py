"""The experiment harness every runner shares.

* :mod:`.config`: a config dataclass per experiment; the command line derived from it.
* :mod:`.train`: :func:`fit`, the one training loop (checkpoints, schedulers, devices).
* :mod:`.results`: :class:`ResultsStore`, cells keyed by grid axes, stale-config checks.
* :mod:`.grid`: :func:`run_grid`, run the missing cells of a grid, resumable and shareable.
* :mod:`.cli`: the options every runner shares, plus one per config field.
* :mod:`.experiment`: :class:`Experiment`, the base class of every runner (tables, grid, verify,
  command line).
* :mod:`.compare`: paper ⋈ ours as a pandas DataFrame (paper / ours / gap / status).
* :mod:`.provenance`: command, seed, commit, versions, machine, device, wall time.
* :mod:`.paths`: results, checkpoint and paper-table locations (command line, environment, CWD).
* :mod:`.distributed`: rank, world size and per-rank generators under torchrun.

Experiments import the harness; the harness never imports an experiment.
"""

from permlib.experiments.harness.cli import (
    Selection,
    add_run_options,
    experiment_parser,
    selection_from_args,
)
from permlib.experiments.harness.compare import (
    compare,
    describe,
    load_paper_tables,
    markdown_table,
    summarize,
    summary_table,
)
from permlib.experiments.harness.config import (
    add_config_arguments,
    config_dict,
    config_from_dict,
    parse_config_arguments,
)
from permlib.experiments.harness.distributed import generators, is_main, rank, world_size
from permlib.experiments.harness.experiment import Experiment, NoArtifactsError, model_record
from permlib.experiments.harness.grid import parse_cell, run_grid, select_cells
from permlib.experiments.harness.paths import checkpoint_dir, paper_tables_path, results_dir
from permlib.experiments.harness.provenance import code_commit, command_line, git_commit, provenance
from permlib.experiments.harness.results import (
    SCHEMA_VERSION,
    ResultsFileError,
    ResultsStore,
    StaleCellError,
    cell_id,
    select_records,
)
from permlib.experiments.harness.train import (
    CheckpointWarning,
    FitResult,
    cosine_decay,
    cosine_schedule,
    fit,
    learning_curve,
    loss_trend,
    torch_threads,
)

__all__ = [
    "SCHEMA_VERSION",
    "CheckpointWarning",
    "Experiment",
    "NoArtifactsError",
    "Selection",
    "FitResult",
    "ResultsFileError",
    "ResultsStore",
    "StaleCellError",
    "add_config_arguments",
    "add_run_options",
    "cell_id",
    "checkpoint_dir",
    "command_line",
    "compare",
    "config_dict",
    "code_commit",
    "config_from_dict",
    "cosine_decay",
    "cosine_schedule",
    "describe",
    "experiment_parser",
    "fit",
    "generators",
    "git_commit",
    "is_main",
    "learning_curve",
    "loss_trend",
    "load_paper_tables",
    "model_record",
    "markdown_table",
    "paper_tables_path",
    "parse_cell",
    "parse_config_arguments",
    "provenance",
    "rank",
    "results_dir",
    "run_grid",
    "select_cells",
    "select_records",
    "selection_from_args",
    "summarize",
    "summary_table",
    "torch_threads",
    "world_size",
]
