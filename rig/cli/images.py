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
    """One line per expected image: its digest or MISSING, and who signed it when the spec has
    public keys. Returns how many are missing."""
    for row in rows:
        signed = ""
        if "signed" in row and row["digest"]:
            signed = ("  signed by " + ", ".join(row["signed"])) if row["signed"] else "  UNSIGNED"
        echo(f"  {row['image']:<72} {row['digest'] or 'MISSING'}{signed}")
        if "provenance" in row and row["digest"]:
            sbom = "NONE" if row["sbom"] is None else f"{row['sbom']} packages"
            echo(f"      {_provenance_line(row['provenance'], row['problem'])}; sbom: {sbom}")
    return sum(1 for row in rows if not row["digest"])


def _provenance_line(found: dict | None, problem: str | None) -> str:
    if not found:
        return "provenance: NONE"
    if found["commit"]:
        source = found["commit"][:12] + ("" if found["clean"] else " (uncommitted changes)")
    else:
        source = "none (no git checkout)"
    return (f"provenance: commit {source}, {found['builder'].removeprefix('urn:rig:builder:')}, "
            f"{found['finished']}" + (f", reused from {found['reused_from']}" if found["reused_from"]
                                      else "")
            + (f"  DOES NOT FIT: {problem}" if problem else ""))


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
        echo(_summary(report))
    echo(f"done in {job.elapsed():.1f} s")
    if report.missing:
        raise RigError(f"{report.missing} image(s) missing from the registry after the build")


def _summary(report) -> str:
    return (f"built {report.built}, tagged {report.reused}, present {report.present}; "
            f"{len(report.rows) - report.missing} of {len(report.rows)} images in {report.registry}"
            + (f"; signed {report.signed[0]} now" if report.signed else "")
            + (f"; attested {report.attested[0]} provenance(s), {report.attested[1]} SBOM(s)"
               if report.attested else ""))


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
    digest in the registry, or MISSING, and, when build.signing lists public keys, which of them
    signed it (or UNSIGNED), what its signed provenance says (commit, clean tree, builder; DOES
    NOT FIT when it names another build target or another commit than the tag) and how many
    packages its signed SBOM lists. Exit 1 when any is missing, or unsigned or without fitting
    provenance where rollouts require them.

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
    unsigned = [row for row in rows if row["digest"] and row.get("signed") == []]
    unproven = [row for row in rows if row["digest"] and row.get("problem")]
    if missing or (unsigned and job.fleet.requires_signed) \
            or (unproven and job.fleet.requires_provenance):
        sys.exit(1)


COMMANDS = [build, images]
