"""The app's Sweep tab (issue 13, item 3): a grid streamed from the Fusion tab's request, clear
errors, and (real browser) a clicked cell loads its settings and saliency maps."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
pytest.importorskip("gradio")

from tests.test_browser import CHROMIUM_ARGS, ROOT, _chromium, _set_number, served, sync_playwright  # noqa: E402,F401


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client
    return Client(served["url"], verbose=False)


def sweep(client, served, **kw):
    args = dict(general=served["general"], expert=served["expert"], general_path="", expert_path="",
                prompt="a cartoon of a big green circle", prompt1="a big green circle", negative="", seed=3,
                steps=4, guidance=7.5, height=64 if served["toy"] else 16, width=64 if served["toy"] else 16,
                sampler="ddim", general_lora="", expert_lora="", general_lora_path="", expert_lora_path="",
                general_lora_scale=1.0, expert_lora_scale=1.0, v1="400,800", kg="1", ke="1,3", mode="2", primary="general", judge=False)
    args.update(kw)
    return client.predict(*args.values(), api_name="/sweep")


def test_sweep_streams_a_labelled_grid_of_every_cell(client, served):
    grid, cells, status = sweep(client, served)[:3]
    assert status.startswith("4 of 4 cells done")
    assert len(cells) == 4 and all("secondary" in c["caption"] for c in cells)
    assert [c["caption"].split(" · ")[0] for c in cells] == [
        "v1-400 kg-1 ke-1 mode-2 general", "v1-400 kg-1 ke-3 mode-2 general",
        "v1-800 kg-1 ke-1 mode-2 general", "v1-800 kg-1 ke-3 mode-2 general"]
    assert Path(grid).is_file()


@pytest.mark.parametrize("kw,says", [(dict(v1=""), "--v1: the axis is empty"),
                                     (dict(mode="5"), "'5' is not a mode"),
                                     (dict(v1=",".join(str(v) for v in range(0, 1000, 10))), "at most 64")])
def test_bad_axes_are_clear_errors(client, served, kw, says):
    with pytest.raises(Exception, match=says):
        sweep(client, served, **kw)


def test_sweep_tab_in_a_real_browser(served, tmp_path):
    if sync_playwright is None or _chromium() is None:
        pytest.skip("playwright or Chromium missing")
    shot = Path(os.environ.get("STUDIO_SWEEP_SCREENSHOT") or
                (ROOT / "outputs" / "screenshots" / "sweep_tab.png" if served["toy"] else tmp_path / "sweep_tab.png"))
    shot.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1600})
            page.goto(served["url"], wait_until="domcontentloaded", timeout=60_000)
            page.get_by_role("button", name="Fuse").wait_for(timeout=60_000)
            if not served["toy"]:
                for elem, path in (("general_path", served["general"]), ("expert_path", served["expert"])):
                    box = page.locator(f"#{elem} textarea, #{elem} input").first
                    box.fill(path)
                    box.press("Tab")
                _set_number(page, "height", 16)
                _set_number(page, "width", 16)
            for elem, text in (("prompt", "a cartoon of a big green circle"), ("prompt1", "a big green circle")):
                box = page.locator(f"#{elem} textarea, #{elem} input").first
                box.fill(text)
            # 20 steps for the committed screenshot, fewer for a plain test run
            _set_number(page, "steps", (20 if os.environ.get("STUDIO_SWEEP_SCREENSHOT") else 8) if served["toy"] else 6)
            page.get_by_role("tab", name="Sweep").click()
            for elem, text in (("sweep_mode", "1,2"), ("sweep_primary", "expert")):
                page.locator(f"#{elem} textarea, #{elem} input").first.fill(text)
            if served["toy"]:
                page.locator("#sweep_judge input[type=checkbox]").check()
            page.get_by_role("button", name="Run sweep").click()
            page.wait_for_function("() => document.querySelector('#sweep_status')?.innerText.includes('12 of 12')",
                                   timeout=300_000)
            page.locator("#sweep_grid img").first.wait_for(state="visible", timeout=30_000)
            page.locator("#sweep_cells .thumbnail-item, #sweep_cells button img").nth(7).click()
            page.wait_for_function("() => document.querySelector('#sweep_cell_caption')?.innerText.includes('v1-')",
                                   timeout=120_000)
            page.locator("#sweep_sal_mask img").first.wait_for(state="visible", timeout=30_000)
            caption = page.locator("#sweep_cell_caption").inner_text()
            page.screenshot(path=str(shot), full_page=True)
            page.get_by_role("tab", name="Fusion").click()
            v1 = page.locator("#v1 input[type=number]").input_value()
        finally:
            browser.close()
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert caption.split(":")[0].strip("* ").startswith(f"v1-{v1}_")  # the Fusion tab got the cell's v1
    print(f"screenshot: {shot} ({time.perf_counter() - t0:.1f} s)")
