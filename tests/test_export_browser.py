"""The labelling job end to end, as a person would do it: a folder of real images (digits written
as PNG files), ``dataset=unlabelled_folder oracle=web``, two rounds of clicks in a headless
Chromium, then ``alframe-export`` to CSV and imagefolder. Every exported label must be the one
clicked, on the right file, and the machine labels must cover exactly the rest of the pool.

Needs Debian's ``chromium`` and the ``playwright`` package, like ``test_web_browser.py``.
"""

from __future__ import annotations

import csv
import filecmp
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); the browser test needs it",
                allow_module_level=True)
from playwright import sync_api  # noqa: E402

from alframe.cli import export  # noqa: E402
from alframe.loop.experiment import Experiment  # noqa: E402

from .conftest import compose  # noqa: E402
from .helpers import ARGS, joined_result, run_in_thread  # noqa: E402

CLASSES = [f"d{k}" for k in range(10)]  # names differ from indices: a mix-up would show


def write_digit_pngs(root: Path, n: int = 30) -> dict[str, int]:
    """``n`` real digits as 16x16 grey PNGs under ``root`` (a third in a sub-folder); returns
    {path relative to root: true digit}."""
    b = load_digits()
    truth = {}
    for k in range(n):
        rel = f"scan_{k:03d}.png" if k % 3 else f"box2/scan_{k:03d}.png"
        img = Image.fromarray(np.round(b.images[k] / 16 * 255).astype(np.uint8)).resize((16, 16), Image.NEAREST)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(root / rel)
        truth[rel] = int(b.target[k])
    return truth


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # ~1 min on a loaded 2-core machine (two trainings, Chromium, three exports)
@pytest.mark.usefixtures("store")
def test_label_a_folder_in_the_browser_and_export_it(tmp_path):
    photos = tmp_path / "photos"
    truth = write_digit_pngs(photos)
    files = sorted(truth)  # the pool order: sorted by path
    cfg = compose(["dataset=unlabelled_folder", f"dataset.root={photos}", f"dataset.classes=[{','.join(CLASSES)}]",
                   "dataset.image_size=8", "dataset.channels=1", "oracle=web", "oracle.port=0",
                   "trainer.max_epochs=3", "loop.initial_size=6", "loop.query_size=4", "loop.rounds=1",
                   "strategy=margin"], tmp_path)
    exp = Experiment(cfg, tmp_path / "job")
    thread, out, url = run_in_thread(exp)
    clicked: dict[str, tuple[str, int]] = {}  # file -> (class clicked, round)

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(url)
            for round, n in ((0, 6), (1, 4)):
                # selector waits: the page's CSP forbids the eval that wait_for_function polls with
                page.locator("#progress-text", has_text=f"round {round}: sample 1 of {n}").wait_for()
                for k in range(n):
                    page.wait_for_selector("#labelling:not([hidden]) #sample-image[data-index]")
                    i = int(page.get_attribute("#sample-image", "data-index"))
                    f = files[i]
                    # the true digit, except every third answer: the person's word counts, not the truth
                    c = truth[f] if k % 3 else (truth[f] + 1) % 10
                    page.click(f"#classes button[data-class='{c}']")
                    clicked[f] = (CLASSES[c], round)
                    page.wait_for_selector(f"#labelling[hidden], #sample-image:not([data-index='{i}'])",
                                           state="attached")
            page.locator(", ".join(f"#progress-text:has-text('{t}')" for t in
                                   ("the experiment has finished", "not reachable", "waiting"))).first.wait_for()
        finally:
            browser.close()
    res = joined_result(thread, out, 300)
    assert res.status == "finished" and len(clicked) == 10

    # queries.csv names the file next to the index
    queries = read_csv(res.run_dir / "queries.csv")
    assert {r["file"]: (r["class_name"], int(r["round"])) for r in queries} == clicked
    assert all(files[int(r["index"])] == r["file"] for r in queries)

    # CSV: the clicked labels on the right files, machine labels on exactly the rest of the pool
    assert export.main([str(res.run_dir), "--format", "csv", "--out", str(tmp_path / "csv")]) == 0
    rows = read_csv(tmp_path / "csv" / "labels.csv")
    assert [r["file"] for r in rows] == files
    human = {r["file"]: (r["label"], int(r["round"])) for r in rows if r["source"] == "human"}
    assert human == clicked
    machine = {r["file"]: r for r in rows if r["source"] == "machine"}
    assert set(machine) == set(files) - set(clicked) and len(machine) + len(human) == len(files)
    assert all(r["label"] in CLASSES and 0.0 < float(r["confidence"]) <= 1.0 for r in machine.values())

    # imagefolder: each file under the class it got, a byte-identical copy of the original
    folder = tmp_path / "imagefolder"
    assert export.main([str(res.run_dir), "--format", "imagefolder", "--out", str(folder)]) == 0
    written = {p.relative_to(folder).as_posix() for p in folder.rglob("*.png")}
    expected = {f"{label}/{f}" for f, (label, _) in clicked.items()} | \
        {f"{r['label']}/{f}" for f, r in machine.items()}
    assert written == expected
    assert all(filecmp.cmp(folder / w, photos / w.split("/", 1)[1], shallow=False) for w in written)

    # --accept-above t: machine labels below t stay out of the image folder
    conf = sorted({float(r["confidence"]) for r in machine.values()})
    t = (conf[len(conf) // 2 - 1] + conf[len(conf) // 2]) / 2  # between two exported values: no rounding tie
    strict = tmp_path / "strict"
    assert export.main([str(res.run_dir), "--format", "imagefolder", "--out", str(strict), "--accept-above", str(t)]) == 0
    kept = {p.relative_to(strict).as_posix() for p in strict.rglob("*.png")}
    assert kept == {f"{label}/{f}" for f, (label, _) in clicked.items()} | \
        {f"{r['label']}/{f}" for f, r in machine.items() if float(r["confidence"]) >= t}
    assert 0 < len(kept) - len(clicked) < len(machine)
