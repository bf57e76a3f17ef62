//! Layer ops: one struct per op (parameters, invariants, dispatch, CPU reference) and its kernel.

pub mod quant;
