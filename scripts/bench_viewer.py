"""Viewer benchmark: frames per second while the camera moves, and what a live viewer costs training.

    python scripts/bench_viewer.py --model /path/to/RUN          # a trained model of the bundled scene
    python scripts/bench_viewer.py --model RUN --skip-training   # the frame rates only

1. Server side: one frame at 320x240 and 800x600 from the model's first training camera (resized):
   rendering (as the viewer renders it), plus encoding as a preview (JPEG) or as an exact frame (PNG, as
   the viewer encodes them);
   median over --frames frames, as frames per second.
2. In the browser: `gsplat-py view` serving the model to headless Chromium (tests/browser_helpers.py; the
   training cameras hidden, as their photos cost its software WebGL more than the picture), the page sized
   so that the canvas is 320x240 or 800x600, the camera orbited by continuous mouse drags for --seconds:
   the frames delivered per second (the tab's frame counter) and the preview sizes it chose.
3. Training: the `fast` preset on the bundled scene, --train-steps steps from scratch, in turns (--repeats
   each, the order rotated): without a viewer, with the live viewer and no page open, and with a page open
   (camera still); steps/s of each turn and the CPU time this process spends per step (all its threads:
   training, the viewer's, not the browser's), and their medians. On a shared machine the CPU time is the
   steadier measure of what the viewer costs.

Prints the tables and writes everything to ``bench_results/bench_viewer-<date>-<time>.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from browser_helpers import (  # noqa: E402
    EXACT_STATUS,
    PAGE_QUERY,
    Server,
    canvas_box,
    chromium_path,
    close_notifications,
    launch_chromium,
    wait_for_exact_frame,
)

from gsplat_py.data import load_scene  # noqa: E402
from gsplat_py.data.world_frame import WorldFrame  # noqa: E402
from gsplat_py.model import params_to_splats  # noqa: E402
from gsplat_py.tools.camera_paths import cameras_from_views, resize_cameras  # noqa: E402
from gsplat_py.tools.saved_models import load_model, scene_views  # noqa: E402
from gsplat_py.tools.viewer import (  # noqa: E402
    PNG_COMPRESS_LEVEL,
    PREVIEW_JPEG_QUALITY,
    LiveTraining,
    Viewer,
    render_image,
)
from gsplat_py.training.config import load_config  # noqa: E402
from gsplat_py.training.trainer import Trainer  # noqa: E402

SIZES = ((320, 240), (800, 600))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="a trained run of the bundled scene (or its PLY)")
    parser.add_argument("--frames", type=int, default=20, help="server-side frames per size")
    parser.add_argument("--seconds", type=float, default=15.0, help="orbiting time per size in the browser")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-training", action="store_true")
    return parser.parse_args()


def median_ms(samples: list[float]) -> float:
    return 1000.0 * statistics.median(samples)


def server_side(model, camera, frames: int) -> list[dict]:
    rows = []
    for width, height in SIZES:
        sized = resize_cameras([camera], width, height)[0]
        render_s, jpeg_s, png_s = [], [], []
        render_image(model.splats, sized)  # warm-up
        for _ in range(frames):
            started = time.perf_counter()
            image = render_image(model.splats, sized)
            rendered = time.perf_counter()
            Image.fromarray(image).save(io.BytesIO(), format="JPEG", quality=PREVIEW_JPEG_QUALITY)
            encoded = time.perf_counter()
            Image.fromarray(image).save(io.BytesIO(), format="PNG", compress_level=PNG_COMPRESS_LEVEL)
            render_s.append(rendered - started)
            jpeg_s.append(encoded - rendered)
            png_s.append(time.perf_counter() - encoded)
        row = {
            "size": f"{width}x{height}",
            "render_ms": median_ms(render_s),
            "jpeg_ms": median_ms(jpeg_s),
            "png_ms": median_ms(png_s),
        }
        row["preview_fps"] = 1000.0 / (row["render_ms"] + row["jpeg_ms"])
        row["exact_fps"] = 1000.0 / (row["render_ms"] + row["png_ms"])
        rows.append(row)
    return rows


PREVIEW_STATUS = re.compile(r"preview (\d+)×(\d+), \d+ ms \(frame (\d+)\)")


def frame_number(page) -> tuple[int, str]:
    """The tab's frame counter and the size of its last frame."""
    text = page.inner_text("body")
    match = EXACT_STATUS.search(text) or PREVIEW_STATUS.search(text)
    assert match, text
    return int(match.group(3)), f"{match.group(1)}x{match.group(2)}"


def in_browser(model_path: str, seconds: float, workdir: Path) -> list[dict]:
    from playwright.sync_api import sync_playwright

    rows = []
    server = Server(
        ["view", "--model", model_path, "--port", "0", "--output", str(workdir / "views")], workdir / "log"
    )
    try:
        url = server.url()
        with sync_playwright() as playwright:
            for width, height in SIZES:
                context = launch_chromium(playwright, workdir / f"profile-{width}")
                page = context.new_page()
                page.goto(url)
                wait_for_exact_frame(page)
                close_notifications(page)  # "software WebGL", over the canvas
                # the frustums with their photos cost the browser's software WebGL more than the picture
                page.get_by_label("Training cameras").uncheck()
                box = canvas_box(page)  # the panel takes the rest of the page's width
                page.set_viewport_size(
                    {"width": width + round(page.viewport_size["width"] - box["width"]), "height": height}
                )
                wait_for_exact_frame(page, after=frame_number(page)[0])
                box = canvas_box(page)
                start_frame, _ = frame_number(page)
                middle = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                page.mouse.move(*middle)
                page.mouse.down()
                sizes = []
                started = time.perf_counter()
                step = 0
                while time.perf_counter() - started < seconds:
                    step += 1
                    page.mouse.move(middle[0] + 0.3 * box["width"] * np.sin(step / 10), middle[1], steps=2)
                    if step % 5 == 0:
                        sizes.append(frame_number(page)[1])
                elapsed = time.perf_counter() - started
                end_frame, _ = frame_number(page)
                page.mouse.up()
                rows.append(
                    {
                        "canvas": f"{round(box['width'])}x{round(box['height'])}",
                        "frames_per_s": (end_frame - start_frame) / elapsed,
                        "preview_sizes": sorted(set(sizes), key=sizes.count, reverse=True)[:3],
                    }
                )
                context.close()
    finally:
        server.interrupt()
    return rows


