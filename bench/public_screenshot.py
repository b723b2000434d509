"""Screenshot of the app in public mode (as on a Space): ``python bench/public_screenshot.py [OUT.png]``.

Starts ``app.py --public`` in this process on a free loopback port with the shipped models.yaml
(examples cached at start-up), opens it in headless Chromium (Debian's ``chromium``, driven by
Playwright; never ``playwright install``), clicks the first fusion example (served from the cache)
and saves a full-page screenshot (default docs/screenshots/public_app.png). Prints the start-up
seconds (example caching included).
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def main(out: Path) -> int:
    import app as studio_app
    from studio.config import config_from_args
    from studio.space_config import configure
    from playwright.sync_api import sync_playwright
    cfg = configure(config_from_args(["--public", "--port", "0", "--no-preload", "--threads", "1"]))
    t0 = time.perf_counter()
    demo = studio_app.build_app(cfg)
    _, url, _ = studio_app.launch(demo, cfg, prevent_thread_lock=True, quiet=True)
    print(f"public app up in {time.perf_counter() - t0:.1f} s (examples cached) at {url}")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#fuse_button", timeout=60_000)
            page.get_by_text("Recipe 1", exact=False).first.click()
            page.wait_for_selector("#out_fused img", timeout=120_000)
            time.sleep(1.0)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        demo.close()
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots" / "public_app.png"))
