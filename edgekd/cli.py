"""The ``edgekd`` command: a click group, one subcommand per stage, thin over the library.

Subcommands are imported lazily so that ``edgekd run`` on a board never pulls
torch or tensorflow, and ``edgekd --help`` stays fast. Each stage owns its
commands in its own module (see ``COMMANDS``).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import click

from edgekd import __version__
from edgekd.device.errors import EdgekdError

# name -> "module:attribute"; a command whose module is absent is simply not listed.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("edgekd.host.data.cli:data", "Synthesise, import and inspect datasets."),
    "models": ("edgekd.host.models.cli:models", "List registered models with params and MACs."),
    "train": ("edgekd.host.distill.cli:train", "Train a model (teacher or no-KD baseline) on a dataset."),
    "distill": ("edgekd.host.distill.cli:distill", "Distil a student from a teacher checkpoint."),
    "evaluate": ("edgekd.host.distill.cli:evaluate", "Per-horizon top-k / DBA of a checkpoint."),
    "metadata": ("edgekd.host.distill.cli:metadata", "Add hidden-state metadata to a teacher (data-free KD)."),
    "reproduce": ("edgekd.host.experiments.cli:reproduce", "Reproduce the papers' experiments."),
    "targets": ("edgekd.device.targets:targets", "List and show target board profiles."),
    "export": ("edgekd.host.export.cli:export", "Export checkpoints to a verified int8 bundle for a target."),
    "bundle": ("edgekd.host.export.cli:bundle", "Inspect and verify deployment bundles."),
    "run": ("edgekd.device.runtime.cli:run", "Run the multi-student runtime on a recorded drive."),
    "bench": ("edgekd.device.bench:bench", "Benchmark latency, memory and energy of a bundle."),
    "demo": ("edgekd.host.experiments.demo:demo", "The whole pipeline on the embedded default scenario."),
    "fleet": ("edgekd.host.fleet.cli:fleet", "Distilling topologies across a simulated fleet of APs (Flower)."),
}


def _module_exists(spec: str) -> bool:
    module = spec.split(":")[0]
    return importlib.util.find_spec(module) is not None


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (spec, _) in COMMANDS.items() if _module_exists(spec)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _module_exists(COMMANDS[name][0]):
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from COMMANDS so --help does not import every stage.
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgekdError as exc:
            click.echo(f"error: {exc.format()}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:   # the shell convention: 128 + SIGINT
            click.echo("interrupted: outputs are written to a temporary name and renamed when complete, so "
                       "nothing half-written was kept; rerun the command (the demo and reproductions resume)",
                       err=True)
            ctx.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekd")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """edgekd: distil beam-tracking students, export them to int8 TFLite, run them on edge boards.

    Pipeline: data synth -> train (teacher) -> distill (student) -> export --target
    -> run / bench. Every command has --help.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="edgekd")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
