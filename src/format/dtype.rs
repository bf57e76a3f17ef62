//! Tensor element types as GGUF/ggml numbers them, with their block layouts.
//!
//! Block sizes and byte counts follow ggml's `ggml_type_traits` table (ggml/src/ggml.c) and the GGUF
//! specification (ggml/docs/gguf.md). flint computes on the subset in [`DType`]; the full table in
//! [`ggml_type_layout`] lets the GGUF reader validate the size of any tensor, even one flint cannot use.

/// The element types flint can compute with, weights kept in these layouts on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl DType {
    /// Every supported type, for tests and listings.
    pub const ALL: [DType; 11] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ];

    /// The ggml type id (`enum ggml_type`).
    pub fn ggml_id(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q5_0 => 6,
            DType::Q5_1 => 7,
            DType::Q8_0 => 8,
            DType::Q4_K => 12,
            DType::Q5_K => 13,
            DType::Q6_K => 14,
            DType::BF16 => 30,
        }
    }

    /// The supported type with this ggml id, if flint supports it.
    pub fn from_ggml_id(id: u32) -> Option<DType> {
        DType::ALL.into_iter().find(|t| t.ggml_id() == id)
    }

    /// Elements per block (1 for plain floats).
    pub fn block_elems(self) -> usize {
        ggml_type_layout(self.ggml_id())
            .map(|l| l.block_elems)
            .unwrap_or(1)
    }

    /// Bytes per block in the file.
    pub fn block_bytes(self) -> usize {
        ggml_type_layout(self.ggml_id())
            .map(|l| l.block_bytes)
            .unwrap_or(4)
    }

    /// The ggml name ("Q4_K", "F16", ...).
    pub fn name(self) -> &'static str {
        ggml_type_layout(self.ggml_id())
            .map(|l| l.name)
            .unwrap_or("?")
    }

    /// Bytes that `n` elements take in this type; `None` if `n` is not a whole number of blocks or overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let be = self.block_elems() as u64;
        if !n.is_multiple_of(be) {
            return None;
        }
        (n / be).checked_mul(self.block_bytes() as u64)
    }

    /// Whether this is a block-quantized type (not a plain float).
    pub fn is_quantized(self) -> bool {
        !matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Block layout of one ggml type: name, elements per block, bytes per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeLayout {
    pub name: &'static str,
    pub block_elems: usize,
    pub block_bytes: usize,
}

/// The layout of every ggml type id that GGUF files may carry (ggml.c `type_traits`), supported or not.
pub fn ggml_type_layout(id: u32) -> Option<TypeLayout> {
    let (name, block_elems, block_bytes) = match id {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        16 => ("IQ2_XXS", 256, 66),
        17 => ("IQ2_XS", 256, 74),
        18 => ("IQ3_XXS", 256, 98),
        19 => ("IQ1_S", 256, 50),
        20 => ("IQ4_NL", 32, 18),
        21 => ("IQ3_S", 256, 110),
        22 => ("IQ2_S", 256, 82),
        23 => ("IQ4_XS", 256, 136),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        29 => ("IQ1_M", 256, 56),
        30 => ("BF16", 1, 2),
        34 => ("TQ1_0", 256, 54),
        35 => ("TQ2_0", 256, 66),
        39 => ("MXFP4", 32, 17),
        _ => return None,
    };
    Some(TypeLayout {
        name,
        block_elems,
        block_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_types_round_trip_their_ids() {
        for t in DType::ALL {
            assert_eq!(DType::from_ggml_id(t.ggml_id()), Some(t));
            assert!(t.block_bytes() > 0 && t.block_elems() > 0);
        }
        assert_eq!(
            DType::from_ggml_id(10),
            None,
            "Q2_K is known but not supported"
        );
        assert_eq!(DType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(DType::Q4_0.bytes_for(33), None);
    }
}
