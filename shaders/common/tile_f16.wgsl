// The element type of matmul.wgsl's shared-memory tiles where the adapter has shader-f16 and f16
// products are asked for (--matmul f16): the activations and the dequantized weights are staged as
// f16, half the workgroup memory and half the bytes moved through it of f32 tiles. The kernel
// still multiplies in f32 (a product of two f16 values is exact in f32) and accumulates in f32,
// so the only rounding added is that of each operand to f16 (relative 2^-11 at most), as with
// f16 inputs to an f32-accumulating tensor-core product. Concatenated first: `enable` must lead
// the module.
enable f16;
alias tile = f16;
