//! Buffer copy (`shaders/copy.wgsl`): `dst = src`, 16 bytes per invocation. Not part of a forward
//! pass; it is the memory-bandwidth probe `flint bench` divides the decode's weight-streaming rate
//! by (the roofline ratio).

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};

/// The kernel (`shaders/copy.wgsl`).
pub const WGSL: &str = include_str!("../../shaders/copy.wgsl");

/// Invocations per workgroup (`@workgroup_size` in the kernel).
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

/// Copies the first `bytes` bytes of one storage buffer to another.
pub struct BufferCopy {
    /// Bytes to copy: a multiple of 16 (flint's buffers are padded to 16 bytes).
    pub bytes: u64,
    /// Most workgroups to launch (`None`: one 16-byte word per invocation); with fewer, each
    /// invocation copies several words.
    pub max_workgroups: Option<u32>,
}

impl BufferCopy {
    /// Bytes a copy moves through memory: each byte is read once and written once.
    pub fn traffic_bytes(&self) -> u64 {
        2 * self.bytes
    }

    /// Records `dst[..bytes] = src[..bytes]`.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut Recorder,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
    ) -> Result<()> {
        if self.bytes == 0 || !self.bytes.is_multiple_of(16) {
            return Err(Error::InvalidArgument(format!(
                "copy: {} bytes is not a positive multiple of 16",
                self.bytes
            )));
        }
        if src.size() < self.bytes || dst.size() < self.bytes {
            return Err(Error::InvalidArgument(format!(
                "copy: {} bytes do not fit the buffers ({} -> {} bytes)",
                self.bytes,
                src.size(),
                dst.size()
            )));
        }
        if self.bytes > gpu.caps.max_binding {
            return Err(Error::InvalidArgument(format!(
                "copy: {} bytes exceed the adapter's storage binding limit ({} bytes)",
                self.bytes, gpu.caps.max_binding
            )));
        }
        let n = u32::try_from(self.bytes / 16).map_err(|_| {
            Error::InvalidArgument(format!("copy: {} bytes is too many", self.bytes))
        })?;
        let pipeline = gpu.pipeline("copy", &[WGSL])?;
        let p = Params { n, _pad: [0; 3] };
        gpu.dispatch(
            enc,
            &pipeline,
            bytemuck::bytes_of(&p),
            &[src, dst],
            gpu.grid(
                n.div_ceil(WG)
                    .min(self.max_workgroups.unwrap_or(u32::MAX))
                    .max(1),
            ),
        );
        Ok(())
    }
}

/// CPU reference: what `dst` holds after copying the first `bytes` bytes of `src` over it.
pub fn copy_cpu(src: &[u8], dst: &[u8], bytes: usize) -> Vec<u8> {
    let mut out = dst.to_vec();
    out[..bytes].copy_from_slice(&src[..bytes]);
    out
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::gpu::GpuOptions;

    fn pattern(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
            .collect()
    }

    /// Copies `bytes` of a `len`-byte buffer into another filled with a different pattern and
    /// compares the whole destination (copied prefix and untouched tail) with the CPU reference.
    fn check(gpu: &Gpu, len: usize, bytes: usize, max_workgroups: Option<u32>) {
        let src = pattern(len, 1);
        let dst0 = pattern(len, 7);
        let s = gpu.upload("src", &src);
        let d = gpu.upload("dst", &dst0);
        let mut enc = gpu.encoder();
        BufferCopy {
            bytes: bytes as u64,
            max_workgroups,
        }
        .encode(gpu, &mut enc, &s, &d)
        .unwrap();
        gpu.submit(enc);
        let got = pollster::block_on(gpu.read_async(&d, 0, len as u64)).unwrap();
        assert_eq!(
            got[..len],
            copy_cpu(&src, &dst0, bytes)[..],
            "len {len}, bytes {bytes}, max_workgroups {max_workgroups:?}"
        );
    }

    #[test]
    fn copies_exactly_the_requested_bytes() {
        let gpu = Gpu::new(&GpuOptions::default()).expect("a GPU adapter (lavapipe)");
        // one word; one word short of, at, and one past a workgroup; several workgroups
        for (len, bytes) in [
            (16, 16),
            (64, 16),
            (4096, 255 * 16),
            (4096, 4096),
            (8192, 257 * 16),
            (1 << 20, 1 << 20),
        ] {
            // one word per invocation, and several (grid-stride over 1 or 3 workgroups)
            for wgs in [None, Some(3), Some(1)] {
                check(&gpu, len, bytes, wgs);
            }
        }
    }

    #[test]
    fn folds_large_dispatches_into_two_dimensions() {
        let mut gpu = Gpu::new(&GpuOptions::default()).expect("a GPU adapter (lavapipe)");
        // 10 workgroups with at most 3 per dimension: a 3x4 grid, 2 workgroups of it idle.
        gpu.caps.max_workgroups_per_dim = 3;
        check(&gpu, 10 * 256 * 16 + 64, 10 * 256 * 16 - 32, None);
        // 7 workgroups as a 3x3 grid: the stride counts the whole grid
        check(&gpu, 40 * 256 * 16, 40 * 256 * 16 - 16, Some(7));
    }

    #[test]
    fn rejects_bad_sizes() {
        let gpu = Gpu::new(&GpuOptions::default()).expect("a GPU adapter (lavapipe)");
        let a = gpu.zeros("a", 64).unwrap();
        let b = gpu.zeros("b", 32).unwrap();
        let mut enc = gpu.encoder();
        for bytes in [0, 8, 48, 64] {
            let e = BufferCopy {
                bytes,
                max_workgroups: None,
            }
            .encode(&gpu, &mut enc, &a, &b);
            assert!(e.is_err(), "{bytes} bytes into 32 must fail");
        }
        BufferCopy {
            bytes: 32,
            max_workgroups: None,
        }
        .encode(&gpu, &mut enc, &a, &b)
        .unwrap();
    }
}
