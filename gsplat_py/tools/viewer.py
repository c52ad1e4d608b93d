"""An interactive viewer in the browser, for a saved model or a training run as it trains, built on viser.

    viewer = Viewer(model.splats, model.frame, training_cameras, output=Path("views"))   # serves at once
    print(viewer.url)                      # http://localhost:8080
    ...
    viewer.stop()

    trainer.hooks.append(LiveTraining(viewer))   # the same page follows a Trainer (see below)

The page is viser's client (three.js); the picture is not: every frame is rendered on the server by
`render_cameras`, the function ``gsplat-py render`` uses, with the browser's camera, and shown as the
scene's background image, so what the page shows is what ``render --cameras`` writes (view-dependent colour
included). viser draws only the training cameras' frustums on top. Each browser tab (a viser client) has
its own camera, settings and render thread:

- while the camera moves it gets previews (JPEG) at a resolution chosen so that a render takes about
  PREVIEW_FRAME_S (measured on the previous frames), at least MIN_PREVIEW_WIDTH pixels wide;
- once the camera has been still for REST_S, one exact frame at the canvas's full size, sent as PNG
  (lossless);
- a change of settings or of the model (a new training step shown) renders the exact frame again.

Controls (the panel on the right): field of view, render mode (RGB, depth colour-mapped as ``render
--depth`` writes it, alpha), background colour, the highest SH degree used, the training cameras as
frustums showing their photos (a click moves the view there), and "Save view": the exact frame as
``view_NNN.png`` in the output folder with its camera as ``view_NNN.json`` in the ``--cameras`` format
(``gsplat-py render --cameras view_NNN.json`` renders it again). Orbit, pan and zoom are viser's (drag,
right-drag, wheel).

Live training (:class:`LiveTraining`, a `gsplat_py.training.hooks.TrainingHook`): the panel shows the step,
loss, last test PSNR, Gaussian count and steps/s, and pauses or resumes training. The trainer's thread only
copies the parameters, at most every LIVE_REFRESH_S and only while a page is open; the render threads draw
from that copy, so with no page open the hook costs the training loop a few attribute writes per step.
"""

from __future__ import annotations

import contextlib
import io
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ..data.world_frame import WorldFrame
from ..errors import ParameterError
from ..io.images import write_png
from ..io.video import MissingPackageError
from ..model import GaussianSplats, params_to_splats
from ..rendering import resolve_device
from ..training.evaluation import float_to_uint8
from ..training.hooks import StepReport, TrainingHook
from .camera_paths import Camera, scene_centre, up_direction, write_cameras_json
from .frames import quaternion_from_rotation, rotation_from_quaternion
from .novel_views import depth_colour_range, depth_image, render_cameras

if TYPE_CHECKING:
    from ..training.trainer import Trainer

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "RENDER_MODES",
    "RenderTimes",
    "VIEWER_INSTALL_HINT",
    "LiveTraining",
    "Viewer",
    "camera_from_pose",
    "check_port_free",
    "frustum_size",
    "pose_of_camera",
    "render_image",
    "require_viser",
    "splats_up_to_degree",
]

VIEWER_INSTALL_HINT = 'pip install viser (or install gsplat_py with its viewer extra: ".[viewer]")'
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
RENDER_MODES = ("RGB", "depth", "alpha")
REST_S = 0.2  # the camera counts as still (exact frame) once it has not moved for this long
PREVIEW_FRAME_S = 1.0 / 15.0  # a preview's render time aimed at: about 15 frames/s while the camera moves
MIN_PREVIEW_WIDTH = 64
FIRST_PREVIEW_PIXELS = 320 * 240  # before a tab has timed a render
PREVIEW_JPEG_QUALITY = 85
PNG_COMPRESS_LEVEL = 1  # zlib's fastest: an exact 800x600 frame encodes in ~1/4 of the default's time
LIVE_REFRESH_S = 1.0  # the live view copies the training parameters at most this often
PANEL_REFRESH_S = 0.5  # the training panel's numbers are updated at most this often
DEFAULT_FOV_DEGREES = 50.0
FRUSTUM_SIZE = 0.06  # frustum size, as a fraction of the training cameras' spread
THUMBNAIL_WIDTH = 96  # the photos on the frustums are at most this wide
VIEW_FILE_PREFIX = "view_"


