"""compare.json / .csv / .md / latency CDF PNG in one folder, each written atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from edgekd.device.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgekd.host.compare.markdown import to_markdown
from edgekd.host.compare.plot import plot_latency_cdf
from edgekd.host.compare.tables import to_csv

log = logging.getLogger(__name__)

JSON_NAME, CSV_NAME, MD_NAME, PNG_NAME = "compare.json", "compare.csv", "compare.md", "compare_latency_cdf.png"


def write_compare(report: dict[str, Any], out: str | os.PathLike) -> dict[str, Path]:
    """compare.json / .csv / .md and compare_latency_cdf.png in ``out``, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_NAME, "csv": out / CSV_NAME, "markdown": out / MD_NAME, "png": out / PNG_NAME}
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["csv"], to_csv(report))
    atomic_write_text(paths["markdown"], to_markdown(report))
    atomic_write_bytes(paths["png"], plot_latency_cdf(report))
    return paths
