"""NVIDIA's "CUDA Toolkit and Corresponding Driver Versions" table, Linux x86_64 column.

Source: NVIDIA CUDA Toolkit Release Notes, section "CUDA Driver", table "CUDA Toolkit and
Corresponding Driver Versions" (column "Toolkit Driver Version", "Linux x86_64 Driver Version"),
https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html (the 13.x pages keep the rows
of every 11.x/12.x/13.x release). Read 2026-11-30.

How it was read (the machine that wrote this has no network but a search index): the release-notes
pages are indexed, but only their opening is returned, so the rows were taken from two verbatim
copies of the table and checked against NVIDIA's own installer file names, which carry the driver
that ships with each toolkit (developer.download.nvidia.com/compute/cuda/<ver>/local_installers/
cuda_<ver>_<driver>_linux.run):

- mesonbuild/meson, mesonbuild/modules/cuda.py, commit 021bf59f6e8981b958d62e058b99ffa1631ef250,
  `_DRIVER_TABLE_VERSION` ("Copied from: https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/
  index.html#id7"), rows 11.0.1 .. 13.3.1;
- pytorch/test-infra pull request #4366 (2023-07-10), which pastes the rows 11.8 GA .. 12.2 GA;
- blog.csdn.net/ytomc/article/details/122805982, which pastes the rows 11.0.1 RC .. 11.6 GA.

Where the copies disagree: 12.0 Update 1 is 525.85.11 in meson's copy and 525.85.12 in the
pytorch copy and in NVIDIA's installer name (cuda_12.0.1_525.85.12_linux.run): 525.85.12 here.
Where NVIDIA's table and NVIDIA's installers disagree, the table is kept (it is the documented
minimum; the installer's driver is newer): 11.1 GA 455.23 (installer 455.23.05), 11.2 GA 460.27.03
(installer 460.27.04), 12.8 GA 570.26 (installer 570.86.10). The GA rows of 11.0, 11.7, 11.8,
12.0 .. 12.6, 12.9, 13.0 .. 13.3 equal the installer names.

Not covered: CUDA 13.4 (GA 2026-09-09 as 13.4.1, whose runfile no longer names a driver) and
later; their rows could not be read here. rig reports such a version as unknown instead of
guessing; add its rows here from the release notes.

Each row: (toolkit release, label as NVIDIA's table names it, minimum Linux x86_64 driver).
"""

from __future__ import annotations

SOURCE = (
    "NVIDIA CUDA Toolkit Release Notes, table 'CUDA Toolkit and Corresponding Driver Versions' "
    "(Linux x86_64), https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html, "
    "read 2026-11-30"
)

TOOLKIT_DRIVERS: tuple[tuple[str, str, str], ...] = (
    ("13.3.1", "CUDA 13.3 Update 1", "610.43.02"),
    ("13.3.0", "CUDA 13.3 GA", "610.43.02"),
    ("13.2.1", "CUDA 13.2 Update 1", "595.58.03"),
    ("13.2.0", "CUDA 13.2 GA", "595.45.04"),
    ("13.1.1", "CUDA 13.1 Update 1", "590.48.01"),
    ("13.1.0", "CUDA 13.1 GA", "590.44.01"),
    ("13.0.2", "CUDA 13.0 Update 2", "580.95.05"),
    ("13.0.1", "CUDA 13.0 Update 1", "580.82.07"),
    ("13.0.0", "CUDA 13.0 GA", "580.65.06"),
    ("12.9.1", "CUDA 12.9 Update 1", "575.57.08"),
    ("12.9.0", "CUDA 12.9 GA", "575.51.03"),
    ("12.8.1", "CUDA 12.8 Update 1", "570.124.06"),
    ("12.8.0", "CUDA 12.8 GA", "570.26"),
    ("12.6.3", "CUDA 12.6 Update 3", "560.35.05"),
    ("12.6.2", "CUDA 12.6 Update 2", "560.35.03"),
    ("12.6.1", "CUDA 12.6 Update 1", "560.35.03"),
    ("12.6.0", "CUDA 12.6 GA", "560.28.03"),
    ("12.5.1", "CUDA 12.5 Update 1", "555.42.06"),
    ("12.5.0", "CUDA 12.5 GA", "555.42.02"),
    ("12.4.1", "CUDA 12.4 Update 1", "550.54.15"),
    ("12.4.0", "CUDA 12.4 GA", "550.54.14"),
    ("12.3.1", "CUDA 12.3 Update 1", "545.23.08"),
    ("12.3.0", "CUDA 12.3 GA", "545.23.06"),
    ("12.2.2", "CUDA 12.2 Update 2", "535.104.05"),
    ("12.2.1", "CUDA 12.2 Update 1", "535.86.09"),
    ("12.2.0", "CUDA 12.2 GA", "535.54.03"),
    ("12.1.1", "CUDA 12.1 Update 1", "530.30.02"),
    ("12.1.0", "CUDA 12.1 GA", "530.30.02"),
    ("12.0.1", "CUDA 12.0 Update 1", "525.85.12"),
    ("12.0.0", "CUDA 12.0 GA", "525.60.13"),
    ("11.8.0", "CUDA 11.8 GA", "520.61.05"),
    ("11.7.1", "CUDA 11.7 Update 1", "515.48.07"),
    ("11.7.0", "CUDA 11.7 GA", "515.43.04"),
    ("11.6.1", "CUDA 11.6 Update 1", "510.47.03"),  # 11.6 Update 2: the same driver
    ("11.6.0", "CUDA 11.6 GA", "510.39.01"),
    ("11.5.1", "CUDA 11.5 Update 1", "495.29.05"),  # 11.5 Update 2: the same driver
    ("11.5.0", "CUDA 11.5 GA", "495.29.05"),
    ("11.4.3", "CUDA 11.4 Update 3", "470.82.01"),  # 11.4 Update 4: the same driver
    ("11.4.1", "CUDA 11.4 Update 1", "470.57.02"),  # 11.4 Update 2: the same driver
    ("11.4.0", "CUDA 11.4.0 GA", "470.42.01"),
    ("11.3.0", "CUDA 11.3.0 GA", "465.19.01"),  # 11.3.1 Update 1: the same driver
    ("11.2.2", "CUDA 11.2.2 Update 2", "460.32.03"),
    ("11.2.1", "CUDA 11.2.1 Update 1", "460.32.03"),
    ("11.2.0", "CUDA 11.2.0 GA", "460.27.03"),
    ("11.1.1", "CUDA 11.1.1 Update 1", "455.32"),
    ("11.1.0", "CUDA 11.1 GA", "455.23"),
    ("11.0.3", "CUDA 11.0.3 Update 1", "450.51.06"),
    ("11.0.2", "CUDA 11.0.2 GA", "450.51.05"),
    # "CUDA 11.0.1 RC >= 450.36.06" is a release candidate: not counted for the 11.0 minimum.
)
