//! The preprocessing recipe stored in a model file (kept in `amos-io`, which workers share).

pub use amos_io::data::recipe::{from_recipe, to_recipe};
