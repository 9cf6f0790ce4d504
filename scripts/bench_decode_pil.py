"""Pillow's decode + preprocess throughput on the same bytes and recipe as
`amos-convert decode-bench` (one thread, median of 3 runs after a warm-up):

    python3 scripts/bench_decode_pil.py DATA [efficientnet-lite|torchvision]
"""

import io
import os
import sys
import time

from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
from pil_preprocess import RECIPES  # noqa: E402


def main(argv):
    data = argv[1]
    geometry = RECIPES[argv[2] if len(argv) > 2 else "efficientnet-lite"]
    files = sorted(
        os.path.join(data, d, f)
        for d in os.listdir(data)
        if os.path.isdir(os.path.join(data, d))
        for f in os.listdir(os.path.join(data, d))
    )
    blobs = [open(f, "rb").read() for f in files]

    def run():
        start = time.perf_counter()
        for b in blobs:
            geometry(Image.open(io.BytesIO(b)).convert("RGB")).tobytes()
        return time.perf_counter() - start

    run()
    times = sorted(run() for _ in range(3))
    print(f"{len(blobs)} images, Pillow {Image.__version__}: {len(blobs) / times[1]:.1f} images/s")


if __name__ == "__main__":
    main(sys.argv)
