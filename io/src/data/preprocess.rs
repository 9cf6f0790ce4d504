//! Crop, resize and normalise images into model inputs.
//!
//! A [`Preprocess`] describes one recipe: geometry ([`Resize`] + output
//! size `crop`), the [`Interpolation`] filter, and per-channel `mean`/`std`.
//! The three presets reproduce the recipes behind `shared/reference/` (see
//! `shared/README.md`) with Pillow's exact geometry and resampler.
//!
//! **Units of `mean` and `std`: 0..255 pixel units.** The normalised value
//! is `(x - mean[c]) / std[c]` with `x` the raw `u8` sample as `f32`, so
//! efficientnet-lite is mean 127, std 128; CIFAR ("x/255") is mean 0, std
//! 255; torchvision's ImageNet constants are multiplied by 255 (mean
//! 0.485·255 = 123.675, …). The first two are bit-identical to the
//! references' float32 arithmetic; for torchvision the result differs from
//! torchvision's own `(x/255 - m)/s` by at most a few float32 ulps.

use std::path::Path;
use std::str::FromStr;

use rayon::prelude::*;

use super::DataError;
use super::decode::{RgbImage, decode_rgb8};
use super::resample::{Filter, Rect, Window, resize_crop};

/// Resampling filter for the resize step (Pillow's definitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// Pillow `BILINEAR` (antialiased triangle filter); torchvision's default.
    Bilinear,
    /// Pillow `BICUBIC` (Catmull-Rom, a = −0.5); the TF efficientnet recipe.
    Bicubic,
    /// Pillow `NEAREST`.
    Nearest,
}

impl FromStr for Interpolation {
    type Err = DataError;

    /// Accepts `bilinear`/`linear`, `bicubic`/`cubic`, `nearest` (any case).
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bilinear" | "linear" => Ok(Interpolation::Bilinear),
            "bicubic" | "cubic" => Ok(Interpolation::Bicubic),
            "nearest" => Ok(Interpolation::Nearest),
            _ => Err(DataError::config(
                "interpolation",
                format!("unknown {s:?} (expected bilinear, bicubic or nearest)"),
            )),
        }
    }
}

impl Interpolation {
    fn filter(self) -> Filter {
        match self {
            Interpolation::Bilinear => Filter::Bilinear,
            Interpolation::Bicubic => Filter::Bicubic,
            Interpolation::Nearest => Filter::Nearest,
        }
    }
}

/// Geometry applied before normalisation; the output is always `crop` (H, W).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// No resize: centre-crop `crop` from the decoded image with
    /// torchvision's `CenterCrop` rules (zero padding when smaller).
    None,
    /// TF efficientnet(-lite) eval: a centred square of side
    /// `s = int(R / (R + pad) * min(h, w))` at offsets
    /// `((h - s + 1) // 2, (w - s + 1) // 2)`, resized to R×R, R = crop
    /// size. (For a non-square crop each axis uses its own R.)
    CenterCropPadded { pad: u32 },
    /// torchvision eval: `Resize(size)` (shorter side to `size`, longer side
    /// `int(size * long / short)`), then `CenterCrop(crop)` with offsets
    /// `int(round((h - H) / 2))` (round half to even) and zero padding when
    /// the crop is larger than the image.
    ShorterSide { size: u32 },
}

/// One preprocessing recipe. Fields are public so a command line can set
/// them directly; [`Preprocess::preset`] and [`Preprocess::from_flags`] are
/// the usual constructors.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub resize: Resize,
    /// Output (H, W): the model's input size.
    pub crop: (u32, u32),
    pub interp: Interpolation,
    /// Per-channel (R, G, B) mean, in 0..255 pixel units (module docs).
    pub mean: [f32; 3],
    /// Per-channel (R, G, B) divisor, in 0..255 pixel units (module docs).
    pub std: [f32; 3],
}

