//! Layer ops: one struct per op (parameters, invariants, dispatch, CPU reference) and its kernel.

pub mod attention;
pub mod elementwise;
pub mod embed;
pub mod matmul;
pub mod norm;
pub mod quant;
pub mod rope;
pub mod softmax;