def training(steps: int, repeats: int, workdir: Path) -> dict:
    from playwright.sync_api import sync_playwright

    config = load_config("fast")
    config.train.eval_every = 0
    config.train.save_every = 0
    config.train.save_renders = False
    scene = load_scene(config.data)
    names = ["no viewer", "viewer, no page", "viewer, page open"]
    turns: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    with sync_playwright() as playwright:
        for repeat in range(repeats):
            for turn in names[repeat % 3 :] + names[: repeat % 3]:  # each turn in each position in turn
                config.train.output = str(
                    workdir / f"run-{repeat}-{len(turns[turn])}-{turn.replace(' ', '_')}"
                )
                trainer = Trainer(config, scene=scene, progress=False)
                viewer = context = None
                if turn != "no viewer":
                    viewer = Viewer(
                        params_to_splats(trainer.params),
                        WorldFrame.normalized(scene.transform),
                        cameras_from_views(scene.train_views),
                        [view.image.numpy() for view in scene.train_views],
                        output=workdir / "views",
                        port=0,
                    )
                    trainer.hooks.append(LiveTraining(viewer))
                    if turn == "viewer, page open":
                        context = launch_chromium(playwright, workdir / f"profile-train-{repeat}")
                        page = context.new_page()
                        page.goto(f"http://127.0.0.1:{viewer.port}/{PAGE_QUERY}")
                        wait_for_exact_frame(page)
                started, cpu_started = time.perf_counter(), time.process_time()
                trainer.train(until=steps)
                turns[turn].append(steps / (time.perf_counter() - started))
                cpu[turn].append(1000.0 * (time.process_time() - cpu_started) / steps)
                if context is not None:
                    context.close()
                if viewer is not None:
                    viewer.stop()
                print(f"  {turn}: {turns[turn][-1]:.2f} steps/s, {cpu[turn][-1]:.0f} CPU ms/step", flush=True)
    medians = {turn: statistics.median(values) for turn, values in turns.items()}
    cpu_medians = {turn: statistics.median(values) for turn, values in cpu.items()}
    return {
        "steps": steps,
        "turns": turns,
        "medians": medians,
        "cpu_ms_per_step": cpu,
        "cpu_medians": cpu_medians,
    }


def main() -> None:
    args = parse_args()
    if chromium_path() is None:
        sys.exit("needs Chromium (apt-get install chromium)")
    model = load_model(args.model)
    model, scene = scene_views(model)
    cameras = cameras_from_views(scene.train_views)
    load = os.getloadavg()
    results: dict = {
        "model": str(model.source),
        "gaussians": model.splats.num_gaussians,
        "sh_degree": model.sh_degree,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_before": load,
    }
    print(
        f"{model.source}: {model.splats.num_gaussians:,} Gaussians, SH degree {model.sh_degree}; load {load}"
    )
    results["server_side"] = server_side(model, cameras[0], args.frames)
    print("\nserver side (median per frame)")
    print("| size | render | + JPEG (preview) | + PNG (exact) | preview fps | exact fps |")
    print("|---|---|---|---|---|---|")
    for row in results["server_side"]:
        print(
            f"| {row['size']} | {row['render_ms']:.0f} ms | {row['jpeg_ms']:.0f} ms | "
            f"{row['png_ms']:.0f} ms | {row['preview_fps']:.1f} | {row['exact_fps']:.1f} |"
        )
    with tempfile.TemporaryDirectory() as folder:
        results["browser"] = in_browser(args.model, args.seconds, Path(folder))
        print("\nin the browser, orbiting")
        print("| canvas | frames delivered per s | preview sizes chosen |")
        print("|---|---|---|")
        for row in results["browser"]:
            print(f"| {row['canvas']} | {row['frames_per_s']:.1f} | {', '.join(row['preview_sizes'])} |")
        if not args.skip_training:
            print("\ntraining (fast preset, bundled scene)")
            results["training"] = training(args.train_steps, args.repeats, Path(folder))
            medians, cpu_medians = results["training"]["medians"], results["training"]["cpu_medians"]
            print(
                "| | steps/s (median) | vs no viewer | CPU ms per step, all threads (median) | vs no viewer |"
            )
            print("|---|---|---|---|---|")
            for turn, value in medians.items():
                speed = 100.0 * (value / medians["no viewer"] - 1.0)
                work = 100.0 * (cpu_medians[turn] / cpu_medians["no viewer"] - 1.0)
                print(f"| {turn} | {value:.2f} | {speed:+.1f}% | {cpu_medians[turn]:.0f} | {work:+.1f}% |")
    results["load_after"] = os.getloadavg()
    out = ROOT / "bench_results" / f"bench_viewer-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nload after: {results['load_after']}; written {out}")


if __name__ == "__main__":
    main()