/// Explicit overrides as a command line offers them
/// (`--resize N --crop N --interp NAME --mean a,b,c --std a,b,c`), applied
/// on top of a preset by [`Preprocess::from_flags`]. `None` keeps the
/// preset's value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreprocessFlags {
    /// Shorter side to resize to (torchvision `Resize(N)`); `0` = no resize.
    pub resize: Option<u32>,
    /// Square output size N×N.
    pub crop: Option<u32>,
    /// `bilinear`, `bicubic` or `nearest`.
    pub interp: Option<String>,
    /// `a,b,c` (or one value for all channels), 0..255 units.
    pub mean: Option<String>,
    /// `a,b,c` (or one value for all channels), 0..255 units.
    pub std: Option<String>,
}

/// Parses `"a,b,c"` (or a single `"a"`, meaning all three channels) into
/// per-channel values; `what` names the flag in errors.
pub fn parse_triple(s: &str, what: &str) -> Result<[f32; 3], DataError> {
    let vals: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|e| DataError::config(what, format!("{s:?}: {e}")))?;
    match vals[..] {
        [a] => Ok([a; 3]),
        [a, b, c] => Ok([a, b, c]),
        _ => Err(DataError::config(
            what,
            format!("{s:?}: expected 1 or 3 comma-separated numbers"),
        )),
    }
}

/// ImageNet mean/std as torchvision uses them (0..1 units).
const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

