//! AMOS units: the spiking replacement of every gate (ARCHITECTURE.md §3).
//!
//! - [`unit`]: the unit and its exact evaluation semantics.
//! - [`closed_form`]: binary-expansion units for ReLU, ReLU6 and identity (stage boundaries).
//! - [`fit`]: units fitted by gradient descent to any other gate.
//! - [`intervals`]: one-input units evaluated as the step functions they are.
//! - [`memo`]: two-input units on input pairs that repeat (the SE product).
//! - [`uniform`]: closed-form units as uniform quantisers (an interval by one multiply-add).
//! - `tree`: small sorted tables searched in vector registers (for the two above).

pub mod closed_form;
pub mod fit;
pub mod intervals;
pub mod memo;
mod tree;
pub mod uniform;
pub mod unit;

pub use memo::{PairMemo, SecondInput};
pub use unit::{AmosUnit, MAX_NEURONS, UnitKernel};
