"""What `rig prune` reads and removes (rig/prune.py) at its edges: rows of the host's listing that
are not what their section expects, a rollback target with no previous, an orphan sharing its
image with a live container, and an image reached both as an old release and as an orphan's."""

from __future__ import annotations

from rig.prune import HostContainer, HostImage, parse_inventory, plan_prune

REPO = "reg/rig/svc"


def image(repo, tag, digest, id_, created, size=100):
    return HostImage(repo, tag, digest, id_, created, size)


def test_each_section_keeps_only_rows_of_its_own_shape():
    out = "\n".join([
        "--- images",
        "reg/rig/svc\tT1\tsha256:d1\tsha256:i1\t2026-11-24 01:00:00 +0000 UTC\t10MB",
        "reg/rig/svc\tT2\tsha256:d2",                          # torn row
        "rig-x\tsha256:i9\tsvc",                               # three fields: not an image
        "",
        "--- containers",
        "/rig-svc\tsha256:i1\tsvc",
        "/odd\tsha256:i1",                                     # torn row
        "a\tb\tc\td\te\tf",                                    # six fields: not a container
        "",
        "--- volumes",
        "rig-model-cache\tlocal\tx\ty\tz\t1GB",
        "rig-logs\tlocal\tx",
    ])
    images, containers = parse_inventory(out)
    assert images == [HostImage("reg/rig/svc", "T1", "sha256:d1", "sha256:i1",
                                "2026-11-24 01:00:00 +0000 UTC", 10_000_000)]
    assert containers == [HostContainer("rig-svc", "sha256:i1", "svc")]


def test_what_docker_rmi_removes_a_row_by():
    assert image(REPO, "T1", "sha256:d", "sha256:i", "t").ref == "reg/rig/svc:T1"
    assert image(REPO, "<none>", "sha256:d", "sha256:i", "t").ref == "reg/rig/svc@sha256:d"
    assert image(REPO, "<none>", "<none>", "sha256:i", "t").ref == ""
    assert image("<none>", "<none>", "sha256:d", "sha256:i", "t").ref == ""


def test_a_service_without_a_previous_still_protects_what_it_runs():
    images = [image(REPO, "<none>", f"sha256:d{i}", f"sha256:i{i}", f"2026-11-2{i}")
              for i in range(1, 5)]
    state = {"svc": {"digest": "sha256:d1", "previous": None}, "note": "not a service"}
    plan = plan_prune(images, [], state, {REPO: "svc"}, keep=1)
    assert [i.id for i in plan.images] == ["sha256:i3", "sha256:i2"]   # 4 newest, 1 recorded


def test_an_orphans_image_that_a_live_container_uses_stays():
    images = [image("reg/rig/ghost", "t", "sha256:g", "sha256:ig", "2026-11-20", 5)]
    containers = [HostContainer("rig-ghost", "sha256:ig", "ghost"),
                  HostContainer("debug-shell", "sha256:ig", "")]
    plan = plan_prune(images, containers, {}, {REPO: "svc"}, keep=1, namespace="reg/rig/")
    assert plan.orphans == ["rig-ghost"] and plan.refs == [] and plan.freed == 0


def test_an_image_reached_twice_is_removed_and_counted_once():
    """The spec's svc is built into the repository a removed service `ghost` used: ghost's old
    image is both an old svc release and the orphan's image."""
    images = [image("reg/rig/ghost", "old", "sha256:o", "sha256:io", "2026-11-20", 7),
              image("reg/rig/ghost", "new", "sha256:n", "sha256:in", "2026-11-22", 9)]
    containers = [HostContainer("rig-ghost", "sha256:io", "ghost"),
                  HostContainer("rig-svc", "sha256:in", "svc")]
    plan = plan_prune(images, containers, {}, {"reg/rig/ghost": "svc"}, keep=0,
                      namespace="reg/rig/")
    assert plan.orphans == ["rig-ghost"]
    assert plan.refs == ["reg/rig/ghost:old"] and plan.freed == 7
