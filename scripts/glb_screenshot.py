"""A GLB as a user's viewer shows it: three.js (from the npm registry, vendored once into build/viewer/, never a
CDN at run time) in headless Chromium, through a small page served on 127.0.0.1; writes a PNG screenshot.

    .venv/bin/python scripts/glb_screenshot.py results/demo/export/demo.glb docs/demo_glb.png

Needs Debian's chromium (`make test` installs it as root) and npm for the first run (three@THREE_VERSION is
installed into build/viewer/node_modules; later runs reuse it). The page frames the model's bounding box
from --azimuth/--elevation (degrees; the GLB is y-up), lit by an ambient and a key light, as three.js's
MeshStandardMaterial renders the GLB's PBR material. The page posts its canvas back to the server once the model
has been drawn, so a large GLB that takes minutes to decode under SwiftShader is waited for (up to --timeout
seconds), not cut off by a fixed budget. Exit status 2 with one line when a tool is missing or the page fails.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIEWER = ROOT / "build" / "viewer"
THREE_VERSION = "0.187.0"
# the files the page imports: three's module build and the glTF loader with what it imports
THREE_FILES = [
    "build/three.module.js",
    "build/three.core.js",
    "examples/jsm/loaders/GLTFLoader.js",
    "examples/jsm/utils/BufferGeometryUtils.js",
    "examples/jsm/utils/SkeletonUtils.js",
]

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>loading</title>
<style>html,body{margin:0;background:#f2f2f2;overflow:hidden}</style>
<script type="importmap">{"imports": {"three": "./three/build/three.module.js"}}</script></head>
<body><script type="module">
import * as THREE from 'three';
import { GLTFLoader } from './three/examples/jsm/loaders/GLTFLoader.js';
const W = __W__, H = __H__, AZ = __AZ__ * Math.PI / 180, EL = __EL__ * Math.PI / 180;
const renderer = new THREE.WebGLRenderer({antialias: true, preserveDrawingBuffer: true});
renderer.setSize(W, H);
renderer.setClearColor(0xf2f2f2);
document.body.appendChild(renderer.domElement);
const scene = new THREE.Scene();
scene.add(new THREE.AmbientLight(0xffffff, 1.6));
const camera = new THREE.PerspectiveCamera(35, W / H, 0.001, 1000);
new GLTFLoader().load('model.glb', (gltf) => {
  scene.add(gltf.scene);
  const box = new THREE.Box3().setFromObject(gltf.scene);
  const c = box.getCenter(new THREE.Vector3()), r = box.getSize(new THREE.Vector3()).length() / 2;
  const d = r / Math.sin(THREE.MathUtils.degToRad(35 / 2)) * 1.05;
  const dir = new THREE.Vector3(Math.cos(EL) * Math.sin(AZ), Math.sin(EL), Math.cos(EL) * Math.cos(AZ));
  camera.position.copy(c).addScaledVector(dir, d);
  camera.near = d / 100; camera.far = d * 10; camera.updateProjectionMatrix();
  camera.lookAt(c);
  const key = new THREE.DirectionalLight(0xffffff, 1.2);
  key.position.copy(camera.position).add(new THREE.Vector3(0, r, 0));
  scene.add(key);
  let frames = 0;
  const tick = () => {
    renderer.render(scene, camera);
    if (++frames > 2) renderer.domElement.toBlob((png) => fetch('shot', {method: 'POST', body: png}));
    else requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}, undefined, (e) => { fetch('error', {method: 'POST', body: String(e)}); });
</script></body></html>
"""


def vendor_three(viewer: Path = VIEWER) -> Path:
    """build/viewer/node_modules/three, installed from the npm registry once (a StageError-like SystemExit
    naming the fix when npm is missing or offline)."""
    three = viewer / "node_modules" / "three"
    if all((three / f).is_file() for f in THREE_FILES):
        return three
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(
            "glb_screenshot: npm is not installed (Debian: apt-get install npm); it fetches three.js "
            "from the npm registry once"
        )
    viewer.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(viewer),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            f"three@{THREE_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0 or not all((three / f).is_file() for f in THREE_FILES):
        raise SystemExit(
            f"glb_screenshot: npm could not install three@{THREE_VERSION} into {viewer}: {proc.stderr.strip()[-300:]}"
        )
    return three


def chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("glb_screenshot: chromium is not installed (Debian: apt-get install chromium)")
    return browser


def screenshot(
    glb: Path,
    out: Path,
    *,
    width: int = 960,
    height: int = 720,
    azimuth: float = 30.0,
    elevation: float = 20.0,
    timeout_s: float = 600,
) -> Path:
    """Serve a page with the GLB on 127.0.0.1 and screenshot it in headless Chromium (WebGL via SwiftShader)."""
    glb, out = Path(glb).resolve(), Path(out).resolve()
    three = vendor_three()
    browser = chromium()
    with tempfile.TemporaryDirectory(prefix="glb_view_") as tmp:
        site = Path(tmp) / "site"
        for rel in THREE_FILES:
            (site / "three" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(three / rel, site / "three" / rel)
        shutil.copyfile(glb, site / "model.glb")
        page = (
            PAGE.replace("__W__", str(width))
            .replace("__H__", str(height))
            .replace("__AZ__", str(azimuth))
            .replace("__EL__", str(elevation))
        )
        (site / "index.html").write_text(page)
        posted: dict[str, bytes] = {}
        done = threading.Event()
        handler = functools.partial(_PageHandler, posted, done, directory=str(site))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        log = Path(tmp) / "chromium.log"  # a file, not a pipe: nobody reads a pipe while the page loads
        with log.open("w") as log_file:
            proc = subprocess.Popen(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",
                    "--hide-scrollbars",
                    "--use-angle=swiftshader",
                    "--enable-unsafe-swiftshader",
                    "--ignore-gpu-blocklist",
                    f"--window-size={width},{height}",
                    f"--user-data-dir={Path(tmp) / 'profile'}",
                    url,
                ],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        try:
            done.wait(timeout_s)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            server.shutdown()
            server.server_close()
        stderr = log.read_text(errors="replace")
    if "error" in posted:
        raise SystemExit(f"glb_screenshot: three.js could not load {glb}: {posted['error'].decode(errors='replace')}")
    if "shot" not in posted:
        raise SystemExit(
            f"glb_screenshot: the page drew nothing within {timeout_s:.0f} s (raise --timeout for a "
            f"large GLB); chromium said: {(stderr or '').strip()[-500:]}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(posted["shot"])
    return out


class _PageHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the page's folder; takes the page's POSTs of its canvas (``/shot``, a PNG) or of its error."""

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".glb": "model/gltf-binary",
    }

    def __init__(self, posted: dict[str, bytes], done: threading.Event, *args, **kwargs):
        self.posted, self.done = posted, done
        super().__init__(*args, **kwargs)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.posted[self.path.strip("/")] = body
        self.send_response(204)
        self.end_headers()
        self.done.set()

    def log_message(self, *args) -> None:  # the page's requests are not worth a line each
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("glb", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--width", type=int, default=960)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--azimuth", type=float, default=30.0)
    p.add_argument("--elevation", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the page to draw the model")
    args = p.parse_args(argv)
    try:
        path = screenshot(
            args.glb,
            args.out,
            width=args.width,
            height=args.height,
            azimuth=args.azimuth,
            elevation=args.elevation,
            timeout_s=args.timeout,
        )
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
