"""`wallwm bench studio`: click-to-pixels latency and memory of the studio, in a real browser.

The studio runs as a user starts it (`wallwm studio`, the simulated robot as its child) and
Debian's Chromium drives it headless. For each imagination of one event (event mode, the
checkpoint's default steps, the robot's 3 views) the page itself timestamps, with
`performance.now()`:

- the click on Imagine (a capture-phase listener on the button);
- the first animation frame in which the first preview is on the page: the status says
  "preview step" and every image of the video grid has loaded (decoded, so painted in that frame);
- the first animation frame in which the final result is on the page, likewise.

Beside them, the model's own times as the backend measured them (queued to first preview,
queued to final), read from the page's status line, so the UI's share is the difference.
Memory: the studio process's resident set after the first and after the last imagination, and
the page's JS heap after a full collection (Chrome DevTools `HeapProfiler.collectGarbage`,
then `Performance.getMetrics`).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

from app.bench import BenchResult

# Runs in the page: wait for the click, then watch every animation frame.
WATCH_JS = """
() => new Promise((resolve) => {
  const button = [...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Imagine');
  const statusBox = document.querySelector('#status textarea');
  const before = new Set([...document.querySelectorAll('[data-testid="gallery"] img, .gallery img, img')]
                          .map(i => i.currentSrc || i.src));
  let clicked = null, preview = null, previewText = null, finalText = null;
  let previewSeen = null, finalSeen = null, frames = 0;
  let atClick = null;  // the previous imagination's status: not this one's
  button.addEventListener('click', () => { clicked = performance.now(); atClick = statusBox.value; },
                          {capture: true, once: true});
  // When the status text arrives (a timer, not a frame: how long it then waits to be painted)
  const poll = setInterval(() => {
    if (clicked === null) return;
    const text = statusBox.value;
    if (previewSeen === null && text.includes('preview step')) previewSeen = performance.now();
    if (finalSeen === null && text !== atClick && text.includes('(final)')) finalSeen = performance.now();
  }, 2);
  function loaded() {
    const imgs = [...document.querySelectorAll('img')].filter(i => i.closest('[role="tabpanel"]'));
    const fresh = imgs.filter(i => !before.has(i.currentSrc || i.src));
    return fresh.length >= 1 && fresh.every(i => i.complete && i.naturalWidth > 0);
  }
  function frame() {
    const text = statusBox.value;
    if (clicked !== null) {
      frames++;
      if (preview === null && text.includes('preview step') && loaded()) {
        preview = performance.now(); previewText = text;
      }
      if (text !== atClick && text.includes('(final)') && loaded()) {
        finalText = text;
        const now = performance.now(), t0 = performance.timeOrigin;
        clearInterval(poll);
        return resolve({frames_per_s: 1000 * frames / (now - clicked),
                        preview_status_ms: previewSeen === null ? null : previewSeen - clicked,
                        final_status_ms: finalSeen === null ? null : finalSeen - clicked,
                        preview_ms: preview === null ? null : preview - clicked,
                        final_ms: now - clicked, previewText, finalText,
                        clicked_epoch_ms: t0 + clicked, final_epoch_ms: t0 + now,
                        preview_epoch_ms: preview === null ? null : t0 + preview});
      }
      if (text.startsWith('⚠')) { clearInterval(poll); return resolve({error: text}); }
    }
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);
})
"""


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _seconds(pattern: str, text: str | None) -> float | None:
    m = re.search(pattern, text or "")
    return float(m.group(1)) if m else None


def run(args: argparse.Namespace) -> BenchResult:
    import os
    import subprocess
    import sys

    from playwright.sync_api import sync_playwright

    from backend.service import resolve_checkpoint

    n = int(args.imaginations)
    if n < 2:
        raise ValueError("--imaginations must be at least 2 (memory is compared first to last)")
    choice = resolve_checkpoint(args.checkpoint)
    if choice.path is None:
        raise FileNotFoundError(choice.reason)
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"wallwm-bench-studio-{args.port}.log"
    marks = log.with_suffix(".trace.jsonl")
    marks.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WALLWM_TRACE": str(marks)}
    with open(log, "wb") as out:
        studio = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "studio",
                "--port",
                str(args.port),
                "--checkpoint",
                str(choice.path),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 300
        while "WALL-WM Studio: http" not in log.read_text(errors="replace"):
            if studio.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the studio did not start:\n{log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.5)
        runs, rss, heap = _measure(sync_playwright, f"http://127.0.0.1:{args.port}", studio.pid, n)
    finally:
        studio.terminate()
        studio.wait(30)
    _split(runs, marks)
    return _result(runs, rss, heap, choice.path, n)


def _first(marks: list[dict], name: str, **match) -> float | None:
    """Time of the first mark called `name` whose fields include `match`."""
    for m in marks:
        if m["mark"] == name and all(m.get(k) == v for k, v in match.items()):
            return m["t"]
    return None


def _split(runs: list[dict], marks_path: Path) -> None:
    """Add the server's marks ($WALLWM_TRACE) to each run: where the click-to-pixels time went.

    dispatch: click -> the handler starts; context: handler start -> the first yield (robot
    observation; scene and blueprint logged for the viewer); server_preview: click -> the handler
    yields the first preview with frames; preview_paint / final_paint: that yield -> the frame
    the page painted it in (transport, Gradio's front end, image decode).
    """
    import json

    marks = [json.loads(line) for line in marks_path.read_text().splitlines() if line.strip()]
    for r in runs:
        click = r["clicked_epoch_ms"] / 1000
        after = [m for m in marks if m["t"] >= click - 0.05]

        start, context = _first(after, "imagine_start"), _first(after, "imagine_context")
        preview = _first(after, "imagine_preview", video=True)
        final = _first(after, "imagine_final")
        ms = lambda a, b: None if a is None or b is None else 1000 * (b - a)  # noqa: E731
        r["dispatch_ms"] = ms(click, start)
        r["context_ms"] = ms(start, context)
        r["server_preview_ms"] = ms(click, preview)
        r["server_final_ms"] = ms(click, final)
        r["preview_paint_ms"] = (
            None if r["preview_epoch_ms"] is None else ms(preview, r["preview_epoch_ms"] / 1000)
        )
        r["final_paint_ms"] = ms(final, r["final_epoch_ms"] / 1000)


def _measure(
    sync_playwright, url: str, pid: int, n: int
) -> tuple[list[dict], list[float], list[float]]:
    from playwright.sync_api import expect

    args = [
        "--use-gl=swiftshader",
        "--enable-unsafe-swiftshader",
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    runs: list[dict] = []
    rss: list[float] = []
    heap: list[float] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        # Tall enough that the video grid is in view: the gallery loads its images lazily.
        page = browser.new_page(viewport={"width": 1600, "height": 1800})
        page.set_default_timeout(300_000)
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.goto(url)
        expect(page.get_by_label("Status")).to_have_value(re.compile("^Model"), timeout=300_000)
        _idle(page)
        for i in range(n):
            # A new seed each time: the same seed imagines the same pictures, which the page
            # would not need to load again.
            page.get_by_label("Imagination seed").fill(str(i + 1))
            page.evaluate(f"() => {{ window.__bench = ({WATCH_JS})(); }}")  # armed, not awaited
            page.get_by_role("button", name="Imagine", exact=True).click()
            r = page.evaluate("() => window.__bench")
            if "error" in r:
                raise RuntimeError(f"imagination {i + 1} failed on the page: {r['error']}")
            r["model_preview_s"] = _seconds(
                r"preview step \d+/\d+ \((\d+\.\d+) s\)", r["previewText"]
            )
            r["model_final_s"] = _seconds(r"in (\d+\.\d+) s", r["finalText"])
            r["studio_rss_mb"] = _rss_mb(pid)
            runs.append(r)
            if i in (0, n - 1):
                rss.append(r["studio_rss_mb"])
                # What the page retains, not what its collector has yet to reclaim.
                cdp.send("HeapProfiler.collectGarbage")
                metrics = {
                    m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]
                }
                heap.append(metrics["JSHeapUsedSize"] / 2**20)
            preview = (
                "never painted (the final came first)"
                if r["preview_ms"] is None
                else f"{r['preview_ms'] / 1000:.2f} s (model {r['model_preview_s']} s)"
            )
            print(
                f"imagination {i + 1}/{n}: first preview {preview}, "
                f"final {r['final_ms'] / 1000:.2f} s (model {r['model_final_s']} s) on the page",
                flush=True,
            )
            _idle(page)
        browser.close()
    return runs, rss, heap


def _idle(page, within_ms: float = 3000, frames: int = 20) -> None:
    js = """([n]) => new Promise(r => { let k = 0; const t0 = performance.now();
        function f() { k++; if (k >= n) r(performance.now() - t0); else requestAnimationFrame(f); }
        requestAnimationFrame(f); })"""
    for _ in range(10):
        if page.evaluate(js, [frames]) <= within_ms:
            return


PER_RUN = ("preview_ms", "final_ms", "model_preview_s", "model_final_s")
SPLIT = (
    "frames_per_s",
    "preview_status_ms",
    "final_status_ms",
    "dispatch_ms",
    "context_ms",
    "server_preview_ms",
    "preview_paint_ms",
    "server_final_ms",
    "final_paint_ms",
)
PER_RUN = PER_RUN + SPLIT + ("studio_rss_mb",)


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _ms(numbers: dict, key: str) -> str:
    v = numbers["split_median_ms"][key]
    return "n/a" if v is None else f"{v:.0f}"


def _fps(numbers: dict) -> str:
    v = numbers["split_median_ms"]["frames_per_s"]
    return "n/a" if v is None else f"{v:.1f}"


def _fmt(seconds: float | None) -> str:
    return "not painted" if seconds is None else f"{seconds:.2f} s"


def _result(
    runs: list[dict], rss: list[float], heap: list[float], checkpoint: Path, n: int
) -> BenchResult:
    def med(key: str, scale: float = 1.0) -> float:
        return statistics.median(r[key] * scale for r in runs if r.get(key) is not None)

    numbers = {
        "imaginations": n,
        "click_to_first_preview_s_first": _s(runs[0]["preview_ms"]),
        "previews_painted": sum(r["preview_ms"] is not None for r in runs),
        "click_to_first_preview_s_median": med("preview_ms", 1e-3),
        "click_to_final_s_first": runs[0]["final_ms"] / 1000,
        "click_to_final_s_median": med("final_ms", 1e-3),
        "model_first_preview_s_median": med("model_preview_s"),
        "model_final_s_median": med("model_final_s"),
        "studio_rss_mb_after_first": rss[0],
        "studio_rss_mb_after_last": rss[-1],
        "studio_rss_growth_pct": 100 * (rss[-1] - rss[0]) / rss[0],
        "page_js_heap_mb_after_first": heap[0],
        "page_js_heap_mb_after_last": heap[-1],
        "page_js_heap_growth_pct": 100 * (heap[-1] - heap[0]) / heap[0],
        "targets": {"first_preview_s": 1.0, "final_s": 5.0, "memory_growth_pct": 5.0},
        "checkpoint": str(checkpoint),
        "setting": "one event, event mode, tiny preset, 3 views of 64x64, the checkpoint's default steps",
        "per_imagination": [{k: r.get(k) for k in PER_RUN} for r in runs],
        "split_median_ms": {k: _median(runs, k) for k in SPLIT},
    }
    ok = lambda v, t: "meets" if v <= t else "misses"  # noqa: E731
    md = f"""One event, event mode, `tiny`, 3 views, checkpoint `{checkpoint}`; {n} imaginations in one
browser tab (Chromium headless, software WebGL). "On the page" runs from the click on Imagine to
the animation frame in which the result's images are decoded on the page; "model" is the
backend's own time from the request to that result. A preview was painted before the final in
{numbers["previews_painted"]} of {n} imaginations (the page skips a preview that the final
overtakes); the preview medians are over those.

| | first preview | final |
|---|---|---|
| on the page, first imagination | {_fmt(numbers["click_to_first_preview_s_first"])} | {numbers["click_to_final_s_first"]:.2f} s |
| on the page, median | {numbers["click_to_first_preview_s_median"]:.2f} s ({ok(numbers["click_to_first_preview_s_median"], 1.0)} ≤ 1.0 s) | {numbers["click_to_final_s_median"]:.2f} s ({ok(numbers["click_to_final_s_median"], 5.0)} ≤ 5 s) |
| model, median | {numbers["model_first_preview_s_median"]:.2f} s | {numbers["model_final_s_median"]:.2f} s |

Where the time goes (medians, ms; the server's marks are wall-clock lines it writes to
`$WALLWM_TRACE`): click → handler starts {_ms(numbers, "dispatch_ms")}; handler start → first yield
(robot observation; scene and blueprint logged for the viewer's first batch) {_ms(numbers, "context_ms")}; click → first preview with frames
yielded {_ms(numbers, "server_preview_ms")}, then → painted {_ms(numbers, "preview_paint_ms")}; click →
final yielded {_ms(numbers, "server_final_ms")}, then → painted {_ms(numbers, "final_paint_ms")}. The
status text of the first preview reached the page {_ms(numbers, "preview_status_ms")} ms after the click
(a 2 ms timer, independent of painting), the final's {_ms(numbers, "final_status_ms")}; the page drew
{_fps(numbers)} frames per second while it waited (60 on an idle page: fewer means its main thread was
busy, with the software-GL Rerun viewer and Gradio's updates, or starved of CPU).

Memory over {n} imaginations: studio process {rss[0]:.0f} → {rss[-1]:.0f} MB
({numbers["studio_rss_growth_pct"]:+.1f} %, {ok(numbers["studio_rss_growth_pct"], 5.0)} ≤ 5 %); page JS heap
after a full collection {heap[0]:.1f} → {heap[-1]:.1f} MB ({numbers["page_js_heap_growth_pct"]:+.1f} %,
{ok(numbers["page_js_heap_growth_pct"], 5.0)} ≤ 5 %).
"""
    return BenchResult("studio", numbers, md)
