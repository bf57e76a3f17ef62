// The element type of matmul.wgsl's shared-memory tiles: f32, on every adapter (tile_f16.wgsl is
// the shader-f16 twin). Concatenated first, in front of the weight type's fragment.
alias tile = f32;
