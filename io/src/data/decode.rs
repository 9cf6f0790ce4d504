//! Decoding image bytes into 8-bit RGB, the way Pillow's `convert("RGB")` does.
//!
//! The reference preprocessing opens every file with Pillow and converts it
//! to RGB before cropping, so each colour mode must map to RGB as Pillow maps
//! it, or a grey or CMYK photo would be preprocessed differently from the
//! reference:
//!
//! * grey (`L`) → the value replicated to R, G and B;
//! * grey+alpha, RGBA, palette with transparency → alpha dropped, no
//!   compositing onto a background (Pillow drops it too);
//! * CMYK / YCCK JPEG → R = (255−C)(255−K)/255 with Adobe's inverted storage,
//!   which is what Pillow computes (it reads every CMYK JPEG as `CMYK;I`) and
//!   what zune-jpeg computes, to the same rounding;
//! * 16-bit PNG → the high byte of each sample (Pillow's `RGB;16B` unpacker).
//!   For 16-bit *grey* Pillow instead clips the 16-bit value at 255, turning
//!   almost every pixel white; we take the high byte there too, deliberately.
//!
//! EXIF orientation is ignored, as Pillow ignores it unless asked.
//!
//! JPEG decoding itself (IDCT, chroma upsampling, YCbCr→RGB) is zune-jpeg's,
//! not libjpeg-turbo's, so individual pixels may differ by a unit or two from
//! Pillow's; see the `preprocess_parity` test for measured figures.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

use super::DataError;

