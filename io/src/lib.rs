//! Storage side of amos: dataset listing, image decoding and preprocessing
//! into model inputs (see [`data`]).

pub mod data;