impl Preprocess {
    /// Names accepted by [`Preprocess::preset`].
    pub const PRESETS: [&'static str; 3] = ["efficientnet-lite", "torchvision", "cifar"];

    /// A named recipe for a model whose input is `input_hw` (H, W):
    ///
    /// * `efficientnet-lite`: padded centre crop (pad 32), bicubic,
    ///   `(x - 127) / 128`;
    /// * `torchvision`: shorter side to `int(R / 0.875)` (R = min(H, W);
    ///   256 for 224) bilinear, centre crop, ImageNet mean/std;
    /// * `cifar`: no resize, `x / 255`.
    pub fn preset(name: &str, input_hw: (u32, u32)) -> Result<Preprocess, DataError> {
        let p = match name {
            "efficientnet-lite" => Preprocess {
                resize: Resize::CenterCropPadded { pad: 32 },
                crop: input_hw,
                interp: Interpolation::Bicubic,
                mean: [127.0; 3],
                std: [128.0; 3],
            },
            "torchvision" => {
                let r = input_hw.0.min(input_hw.1);
                Preprocess {
                    // Python's int(R / 0.875), same f64 arithmetic.
                    resize: Resize::ShorterSide {
                        size: (r as f64 / 0.875) as u32,
                    },
                    crop: input_hw,
                    interp: Interpolation::Bilinear,
                    mean: IMAGENET_MEAN.map(|m| (m * 255.0) as f32),
                    std: IMAGENET_STD.map(|s| (s * 255.0) as f32),
                }
            }
            "cifar" => Preprocess {
                resize: Resize::None,
                crop: input_hw,
                interp: Interpolation::Bilinear,
                mean: [0.0; 3],
                std: [255.0; 3],
            },
            _ => {
                return Err(DataError::config(
                    "preset",
                    format!("unknown {name:?} (expected one of {:?})", Self::PRESETS),
                ));
            }
        };
        p.validate()?;
        Ok(p)
    }

    /// `preset` with the explicit `flags` applied on top (see
    /// [`PreprocessFlags`]).
    pub fn from_flags(
        preset: &str,
        input_hw: (u32, u32),
        flags: &PreprocessFlags,
    ) -> Result<Preprocess, DataError> {
        let mut p = Self::preset(preset, input_hw)?;
        if let Some(n) = flags.resize {
            p.resize = if n == 0 {
                Resize::None
            } else {
                Resize::ShorterSide { size: n }
            };
        }
        if let Some(n) = flags.crop {
            p.crop = (n, n);
        }
        if let Some(s) = &flags.interp {
            p.interp = s.parse()?;
        }
        if let Some(s) = &flags.mean {
            p.mean = parse_triple(s, "mean")?;
        }
        if let Some(s) = &flags.std {
            p.std = parse_triple(s, "std")?;
        }
        p.validate()?;
        Ok(p)
    }

    /// Checks the recipe can run: non-empty output, non-zero resize, finite
    /// mean, finite non-zero std.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.crop.0 == 0 || self.crop.1 == 0 {
            return Err(DataError::config(
                "crop",
                format!("empty output size {:?}", self.crop),
            ));
        }
        if self.resize == (Resize::ShorterSide { size: 0 }) {
            return Err(DataError::config("resize", "shorter side must be > 0"));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(DataError::config(
                "mean",
                format!("not finite: {:?}", self.mean),
            ));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err(DataError::config(
                "std",
                format!("must be finite and non-zero: {:?}", self.std),
            ));
        }
        Ok(())
    }

    /// Number of `f32` values of one preprocessed image (`3 * H * W`).
    pub fn chw_len(&self) -> usize {
        3 * self.crop.0 as usize * self.crop.1 as usize
    }

    /// Reads, decodes (JPEG incl. grey and CMYK, PNG incl. grey/alpha/16-bit
    /// → RGB8) and crops/resizes one file to HWC RGB `u8` of size `crop`.
    pub fn load_u8(&self, path: &Path) -> Result<Vec<u8>, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        self.load_u8_from_bytes(&bytes, &path.display().to_string())
    }

    /// As [`Preprocess::load_u8`] on bytes in memory; `name` is used in
    /// error messages.
    pub fn load_u8_from_bytes(&self, bytes: &[u8], name: &str) -> Result<Vec<u8>, DataError> {
        let img = decode_rgb8(bytes, name)?;
        Ok(self.crop_resize(&img))
    }

    /// The geometry step alone, on an already decoded image: HWC RGB `u8`
    /// of size `crop`.
    pub fn crop_resize(&self, img: &RgbImage) -> Vec<u8> {
        let (rect, out_w, out_h, window) = self.plan(img.width, img.height);
        resize_crop(img, rect, out_w, out_h, window, self.interp.filter())
    }

    /// Where to crop, what size to resize the crop to, and which window of
    /// the result to keep, for a `w`×`h` image. Mirrors the Python of the
    /// reference recipes line by line (same f64 operations, same integer
    /// rounding) so the crop boxes are identical.
    fn plan(&self, w: u32, h: u32) -> (Rect, u32, u32, Window) {
        let (ch, cw) = self.crop;
        let full = Rect {
            left: 0,
            top: 0,
            width: w,
            height: h,
        };
        match self.resize {
            Resize::CenterCropPadded { pad } => {
                let m = w.min(h) as f64;
                // int(R / (R + pad) * min(h, w)), evaluated left to right.
                let side = |r: u32| ((r as f64 / (r as f64 + pad as f64) * m) as u32).max(1);
                let (sh, sw) = (side(ch).min(h), side(cw).min(w));
                let rect = Rect {
                    left: (w - sw).div_ceil(2),
                    top: (h - sh).div_ceil(2),
                    width: sw,
                    height: sh,
                };
                (rect, cw, ch, Self::centre_window(cw, ch, cw, ch))
            }
            Resize::ShorterSide { size } => {
                // torchvision _compute_resized_output_size: int(size * long / short).
                let long = |l: u32, s: u32| ((size as f64 * l as f64 / s as f64) as u32).max(1);
                let (nw, nh) = if w <= h {
                    (size, long(h, w))
                } else {
                    (long(w, h), size)
                };
                (full, nw, nh, Self::centre_window(nw, nh, cw, ch))
            }
            Resize::None => (full, w, h, Self::centre_window(w, h, cw, ch)),
        }
    }

    /// torchvision `CenterCrop((ch, cw))` of a `w`×`h` image as a window:
    /// offset `int(round((h - ch) / 2.0))` (half to even) when the image is
    /// larger; when smaller, the image is first padded by `(ch - h) // 2` on
    /// top (the rest at the bottom), i.e. a negative offset.
    fn centre_window(w: u32, h: u32, cw: u32, ch: u32) -> Window {
        fn offset(size: u32, crop: u32) -> i64 {
            let d = size as i64 - crop as i64;
            if d < 0 {
                -((-d) / 2)
            } else {
                // round(d / 2) with ties to even.
                let q = d / 2;
                if d % 2 == 1 && q % 2 == 1 { q + 1 } else { q }
            }
        }
        Window {
            top: offset(h, ch),
            left: offset(w, cw),
            height: ch,
            width: cw,
        }
    }

    /// Normalises HWC RGB `u8` (`H * W * 3`) into CHW `f32` (`3 * H * W`):
    /// `(x - mean[c]) / std[c]`, computed in `f32` exactly as the reference
    /// scripts' numpy code does.
    ///
    /// Panics if the slice lengths do not match `crop` (a caller bug).
    pub fn normalise_into(&self, hwc: &[u8], out: &mut [f32]) {
        let hw = self.crop.0 as usize * self.crop.1 as usize;
        assert_eq!(
            hwc.len(),
            hw * 3,
            "normalise_into: input is not H*W*3 for crop {:?}",
            self.crop
        );
        assert_eq!(
            out.len(),
            hw * 3,
            "normalise_into: output is not 3*H*W for crop {:?}",
            self.crop
        );
        let (r, rest) = out.split_at_mut(hw);
        let (g, b) = rest.split_at_mut(hw);
        let [mr, mg, mb] = self.mean;
        let [sr, sg, sb] = self.std;
        for (i, px) in hwc.chunks_exact(3).enumerate() {
            r[i] = (px[0] as f32 - mr) / sr;
            g[i] = (px[1] as f32 - mg) / sg;
            b[i] = (px[2] as f32 - mb) / sb;
        }
    }

    /// [`Preprocess::load_u8`] + [`Preprocess::normalise_into`]: one image
    /// as CHW `f32`.
    pub fn load_chw(&self, path: &Path) -> Result<Vec<f32>, DataError> {
        let hwc = self.load_u8(path)?;
        let mut out = vec![0f32; self.chw_len()];
        self.normalise_into(&hwc, &mut out);
        Ok(out)
    }

    /// Loads `paths` in parallel (rayon) into `out`, an NCHW batch of
    /// `paths.len() * chw_len()` values. On error, the first failing file (in
    /// rayon's order) is reported and `out` is partly written.
    ///
    /// Panics if `out` has the wrong length (a caller bug).
    pub fn load_batch_chw<P: AsRef<Path> + Sync>(
        &self,
        paths: &[P],
        out: &mut [f32],
    ) -> Result<(), DataError> {
        let n = self.chw_len();
        assert_eq!(out.len(), paths.len() * n, "load_batch_chw: output length");
        out.par_chunks_mut(n)
            .zip(paths.par_iter())
            .try_for_each(|(dst, p)| {
                let hwc = self.load_u8(p.as_ref())?;
                self.normalise_into(&hwc, dst);
                Ok(())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lite() -> Preprocess {
        Preprocess::preset("efficientnet-lite", (224, 224)).unwrap()
    }

    #[test]
    fn lite_crop_box_matches_python() {
        // Python: side = int(224/256*min(h,w)); top=(h-side+1)//2; left=(w-side+1)//2
        let (rect, ow, oh, win) = lite().plan(500, 375);
        assert_eq!((rect.width, rect.height), (328, 328)); // int(0.875*375) = 328
        assert_eq!((rect.top, rect.left), (24, 86)); // (375-328+1)//2, (500-328+1)//2
        assert_eq!((ow, oh), (224, 224));
        assert_eq!((win.top, win.left), (0, 0));
        let (rect, ..) = lite().plan(333, 500);
        assert_eq!(rect.width, 291); // int(291.375)
        assert_eq!((rect.top, rect.left), (105, 21));
    }

    #[test]
    fn torchvision_geometry_matches_python() {
        let tv = Preprocess::preset("torchvision", (224, 224)).unwrap();
        assert_eq!(tv.resize, Resize::ShorterSide { size: 256 });
        // 500x375 -> (341, 256): int(256*500/375) = int(341.33)
        let (_, ow, oh, win) = tv.plan(500, 375);
        assert_eq!((ow, oh), (341, 256));
        // round((341-224)/2) = round(58.5) = 58 (half to even); round(16.0) = 16
        assert_eq!((win.left, win.top), (58, 16));
        let (_, ow, _, win) = tv.plan(500, 333); // int(256*500/333) = 384
        assert_eq!((ow, win.left), (384, 80));
        // 595 -> round(59.5*?) check odd difference rounding up: 343-224 = 119 -> 59.5 -> 60
        assert_eq!(Preprocess::centre_window(343, 256, 224, 224).left, 60);
    }

    #[test]
    fn smaller_than_crop_is_zero_padded_like_torchvision() {
        let p = Preprocess {
            resize: Resize::None,
            crop: (4, 5),
            interp: Interpolation::Bilinear,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let img = RgbImage {
            width: 2,
            height: 1,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let out = p.crop_resize(&img);
        // pad left (5-2)//2 = 1, top (4-1)//2 = 1
        let mut want = vec![0u8; 4 * 5 * 3];
        want[(5 + 1) * 3..(5 + 3) * 3].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(out, want);
    }

    #[test]
    fn normalisation_is_bit_exact_for_lite_and_cifar() {
        let l = Preprocess::preset("efficientnet-lite", (1, 1)).unwrap();
        let c = Preprocess::preset("cifar", (1, 1)).unwrap();
        for x in 0..=255u8 {
            let mut o = [0f32; 3];
            l.normalise_into(&[x; 3], &mut o);
            assert_eq!(o[0].to_bits(), ((x as f32 - 127.0f32) / 128.0f32).to_bits());
            c.normalise_into(&[x; 3], &mut o);
            assert_eq!(o[0].to_bits(), (x as f32 / 255.0f32).to_bits());
        }
    }

    #[test]
    fn torchvision_normalisation_is_within_a_few_ulps() {
        let tv = Preprocess::preset("torchvision", (1, 1)).unwrap();
        for x in 0..=255u8 {
            let mut o = [0f32; 3];
            tv.normalise_into(&[x; 3], &mut o);
            for c in 0..3 {
                let want = (x as f32 / 255.0 - IMAGENET_MEAN[c] as f32) / IMAGENET_STD[c] as f32;
                assert!(
                    (o[c] - want).abs() <= 4.0 * f32::EPSILON * want.abs().max(1.0),
                    "{x} {c}"
                );
            }
        }
    }

    #[test]
    fn flags_override_the_preset() {
        let f = PreprocessFlags {
            resize: Some(256),
            crop: Some(192),
            interp: Some("Bicubic".into()),
            mean: Some("1,2,3".into()),
            std: Some("4".into()),
        };
        let p = Preprocess::from_flags("cifar", (32, 32), &f).unwrap();
        assert_eq!(p.resize, Resize::ShorterSide { size: 256 });
        assert_eq!(p.crop, (192, 192));
        assert_eq!(p.interp, Interpolation::Bicubic);
        assert_eq!((p.mean, p.std), ([1.0, 2.0, 3.0], [4.0; 3]));
        let bad = PreprocessFlags {
            std: Some("1,0,1".into()),
            ..Default::default()
        };
        assert!(Preprocess::from_flags("cifar", (32, 32), &bad).is_err());
        assert!(parse_triple("1,2", "mean").is_err());
        assert!(
            parse_triple("a,b,c", "mean")
                .unwrap_err()
                .to_string()
                .contains("mean")
        );
        assert!("lanczos".parse::<Interpolation>().is_err());
        assert!(Preprocess::preset("resnet", (224, 224)).is_err());
    }
}
