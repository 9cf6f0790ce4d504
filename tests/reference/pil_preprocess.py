"""Pillow reference for amos's preprocessing: what PIL (libjpeg-turbo decoding, PIL's
resampling) and torchvision's geometry give for a recipe, as uint8 HWC tensors.

    python3 tests/reference/pil_preprocess.py DATA RECIPE OUT.npy [LIMIT]

DATA is an ImageFolder (`<wnid>/<image>`); images are taken in sorted path order, the
order `amos-io` lists them in. RECIPE is one of:

- efficientnet-lite: centre square crop of side int(R/(R+32)*min(h,w)) at offsets
  ((h-s+1)//2, (w-s+1)//2), bicubic resize to R x R (the TF EfficientNet-Lite eval, as in
  ../shared/README.md);
- torchvision: bilinear resize of the shorter side to int(R/0.875) (torchvision
  `Resize(256)`: the longer side truncated), centre crop R with Python rounding
  (torchvision `CenterCrop`).

R = 224. OUT.npy holds uint8 [N, R, R, 3]; OUT.txt the image paths, one per line.
"""

import os
import sys

import numpy as np
from PIL import Image

R = 224


def efficientnet_lite(im):
    w, h = im.size
    s = int(R / (R + 32) * min(h, w))
    top, left = (h - s + 1) // 2, (w - s + 1) // 2
    return im.crop((left, top, left + s, top + s)).resize((R, R), Image.BICUBIC)


def torchvision(im):
    short = int(R / 0.875)
    w, h = im.size
    if w <= h:
        nw, nh = short, int(short * h / w)
    else:
        nh, nw = short, int(short * w / h)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - R) / 2.0)), int(round((nw - R) / 2.0))
    return im.crop((left, top, left + R, top + R))


RECIPES = {"efficientnet-lite": efficientnet_lite, "torchvision": torchvision}


def main(argv):
    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    data, recipe, out = argv[1], argv[2], argv[3]
    limit = int(argv[4]) if len(argv) == 5 else None
    geometry = RECIPES[recipe]
    files = sorted(
        os.path.join(d, f)
        for d in sorted(os.listdir(data))
        if os.path.isdir(os.path.join(data, d))
        for f in os.listdir(os.path.join(data, d))
        if f.lower().endswith((".jpg", ".jpeg", ".png"))
    )[:limit]
    arrays = np.zeros((len(files), R, R, 3), dtype=np.uint8)
    for i, f in enumerate(files):
        with Image.open(os.path.join(data, f)) as im:
            arrays[i] = np.asarray(geometry(im.convert("RGB")), dtype=np.uint8)
    np.save(out, arrays)
    with open(os.path.splitext(out)[0] + ".txt", "w") as listing:
        listing.write("\n".join(files) + "\n")
    print(len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
