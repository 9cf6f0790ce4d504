//! The preprocessing recipe stored in a model file, to and from `amos-io`'s [`Preprocess`].

use amos_snn::model::Recipe;

use super::{DataError, Interpolation, Preprocess, Resize};

/// The recipe for a model file.
pub fn to_recipe(preset: &str, p: &Preprocess) -> Recipe {
    let (resize, resize_param) = match p.resize {
        Resize::None => ("none", 0),
        Resize::CenterCropPadded { pad } => ("center-crop-padded", pad),
        Resize::ShorterSide { size } => ("shorter-side", size),
    };
    let interp = match p.interp {
        Interpolation::Bilinear => "bilinear",
        Interpolation::Bicubic => "bicubic",
        Interpolation::Nearest => "nearest",
    };
    Recipe {
        preset: preset.to_string(),
        resize: resize.to_string(),
        resize_param,
        crop: [p.crop.0, p.crop.1],
        interp: interp.to_string(),
        mean: p.mean,
        std: p.std,
    }
}

/// The preprocessing a model file asks for.
pub fn from_recipe(r: &Recipe) -> Result<Preprocess, DataError> {
    let bad = |what: &str| DataError::config("model file", format!("unknown preprocessing {what}"));
    let resize = match r.resize.as_str() {
        "none" => Resize::None,
        "center-crop-padded" => Resize::CenterCropPadded {
            pad: r.resize_param,
        },
        "shorter-side" => Resize::ShorterSide {
            size: r.resize_param,
        },
        other => return Err(bad(&format!("resize '{other}'"))),
    };
    let interp = r
        .interp
        .parse::<Interpolation>()
        .map_err(|_| bad(&format!("interpolation '{}'", r.interp)))?;
    let p = Preprocess {
        resize,
        crop: (r.crop[0], r.crop[1]),
        interp,
        mean: r.mean,
        std: r.std,
    };
    p.validate()?;
    Ok(p)
}