/// Largest image accepted, in pixels (width × height): 100 megapixels.
///
/// Checked from the header before any pixel buffer is allocated, so a corrupt
/// or hostile header claiming a 60000×60000 image fails fast with
/// [`DataError::TooLarge`] instead of exhausting memory. No ImageNet-style
/// photograph comes near it.
pub const MAX_PIXELS: u64 = 100_000_000;

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    /// `height * width * 3` bytes, `R G B` per pixel.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Pixel `(y, x)` as `[r, g, b]`. Panics when out of range (caller bug).
    pub fn pixel(&self, y: u32, x: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// Decodes a JPEG or PNG held in memory into 8-bit RGB.
///
/// `name` is only used in error messages (pass the file path). The format is
/// recognised from the content, not from the name. Never panics on corrupt
/// data: decoder failures become [`DataError::Decode`].
pub fn decode_rgb8(bytes: &[u8], name: &str) -> Result<RgbImage, DataError> {
    let decode_err = |msg: String| DataError::Decode {
        name: name.to_string(),
        msg,
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(decode_err(
            "unrecognised format (expected JPEG or PNG)".into(),
        ));
    }
    let mut limits = Limits::default();
    // The pixel limit below is the real guard; this only has to let a
    // MAX_PIXELS image in its widest form (16-bit RGBA) through.
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    reader.limits(limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| decode_err(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    if width as u64 * height as u64 > MAX_PIXELS {
        return Err(DataError::TooLarge {
            name: name.to_string(),
            width,
            height,
            limit: MAX_PIXELS,
        });
    }
    if width == 0 || height == 0 {
        return Err(decode_err(format!("empty image ({width}x{height})")));
    }
    let img = DynamicImage::from_decoder(decoder).map_err(|e| decode_err(e.to_string()))?;
    Ok(to_rgb8(img))
}

/// Converts any decoded image to RGB8 with Pillow's `convert("RGB")` rules
/// (see the module docs).
fn to_rgb8(img: DynamicImage) -> RgbImage {
    let (width, height) = (img.width(), img.height());
    let n = width as usize * height as usize;
    let data = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageLuma8(b) => expand(b.as_raw(), 1, n, |s| [s[0]; 3]),
        DynamicImage::ImageLumaA8(b) => expand(b.as_raw(), 2, n, |s| [s[0]; 3]),
        DynamicImage::ImageRgba8(b) => expand(b.as_raw(), 4, n, |s| [s[0], s[1], s[2]]),
        DynamicImage::ImageLuma16(b) => expand(b.as_raw(), 1, n, |s| [hi(s[0]); 3]),
        DynamicImage::ImageLumaA16(b) => expand(b.as_raw(), 2, n, |s| [hi(s[0]); 3]),
        DynamicImage::ImageRgb16(b) => expand(b.as_raw(), 3, n, |s| [hi(s[0]), hi(s[1]), hi(s[2])]),
        DynamicImage::ImageRgba16(b) => {
            expand(b.as_raw(), 4, n, |s| [hi(s[0]), hi(s[1]), hi(s[2])])
        }
        // Float images are not produced by the JPEG/PNG decoders; fall back
        // to the image crate's own conversion.
        other => other.into_rgb8().into_raw(),
    };
    RgbImage {
        width,
        height,
        data,
    }
}

/// High byte of a 16-bit sample (Pillow's `RGB;16B` unpacking), not a
/// rounded `v / 257`.
fn hi(v: u16) -> u8 {
    (v >> 8) as u8
}

fn expand<T: Copy>(src: &[T], channels: usize, n: usize, f: impl Fn(&[T]) -> [u8; 3]) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 3);
    for px in src.chunks_exact(channels) {
        out.extend_from_slice(&f(px));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(img: DynamicImage) -> Vec<u8> {
        let mut v = Vec::new();
        img.write_to(&mut Cursor::new(&mut v), image::ImageFormat::Png)
            .unwrap();
        v
    }

    #[test]
    fn grey_png_is_replicated() {
        let g = image::GrayImage::from_raw(2, 1, vec![7, 200]).unwrap();
        let rgb = decode_rgb8(&png_bytes(DynamicImage::ImageLuma8(g)), "g.png").unwrap();
        assert_eq!(rgb.data, vec![7, 7, 7, 200, 200, 200]);
    }

    #[test]
    fn rgba_png_drops_alpha_without_compositing() {
        let g = image::RgbaImage::from_raw(1, 1, vec![10, 20, 30, 0]).unwrap();
        let rgb = decode_rgb8(&png_bytes(DynamicImage::ImageRgba8(g)), "a.png").unwrap();
        assert_eq!(rgb.data, vec![10, 20, 30]);
    }

    #[test]
    fn sixteen_bit_png_takes_high_byte() {
        let g =
            image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(1, 1, vec![0x12ff, 0xff00, 0x0080])
                .unwrap();
        let rgb = decode_rgb8(&png_bytes(DynamicImage::ImageRgb16(g)), "h.png").unwrap();
        assert_eq!(rgb.data, vec![0x12, 0xff, 0x00]);
        let g = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(1, 1, vec![0xabcd]).unwrap();
        let rgb = decode_rgb8(&png_bytes(DynamicImage::ImageLuma16(g)), "h.png").unwrap();
        assert_eq!(rgb.data, vec![0xab; 3]);
    }

    #[test]
    fn garbage_and_truncation_are_errors_naming_the_file() {
        let e = decode_rgb8(b"not an image at all", "junk.bin").unwrap_err();
        assert!(e.to_string().contains("junk.bin"), "{e}");
        let g = image::RgbImage::from_raw(8, 8, vec![99; 192]).unwrap();
        let full = png_bytes(DynamicImage::ImageRgb8(g));
        for cut in [10, full.len() / 2, full.len() - 5] {
            let e = decode_rgb8(&full[..cut], "cut.png").unwrap_err();
            assert!(e.to_string().contains("cut.png"), "{e}");
        }
        let e = decode_rgb8(&[], "empty.jpg").unwrap_err();
        assert!(e.to_string().contains("empty.jpg"), "{e}");
    }

    #[test]
    fn oversized_header_is_refused_before_decoding() {
        // A PNG signature + IHDR claiming 20000x20000, and no pixel data.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&20000u32.to_be_bytes());
        ihdr.extend_from_slice(&20000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // The decoder reads chunks up to the first IDAT before reporting
        // the size; give it an empty one.
        png.extend_from_slice(&0u32.to_be_bytes());
        png.extend_from_slice(b"IDAT");
        png.extend_from_slice(&crc32(b"IDAT").to_be_bytes());
        let e = decode_rgb8(&png, "huge.png").unwrap_err();
        assert!(matches!(e, DataError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("huge.png"), "{e}");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
