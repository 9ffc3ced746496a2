"""``edgekd models``: list the registered models with params and MACs, show one in detail."""

from __future__ import annotations

import inspect
import json

import click

PAPER_PROFILE = {"image_size": 224, "radar_shape": [128, 64]}


def _profile_kwargs(name: str, image_size: int | None, radar_shape: tuple[int, int] | None,
                    paper: bool) -> dict:
    from edgekd.host.models import model_arguments

    wanted: dict = dict(PAPER_PROFILE) if paper else {}
    if image_size is not None:
        wanted["image_size"] = image_size
    if radar_shape is not None:
        wanted["radar_shape"] = list(radar_shape)
    accepted = model_arguments(name)
    return {k: v for k, v in wanted.items() if k in accepted}


def _summary(name: str, kwargs: dict) -> dict:
    import torch

    from edgekd.device.metrics import count_params
    from edgekd.host.models import create_model
    from edgekd.host.reports.model_cost import count_macs

    torch.set_num_threads(1)
    model = create_model(name, **kwargs)
    return {"name": name, "modalities": list(model.input_modalities), "kwargs": kwargs,
            "input_shapes": {k: list(v) for k, v in model.input_shapes().items()},
            "params": count_params(model), "macs": count_macs(model, model.example_inputs(1)),
            "model": model}


def _profile_options(func):
    func = click.option("--paper", is_flag=True,
                        help="Paper scale: 224x224 images and 128x64 radar maps.")(func)
    func = click.option("--radar-shape", type=(int, int), default=None, metavar="R A",
                        help="Radar map size (range bins, angle bins); default 64 32.")(func)
    func = click.option("--image-size", type=int, default=None, metavar="N",
                        help="Image side in pixels (multiple of 32); default 64.")(func)
    return func


@click.group("models")
def models() -> None:
    """List registered models with params and MACs, or show one in detail."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_profile_options
def list_cmd(as_json: bool, image_size: int | None, radar_shape: tuple[int, int] | None, paper: bool) -> None:
    """Every registered model: modalities, parameters and MACs (batch 1, T=8) at the chosen profile."""
    from edgekd.host.models import list_models

    rows = []
    for name in list_models():
        info = _summary(name, _profile_kwargs(name, image_size, radar_shape, paper))
        info.pop("model")
        rows.append(info)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'model':<16} {'modalities':<13} {'params':>10} {'MACs (M)':>10}  inputs")
    for r in rows:
        shapes = " ".join(f"{k}{v}" for k, v in r["input_shapes"].items())
        click.echo(f"{r['name']:<16} {'+'.join(r['modalities']):<13} {r['params']:>10,} "
                   f"{r['macs'] / 1e6:>10.2f}  {shapes}")
    click.echo("MACs: torch FlopCounterMode FLOPs / 2 (matmul + conv only), batch 1.")


@models.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--full", is_flag=True, help="Also print the full module tree.")
@_profile_options
def show_cmd(name: str, as_json: bool, full: bool, image_size: int | None,
             radar_shape: tuple[int, int] | None, paper: bool) -> None:
    """Structure summary of model NAME: inputs, parameters per part, MACs, feature shapes."""
    from edgekd.device.metrics import count_params
    from edgekd.host.models.base import MODELS

    key = MODELS.resolve(name)
    info = _summary(key, _profile_kwargs(key, image_size, radar_shape, paper))
    model = info.pop("model")
    info["doc"] = inspect.getdoc(type(model)) or ""
    info["parts"] = {child: count_params(module) for child, module in model.named_children()}
    info["feature_shapes"] = {k: list(v) for k, v in model.feature_shapes().items()}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{key}: {info['doc']}")
    click.echo(f"  modalities : {', '.join(info['modalities'])}")
    click.echo(f"  kwargs     : {json.dumps(info['kwargs'])}")
    click.echo("  inputs     : " + ", ".join(f"{k} [B, {', '.join(map(str, v))}]"
                                             for k, v in info["input_shapes"].items()))
    click.echo(f"  params     : {info['params']:,}")
    for child, n in info["parts"].items():
        click.echo(f"    {child:<14} {n:>10,}")
    click.echo(f"  MACs       : {info['macs'] / 1e6:.2f} M (batch 1)")
    click.echo("  features   :")
    for feat, shape in info["feature_shapes"].items():
        click.echo(f"    {feat:<14} [B, {', '.join(map(str, shape))}]")
    if full:
        click.echo(str(model))

