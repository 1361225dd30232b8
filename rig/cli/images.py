"""rig build, rig images verify."""

from __future__ import annotations

import json
import sys

import click

from .common import CONTEXT, Context, echo, friendly, inventory_option, say_line


def tag_option(func):
    return click.option("--tag", metavar="T", default=None,
                        help="Image tag. Default: FORCE_IMAGE_TAG, else YYYYMMDD-<git sha> "
                             "(UTC; -dirty when the work tree has changes).")(func)


def resolve_tag(obj: Context, tag: str | None) -> str:
    from ..tags import current_tag

    return current_tag(obj.repo, tag)


def print_image_rows(rows: list[dict]) -> int:
    """One line per expected image: its digest or MISSING. Returns how many are missing."""
    for row in rows:
        echo(f"  {row['image']:<72} {row['digest'] or 'MISSING'}")
    return sum(1 for row in rows if not row["digest"])


@click.command()
@inventory_option
@tag_option
@click.option("--push", is_flag=True, help="Push to the registry once every target has built.")
@click.option("--rebuild", is_flag=True,
              help="Build every image, even those whose tag or sources are already pushed.")
@click.option("--allow-dirty", is_flag=True,
              help="Push although the work tree has uncommitted changes.")
@click.option("--print", "print_only", is_flag=True,
              help="Print the generated bake file (JSON) and exit; touches nothing.")
@click.option("--build-arg", "build_args", multiple=True, metavar="SERVICE:KEY=VALUE",
              help="Extra build argument for one service, e.g. model_ops_coordinator:FAULT=degraded "
                   "(the deliberately broken variant rollout tests use). Repeatable.")
@click.pass_obj
@friendly
def build(obj: Context, inventory: str | None, tag: str | None, push: bool, rebuild: bool,
          allow_dirty: bool, print_only: bool, build_args: tuple[str, ...]) -> None:
    """Build the family images, then the service images on them (one per machine for
    per-machine services), with docker buildx bake on the spec's build host, in a private
    folder made fresh for the build and removed afterwards.

    \b
    For each image the registry decides:
      tag already there           nothing to do (unless --rebuild)
      same sources pushed before  the manifest gets the new tag in the registry, no build
      otherwise                   built; pushed with --push only after every target built
    Then every expected image is checked in the registry (as `rig images verify` does).
    Example:
      rig build --push --tag 20261123-1a2b3c4d"""
    from ..errors import RigError
    from ..ops import images as ops

    job, tag = obj.job(inventory), resolve_tag(obj, tag)
    if print_only:
        echo(json.dumps(ops.bake_preview(job, tag, build_args), indent=2))
        return

    def on_plan(states):
        echo(f"build {tag} ({len(states)} images, registry {job.fleet.registry.host}):")
        for target, state in states:
            echo(f"  {target:<40} {state}")

    report = ops.build(job, tag, push, rebuild, allow_dirty, build_args, say_line, on_plan)
    if not push:
        echo(f"not pushed (no --push): {report.built} built image(s) stay on "
                   f"{report.where}; {report.reused} not tagged")
    else:
        print_image_rows(report.rows)
        echo(f"built {report.built}, tagged {report.reused}, present {report.present}; "
                   f"{len(report.rows) - report.missing} of {len(report.rows)} images in "
                   f"{report.registry}")
    echo(f"done in {job.elapsed():.1f} s")
    if report.missing:
        raise RigError(f"{report.missing} image(s) missing from the registry after the build")


@click.group(context_settings=CONTEXT)
def images() -> None:
    """Images in the registry."""


@images.command("verify")
@inventory_option
@tag_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@friendly
def images_verify(obj: Context, inventory: str | None, tag: str | None, as_json: bool) -> None:
    """List every image the spec expects at TAG (families, services, machine variants) with its
    digest in the registry, or MISSING. Exit 1 when any is missing.

    \b
    Example:
      rig images verify --tag 20261123-1a2b3c4d --json"""
    from ..ops.images import verify_images

    job, tag = obj.job(inventory), resolve_tag(obj, tag)
    rows = verify_images(job, tag)
    missing = [row for row in rows if not row["digest"]]
    if as_json:
        echo(json.dumps({"tag": tag, "registry": job.fleet.registry.host, "images": rows,
                               "missing": len(missing)}, indent=2))
    else:
        echo(f"images at {tag} in {job.fleet.registry.host}:")
        print_image_rows(rows)
        echo(f"{len(rows) - len(missing)} of {len(rows)} present")
    if missing:
        sys.exit(1)


COMMANDS = [build, images]
