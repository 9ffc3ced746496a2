"""`edgekd reproduce paper1|paper2`: each paper's experiment lives in its own module."""

from __future__ import annotations

import importlib

import click


class _LazyPapers(click.Group):
    PAPERS = {
        "paper1": ("edgekd.host.experiments.paper1", "KD for image / image+radar beam tracking (Table II, Fig. 4)."),
        "paper2": ("edgekd.host.experiments.paper2", "Data-free KD for the LiDAR student (Figs. 3-5)."),
    }

    def list_commands(self, ctx):
        return [n for n, (m, _) in self.PAPERS.items() if importlib.util.find_spec(m) is not None]

    def get_command(self, ctx, name):
        if name not in self.list_commands(ctx):
            return None
        return importlib.import_module(self.PAPERS[name][0]).command

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(n, self.PAPERS[n][1]) for n in self.list_commands(ctx)])


@click.group(cls=_LazyPapers)
def reproduce() -> None:
    """Reproduce a paper's experiment and write a Markdown + CSV + PNG report."""