def require_viser() -> Any:
    """The viser module; MissingPackageError naming the install command when it is not installed."""
    try:
        import viser
    except ImportError:
        raise MissingPackageError(f"the viewer needs the viser package: {VIEWER_INSTALL_HINT}") from None
    return viser


def check_port_free(host: str, port: int) -> None:
    """ParameterError naming ``port`` (or ``host``) unless a server can listen on host:port now (port 0: any
    free port)."""
    if not 0 <= port <= 65535:
        raise ParameterError("port", f"expected a port number in 0..65535, got {port}")
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ParameterError("host", f"{{host}} {host}: not an address of this machine ({error})") from None
    family, kind, protocol, _, address = addresses[0]
    with socket.socket(family, kind, protocol) as probe:
        # as the server will: a port left in TIME_WAIT by a closed server can be reused at once
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise ParameterError(
                "port",
                f"{{port}} {port} on {host} is in use (another viewer?) or not allowed ({error.strerror}); "
                "choose another {port}",
            ) from None


# --------------------------------------------------------------------------------------------------------
# Cameras and frames


def camera_from_pose(
    wxyz: Sequence[float], position: Sequence[float], fov: float, width: int, height: int, name: str = "view"
) -> Camera:
    """The pinhole camera of a viser camera pose: ``wxyz`` and ``position`` its camera-to-world rotation and
    centre (OpenCV axes, as viser reports them), ``fov`` its vertical field of view in radians, square
    pixels and the principal point at the image centre."""
    camera_to_world = torch.eye(4, dtype=torch.float64)
    camera_to_world[:3, :3] = rotation_from_quaternion(torch.tensor(list(wxyz), dtype=torch.float64))
    camera_to_world[:3, 3] = torch.tensor(list(position), dtype=torch.float64)
    world_to_camera = torch.eye(4, dtype=torch.float64)
    world_to_camera[:3, :3] = camera_to_world[:3, :3].T
    world_to_camera[:3, 3] = -camera_to_world[:3, :3].T @ camera_to_world[:3, 3]
    focal = height / (2.0 * math.tan(fov / 2.0))
    K = torch.tensor(
        [[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    return Camera(name, world_to_camera, K, width, height)


def pose_of_camera(camera: Camera) -> tuple[np.ndarray, np.ndarray, float]:
    """(wxyz, position, vertical field of view in radians) of ``camera``, as viser takes them."""
    camera_to_world = camera.camera_to_world()
    wxyz = quaternion_from_rotation(camera_to_world[:3, :3]).numpy()
    fov = 2.0 * math.atan(camera.height / (2.0 * float(camera.K[1, 1])))
    return wxyz, camera_to_world[:3, 3].numpy().copy(), fov


def splats_up_to_degree(splats: GaussianSplats, degree: int) -> GaussianSplats:
    """``splats`` with the SH coefficients above ``degree`` left out (the model itself if it has none)."""
    if degree >= splats.sh_degree:
        return splats
    return replace(splats, sh=splats.sh[:, : (degree + 1) ** 2].contiguous())


def render_image(
    splats: GaussianSplats,
    camera: Camera,
    mode: str = "RGB",
    background: Sequence[float] = (0.0, 0.0, 0.0),
    device: torch.device | None = None,
    model_type: str = "3dgs",
) -> np.ndarray:
    """uint8 [H, W, 3]: ``mode`` "RGB" as ``gsplat-py render`` writes images/<name>.png, "depth" as it writes
    depth/<name>.png (the depth range of this camera alone), "alpha" as alpha/<name>.png (grey), of
    Gaussians of ``model_type``."""
    if mode not in RENDER_MODES:
        raise ParameterError("mode", f"expected one of {', '.join(RENDER_MODES)}, got {mode!r}")
    frame = next(
        iter(render_cameras(splats, [camera], 1, background, mode == "depth", device, model_type=model_type))
    )
    if mode == "depth":
        return depth_image(frame, depth_colour_range(splats, [camera]))
    if mode == "alpha":
        return np.repeat(float_to_uint8(frame.alpha)[..., None], 3, axis=2)
    return float_to_uint8(frame.rgb)


def _thumbnail(photo: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil(photo.shape[1] / THUMBNAIL_WIDTH))
    return np.ascontiguousarray(photo[::step, ::step])


def _show_png(client, image: np.ndarray) -> None:
    """``client.scene.set_background_image(image, format="png")``, encoded faster: viser encodes with
    Pillow's default zlib level 6 (unless OpenCV is installed), ~4x slower at 800x600 than level 1 for ~20%
    fewer bytes, so the message is built here, through viser's message class (with viser's own call as the
    fallback should a later viser 1.x change it)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    try:
        from viser._messages import BackgroundImageMessage

        message = BackgroundImageMessage(format="png", rgb_data=buffer.getvalue(), depth_data=None)
        client.scene._websock_interface.queue_message(message)
    except (ImportError, AttributeError, TypeError):
        client.scene.set_background_image(image, format="png")


def _next_free_stem(folder: Path) -> str:
    index = 0
    while (folder / f"{VIEW_FILE_PREFIX}{index:03d}.png").exists() or (
        folder / f"{VIEW_FILE_PREFIX}{index:03d}.json"
    ).exists():
        index += 1
    return f"{VIEW_FILE_PREFIX}{index:03d}"


class RenderTimes:
    """A tab's render time as fixed + per_pixel x pixels (projecting and shading the Gaussians costs the
    same at any size), fitted by least squares to its last ``window`` renders."""

    def __init__(self, window: int = 16):
        self._samples: deque[tuple[int, float]] = deque(maxlen=window)

    def add(self, pixels: int, seconds: float) -> None:
        self._samples.append((pixels, seconds))

    def fit(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per pixel), or None before the first render."""
        if not self._samples:
            return None
        pixels = np.array([sample[0] for sample in self._samples], dtype=np.float64)
        seconds = np.array([sample[1] for sample in self._samples], dtype=np.float64)
        if np.ptp(pixels) > 0:
            per_pixel, fixed = np.polyfit(pixels, seconds, 1)
            if per_pixel > 0 and fixed >= 0:
                return float(fixed), float(per_pixel)
        return 0.0, float(seconds.sum() / pixels.sum())  # one size only, or noise: all proportional

    def preview_pixels(self, frame_s: float, full_pixels: int) -> int:
        """The pixel count of a preview that renders in about ``frame_s``, at most ``full_pixels``; when the
        fixed cost alone takes longer, the one that renders in twice the fixed cost (smaller previews would
        hardly be faster)."""
        fit = self.fit()
        if fit is None:
            return min(full_pixels, FIRST_PREVIEW_PIXELS)
        fixed, per_pixel = fit
        target = max(frame_s, 2.0 * fixed)
        return max(1, min(full_pixels, round((target - fixed) / per_pixel)))


@dataclass(frozen=True)
class _Pose:
    """A browser tab's camera as viser reports it (image size in device pixels)."""

    wxyz: tuple[float, ...]
    position: tuple[float, ...]
    fov: float
    width: int
    height: int


@dataclass(frozen=True)
class _Settings:
    mode: str = "RGB"
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sh_degree: int = 3


@dataclass(frozen=True)
class _StartView:
    """Where a new tab's camera starts, and which way is up (for viser's orbit controls)."""

    position: np.ndarray
    look_at: np.ndarray
    up: np.ndarray
    fov: float


def _start_view(splats: GaussianSplats, frame: WorldFrame, cameras: Sequence[Camera]) -> _StartView:
    """The first training camera, looking at the scene centre, with the cameras' up; without cameras a view
    of the Gaussians' bulk from the side, with COLMAP's usual up (-y) or the normalised frame's (+z)."""
    if cameras:
        camera_to_world = torch.stack([camera.camera_to_world() for camera in cameras])
        up = up_direction(camera_to_world).numpy()
        _, position, fov = pose_of_camera(cameras[0])
        forward = camera_to_world[0, :3, 2].numpy()
        try:
            distance = float(np.dot(scene_centre(camera_to_world).numpy() - position, forward))
        except ValueError:  # parallel optical axes: no centre
            distance = 0.0
        if not distance > 0.0:
            spread = camera_to_world[:, :3, 3].numpy() - camera_to_world[:, :3, 3].numpy().mean(axis=0)
            distance = max(float(np.median(np.linalg.norm(spread, axis=1))), 1e-3)
        return _StartView(position, position + distance * forward, up, fov)
    up = np.array([0.0, 0.0, 1.0]) if frame.name == "normalized" else np.array([0.0, -1.0, 0.0])
    means = splats.means.double().numpy()
    centre = np.median(means, axis=0) if len(means) else np.zeros(3)
    extent = float(np.percentile(np.linalg.norm(means - centre, axis=1), 90)) if len(means) else 1.0
    side = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    offset = (side + 0.4 * up) / np.linalg.norm(side + 0.4 * up)
    position = centre + offset * 2.5 * max(extent, 1e-3)
    return _StartView(position, centre, up, math.radians(DEFAULT_FOV_DEGREES))


def frustum_size(cameras: Sequence[Camera]) -> float:
    """The size (viser's ``scale``) of the training cameras' frustums: FRUSTUM_SIZE times their spread."""
    centres = np.stack([camera.camera_to_world()[:3, 3].numpy() for camera in cameras])
    spread = float(np.median(np.linalg.norm(centres - centres.mean(axis=0), axis=1)))
    return FRUSTUM_SIZE * (spread if spread > 0 else 1.0)


# --------------------------------------------------------------------------------------------------------
# The server


class Viewer:
    """Serves the viewer page for ``splats`` (module docstring) until :meth:`stop`.

    ``frame`` is the world frame of the model (recorded in saved camera files), ``cameras`` the training
    cameras shown as frustums (in that frame), with ``photos`` (uint8 [H, W, 3], one per camera, or none)
    shrunk onto them, ``output`` the folder "Save view" writes to (created on the first save),
    ``max_sh_degree`` the top of the SH degree slider (default: the model's; a training run's models grow to
    its configured degree), ``model_type`` the rasterizer of the model ("2dgs": surfels). ``host`` and
    ``port`` (0: any free port) are checked first: ParameterError if
    the port is in use. MissingPackageError without viser.
    """

    def __init__(
        self,
        splats: GaussianSplats,
        frame: WorldFrame,
        cameras: Sequence[Camera] = (),
        photos: Sequence[np.ndarray] = (),
        output: Path = Path("views"),
        device: str = "auto",
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        title: str = "gsplat_py",
        max_sh_degree: int | None = None,
        model_type: str = "3dgs",
    ):
        viser = require_viser()
        self.device = resolve_device(device)
        check_port_free(host, port)
        self.frame = frame
        self.model_type = model_type  # which rasterizer renders the model (gsplat_py.model.MODEL_TYPES)
        self.cameras = list(cameras)
        if photos and len(photos) != len(self.cameras):
            raise ValueError(f"{len(photos)} photos for {len(self.cameras)} cameras")
        self.thumbnails = [_thumbnail(photo) for photo in photos]
        self.output = Path(output)
        self.max_sh_degree = splats.sh_degree if max_sh_degree is None else max_sh_degree
        self._model_lock = threading.Lock()
        self._splats = splats
        self._model_note = ""
        self._sessions: dict[int, _Session] = {}
        self._sessions_lock = threading.Lock()
        self._save_lock = threading.Lock()
        self.start_view = _start_view(splats, frame, self.cameras)

        # viser prints a banner of its own; the caller prints the URL
        with contextlib.redirect_stdout(io.StringIO()):
            self.server = viser.ViserServer(host=host, port=port, label=title, verbose=False)
        self.port = int(self.server.get_port())
        if port != 0 and self.port != port:  # taken between the check and the start
            self.server.stop()
            raise ParameterError("port", f"{{port}} {port} on {host} is in use; choose another {{port}}")
        self.host = host
        self.server.gui.configure_theme(show_share_button=False)
        self.server.gui.main_panel.dock_right()
        self.server.scene.set_up_direction(tuple(float(v) for v in self.start_view.up))
        initial = self.server.initial_camera
        initial.up = tuple(float(v) for v in self.start_view.up)
        initial.position = tuple(float(v) for v in self.start_view.position)
        initial.look_at = tuple(float(v) for v in self.start_view.look_at)
        initial.fov = self.start_view.fov
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)

    @property
    def url(self) -> str:
        shown = "localhost" if self.host in ("127.0.0.1", "0.0.0.0", "localhost", "::", "::1") else self.host
        return f"http://{shown}:{self.port}"

    @property
    def client_count(self) -> int:
        with self._sessions_lock:
            return len(self._sessions)

    def model(self) -> tuple[GaussianSplats, str]:
        """The model shown now, and its note (e.g. the training step)."""
        with self._model_lock:
            return self._splats, self._model_note

    def set_model(self, splats: GaussianSplats, note: str = "") -> None:
        """Show ``splats`` from now on (every tab renders it again); safe from any thread."""
        with self._model_lock:
            self._splats, self._model_note = splats, note
        with self._sessions_lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.invalidate(moved=False)

    def stop(self) -> None:
        with self._sessions_lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close()
        self.server.stop()

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def save_view(self, camera: Camera, image: np.ndarray) -> Path:
        """Write ``image`` as OUTPUT/view_NNN.png and ``camera`` (named view_NNN) as OUTPUT/view_NNN.json;
        returns the PNG's path."""
        with self._save_lock:
            self.output.mkdir(parents=True, exist_ok=True)
            stem = _next_free_stem(self.output)
            write_png(self.output / f"{stem}.png", image)
            write_cameras_json(self.output / f"{stem}.json", [replace(camera, name=stem)], self.frame)
        return self.output / f"{stem}.png"

    def _connect(self, client) -> None:
        session = _Session(self, client)
        with self._sessions_lock:
            self._sessions[client.client_id] = session

    def _disconnect(self, client) -> None:
        with self._sessions_lock:
            session = self._sessions.pop(client.client_id, None)
        if session is not None:
            session.close()


class _Session:
    """One browser tab: its controls, its camera and the thread that renders for it."""

    def __init__(self, viewer: Viewer, client):
        self.viewer = viewer
        self.client = client
        self._changed = threading.Condition()
        self._version = 0  # bumped by every change of camera, settings or model
        self._exact_version = -1  # the version of the last exact frame sent
        self._preview_version = -1
        self._moved_at = -math.inf
        self._pose: _Pose | None = None
        self._settings = _Settings(sh_degree=viewer.max_sh_degree)
        self._closed = False
        self._render_times = RenderTimes()
        self._frames = 0
        self._build_controls()
        client.camera.on_update(self._camera_moved)
        try:
            # the camera message that made this client known may have been handed out before the
            # callback above was registered
            self._camera_moved(client.camera)
        except AssertionError:  # viser's camera has no state before its first message, which will come
            pass
        self._thread = threading.Thread(
            target=self._render_loop, name=f"gsplat_py viewer tab {client.client_id}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ controls

    def _build_controls(self) -> None:
        gui = self.client.gui
        viewer = self.viewer
        with gui.add_folder("View"):
            self.fov = gui.add_slider(
                "FOV (°)",
                min=5.0,
                max=150.0,
                step=1.0,
                initial_value=round(math.degrees(viewer.start_view.fov)),
            )
            self.mode = gui.add_dropdown("Render", RENDER_MODES, initial_value="RGB")
            self.background = gui.add_rgb("Background", (0, 0, 0))
            self.sh_degree = gui.add_slider(
                "Max SH degree",
                min=0,
                max=max(viewer.max_sh_degree, 1),
                step=1,
                initial_value=viewer.max_sh_degree,
                disabled=viewer.max_sh_degree == 0,
            )
            self.show_cameras = gui.add_checkbox(
                "Training cameras", initial_value=True, disabled=not viewer.cameras
            )
            self.save = gui.add_button("Save view", hint=f"PNG and camera JSON into {viewer.output}")
            self.status = gui.add_markdown("waiting for the first frame")

        @self.fov.on_update
        def _(event) -> None:
            if event.client is not None:  # the user moved the slider (not the camera echoing it)
                self.client.camera.fov = math.radians(self.fov.value)

        @self.mode.on_update
        def _(_) -> None:
            self._change_settings(mode=str(self.mode.value))

        @self.background.on_update
        def _(_) -> None:
            red, green, blue = self.background.value
            self._change_settings(background=(red / 255.0, green / 255.0, blue / 255.0))

        @self.sh_degree.on_update
        def _(_) -> None:
            self._change_settings(sh_degree=int(self.sh_degree.value))

        @self.show_cameras.on_update
        def _(_) -> None:
            self._show_frustums()

        @self.save.on_click
        def _(_) -> None:
            self._save_view()

        self.frustums = []
        # The frustum of the camera the view stands at (it starts at the first one) is hidden: its photo,
        # just in front of the eye, would cover the picture.
        self._standing_at: int | None = 0
        if viewer.cameras:
            size = frustum_size(viewer.cameras)
            for index, camera in enumerate(viewer.cameras):
                wxyz, position, fov = pose_of_camera(camera)
                frustum = self.client.scene.add_camera_frustum(
                    f"/training_cameras/{index:05d}",
                    fov=fov,
                    aspect=camera.width / camera.height,
                    scale=size,
                    thickness=1.5,
                    thickness_units="screen",
                    color=(60, 110, 230),
                    wxyz=wxyz,
                    position=position,
                    image=viewer.thumbnails[index] if viewer.thumbnails else None,
                    format="jpeg",
                    jpeg_quality=80,
                )
                frustum.on_click(lambda _, index=index: self.jump_to(index))
                self.frustums.append(frustum)
            self._show_frustums()

    def _show_frustums(self) -> None:
        for index, frustum in enumerate(self.frustums):
            frustum.visible = bool(self.show_cameras.value) and index != self._standing_at

    def jump_to(self, index: int) -> None:
        """Move this tab's camera to training camera ``index`` (pose and vertical field of view)."""
        wxyz, position, fov = pose_of_camera(self.viewer.cameras[index])
        self._standing_at = index
        self._show_frustums()
        with self.client.atomic():
            self.client.camera.fov = fov
            self.client.camera.wxyz = wxyz
            self.client.camera.position = position

    def _change_settings(self, **changes) -> None:
        with self._changed:
            self._settings = replace(self._settings, **changes)
        self.invalidate(moved=False)

    # ------------------------------------------------------------------ rendering

    def _camera_moved(self, camera) -> None:
        pose = _Pose(
            tuple(float(v) for v in camera.wxyz),
            tuple(float(v) for v in camera.position),
            float(camera.fov),
            int(camera.image_width),
            int(camera.image_height),
        )
        with self._changed:
            self._pose = pose
        self.invalidate(moved=True)
        degrees = math.degrees(pose.fov)
        if abs(degrees - float(self.fov.value)) >= 0.5:
            self.fov.value = round(degrees)

    def invalidate(self, moved: bool) -> None:
        """The picture is out of date (``moved``: because the camera moves)."""
        with self._changed:
            self._version += 1
            if moved:
                self._moved_at = time.monotonic()
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _next_job(self) -> tuple[str, int, _Pose, _Settings] | None:
        """Waits for something to render: ("preview" | "exact", version, pose, settings); None when
        closed."""
        with self._changed:
            while not self._closed:
                pose = self._pose
                if (
                    pose is not None
                    and pose.width > 0
                    and pose.height > 0
                    and self._version != self._exact_version
                ):
                    still_for = time.monotonic() - self._moved_at
                    if still_for >= REST_S:
                        return "exact", self._version, pose, self._settings
                    if self._version != self._preview_version:
                        return "preview", self._version, pose, self._settings
                    self._changed.wait(REST_S - still_for)
                else:
                    self._changed.wait()
        return None

    def _preview_size(self, pose: _Pose) -> tuple[int, int]:
        pixels = self._render_times.preview_pixels(PREVIEW_FRAME_S, pose.width * pose.height)
        scale = min(1.0, math.sqrt(pixels / (pose.width * pose.height)))
        width = max(min(MIN_PREVIEW_WIDTH, pose.width), round(pose.width * scale))
        return width, max(1, round(pose.height * width / pose.width))

    def _render(self, pose: _Pose, settings: _Settings, width: int, height: int) -> tuple[Camera, np.ndarray]:
        splats, _ = self.viewer.model()
        camera = camera_from_pose(pose.wxyz, pose.position, pose.fov, width, height)
        started = time.perf_counter()
        image = render_image(
            splats_up_to_degree(splats, settings.sh_degree),
            camera,
            settings.mode,
            settings.background,
            self.viewer.device,
            self.viewer.model_type,
        )
        self._render_times.add(width * height, time.perf_counter() - started)
        return camera, image

    def _render_loop(self) -> None:
        while (job := self._next_job()) is not None:
            kind, version, pose, settings = job
            width, height = (pose.width, pose.height) if kind == "exact" else self._preview_size(pose)
            started = time.perf_counter()
            try:
                _, image = self._render(pose, settings, width, height)
                if self._closed:  # the tab went away while this frame rendered
                    return
                if kind == "exact":
                    _show_png(self.client, image)
                else:
                    self.client.scene.set_background_image(
                        image, format="jpeg", jpeg_quality=PREVIEW_JPEG_QUALITY
                    )
            except Exception as error:  # a tab must survive a failed frame (e.g. closed mid-send)
                if self._closed:
                    return
                self.status.content = f"render failed: {type(error).__name__}: {error}"
                with self._changed:
                    self._exact_version = self._preview_version = version
                continue
            self._frames += 1
            _, note = self.viewer.model()
            self.status.content = (
                f"{'exact' if kind == 'exact' else 'preview'} {width}×{height}, "
                f"{1000.0 * (time.perf_counter() - started):.0f} ms (frame {self._frames})"
                + (f" · {note}" if note else "")
            )
            with self._changed:
                if kind == "exact":
                    self._exact_version = version
                self._preview_version = version

    def _save_view(self) -> None:
        with self._changed:
            pose, settings = self._pose, self._settings
        if pose is None:
            return
        camera, image = self._render(pose, settings, pose.width, pose.height)
        path = self.viewer.save_view(camera, image)
        self.client.add_notification(
            "View saved", f"{path} and {path.with_suffix('.json')}", auto_close_seconds=8.0
        )


# --------------------------------------------------------------------------------------------------------
# Live training


class _TrainingPanel:
    """The shared "Training" folder: the numbers of the run and the pause button (for every tab)."""

    def __init__(self, viewer: Viewer, on_pause_toggle):
        gui = viewer.server.gui
        with gui.add_folder("Training", order=-1.0):
            self.text = gui.add_markdown("starting")
            self.pause = gui.add_button("Pause training")
        self.pause.on_click(lambda _: on_pause_toggle())


class LiveTraining(TrainingHook):
    """Shows a training run in ``viewer`` (module docstring): its numbers, a pause button, and its model,
    copied at most every ``refresh_s`` seconds while a page is open, and at the last step."""

    def __init__(self, viewer: Viewer, refresh_s: float = LIVE_REFRESH_S):
        self.viewer = viewer
        self.refresh_s = refresh_s
        self._resume = threading.Event()
        self._resume.set()
        self._last_copy = -math.inf
        self._last_panel = -math.inf
        self._psnr: tuple[int, float] | None = None
        self._report: StepReport | None = None
        self._held = False  # the trainer waits in wait_while_paused
        self.panel = _TrainingPanel(viewer, self.toggle_pause)

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def pause(self) -> None:
        self._resume.clear()
        self.panel.pause.label = "Resume training"
        self._show_numbers()

    def resume(self) -> None:
        self._resume.set()
        self.panel.pause.label = "Pause training"
        self._show_numbers()

    def toggle_pause(self) -> None:
        if self.paused:
            self.resume()
        else:
            self.pause()

    def after_step(self, trainer: Trainer, report: StepReport) -> None:
        self._report = report
        now = time.monotonic()
        last = report.step == report.steps
        if now - self._last_panel >= PANEL_REFRESH_S or last:
            self._last_panel = now
            self._show_numbers()
        if last:
            self.panel.pause.disabled = True
        if last or (self.viewer.client_count > 0 and now - self._last_copy >= self.refresh_s):
            self._last_copy = now
            splats = params_to_splats(trainer.params)
            self.viewer.set_model(splats_up_to_degree(splats, report.sh_degree), f"step {report.step:,}")

    def after_evaluation(self, trainer: Trainer, record: dict) -> None:
        self._psnr = (int(record["step"]), float(record["psnr"]))
        self._show_numbers()

    def wait_while_paused(self) -> None:
        if self._resume.is_set():
            return
        self._held = True
        self._show_numbers()
        try:
            # in slices, so that Ctrl-C (a KeyboardInterrupt in this, the main thread) is not held up
            while not self._resume.wait(timeout=0.2):
                pass
        finally:
            self._held = False

    def _show_numbers(self) -> None:
        report = self._report
        if report is None:
            return
        if self.paused:
            state = "paused" if self._held else "pausing"  # paused: held after the step shown
        else:
            state = "done" if report.step == report.steps else "training"
        psnr = f"{self._psnr[1]:.2f} dB (step {self._psnr[0]:,})" if self._psnr is not None else "not yet"
        self.panel.text.content = (
            f"**{state}** · step {report.step:,} / {report.steps:,}  \n"
            f"loss {report.loss:.4f} · test PSNR {psnr}  \n"
            f"{report.num_gaussians:,} Gaussians · {report.steps_per_s:.1f} steps/s"
        )
