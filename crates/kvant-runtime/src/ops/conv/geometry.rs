//! Sliding-window geometry shared by convolutions and pools: attribute parsing (kernel, strides,
//! dilations, pads, auto_pad, ceil_mode) and the output size / padding it implies.
//!
//! Every window is normalized to three spatial dimensions (1-D and 2-D inputs get leading
//! dimensions of size 1), so that one set of loops serves all ranks.

use crate::ops::attr_err;
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;

/// Spatial dimensions every window is normalized to.
pub(crate) const SPATIAL: usize = 3;

/// The `auto_pad` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AutoPad {
    /// Explicit `pads`.
    NotSet,
    /// Pad so that `out = ceil(in / stride)`, extra padding at the end.
    SameUpper,
    /// Like `SameUpper`, extra padding at the start.
    SameLower,
    /// No padding.
    Valid,
}

impl AutoPad {
    /// Reads `auto_pad` from a node.
    pub fn parse(node: &Node) -> Result<AutoPad, RuntimeError> {
        match node.attr_string("auto_pad").map_err(attr_err)?.as_deref() {
            None | Some("NOTSET") | Some("") => Ok(AutoPad::NotSet),
            Some("SAME_UPPER") => Ok(AutoPad::SameUpper),
            Some("SAME_LOWER") => Ok(AutoPad::SameLower),
            Some("VALID") => Ok(AutoPad::Valid),
            Some(other) => Err(kernel_err(format!("unknown auto_pad '{other}'"))),
        }
    }
}

/// Reads an INTS attribute whose values must all be at least `min`.
pub(crate) fn usize_list(
    node: &Node,
    name: &str,
    min: i64,
) -> Result<Option<Vec<usize>>, RuntimeError> {
    match node.attr_ints(name).map_err(attr_err)? {
        None => Ok(None),
        Some(values) => values
            .iter()
            .map(|&v| {
                if v < min {
                    Err(kernel_err(format!(
                        "attribute '{name}' has value {v}, which is below {min}"
                    )))
                } else {
                    Ok(v as usize)
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
    }
}

/// Window attributes as written on the node; resolved against an input shape at run time.
#[derive(Clone, Debug)]
pub(crate) struct WindowAttrs {
    /// `auto_pad`.
    pub auto_pad: AutoPad,
    /// `kernel_shape`, if given.
    pub kernel: Option<Vec<usize>>,
    /// `strides`, if given.
    pub strides: Option<Vec<usize>>,
    /// `dilations`, if given.
    pub dilations: Option<Vec<usize>>,
    /// `pads` (begins then ends), if given.
    pub pads: Option<Vec<usize>>,
    /// `ceil_mode` (pools only).
    pub ceil_mode: bool,
}

/// A resolved window over (up to) three spatial dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// Spatial rank of the operator (1 to 3) before normalization.
    pub rank: usize,
    /// Input spatial size.
    pub input: [usize; SPATIAL],
    /// Kernel size.
    pub kernel: [usize; SPATIAL],
    /// Strides.
    pub stride: [usize; SPATIAL],
    /// Dilations.
    pub dilation: [usize; SPATIAL],
    /// Padding before each dimension.
    pub pad_begin: [usize; SPATIAL],
    /// Padding after each dimension.
    pub pad_end: [usize; SPATIAL],
    /// Output spatial size.
    pub output: [usize; SPATIAL],
}

impl Window {
    /// Number of input positions per plane.
    pub fn input_size(&self) -> usize {
        self.input.iter().product()
    }

    /// Number of output positions per plane.
    pub fn output_size(&self) -> usize {
        self.output.iter().product()
    }

    /// Number of kernel taps.
    pub fn kernel_size(&self) -> usize {
        self.kernel.iter().product()
    }

    /// The output spatial shape at the operator's own rank.
    pub fn output_shape(&self) -> Vec<usize> {
        self.output[SPATIAL - self.rank..].to_vec()
    }

    /// Whether the window reads every input position exactly once in order (a 1x1 kernel,
    /// unit strides, no padding): the input plane is then its own im2col matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kernel.iter().all(|&k| k == 1)
            && self.stride.iter().all(|&s| s == 1)
            && self.pad_begin.iter().all(|&p| p == 0)
            && self.output == self.input
    }
}

/// Pads a per-dimension list to [`SPATIAL`] entries with leading `fill`s.
pub(crate) fn lift(values: &[usize], fill: usize) -> Result<[usize; SPATIAL], RuntimeError> {
    let mut out = [fill; SPATIAL];
    let offset = SPATIAL
        .checked_sub(values.len())
        .ok_or_else(|| unsupported(format!("{} spatial dimensions", values.len())))?;
    out[offset..].copy_from_slice(values);
    Ok(out)
}

impl WindowAttrs {
    /// Reads the window attributes of a node.
    pub fn parse(node: &Node) -> Result<WindowAttrs, RuntimeError> {
        let ceil_mode = node.attr_int("ceil_mode").map_err(attr_err)?.unwrap_or(0) != 0;
        Ok(WindowAttrs {
            auto_pad: AutoPad::parse(node)?,
            kernel: usize_list(node, "kernel_shape", 1)?,
            strides: usize_list(node, "strides", 1)?,
            dilations: usize_list(node, "dilations", 1)?,
            pads: usize_list(node, "pads", 0)?,
            ceil_mode,
        })
    }

    /// Resolves the window for an input of spatial shape `input`; `kernel` overrides the
    /// `kernel_shape` attribute when the operator takes the kernel from a weight tensor.
    pub fn resolve(
        &self,
        input: &[usize],
        kernel: Option<&[usize]>,
    ) -> Result<Window, RuntimeError> {
        let rank = input.len();
        if rank == 0 {
            return Err(kernel_err("the input has no spatial dimensions"));
        }
        if rank > SPATIAL {
            return Err(unsupported(format!(
                "{rank} spatial dimensions (at most {SPATIAL})"
            )));
        }
        let kernel = kernel
            .or(self.kernel.as_deref())
            .ok_or_else(|| kernel_err("kernel_shape is required"))?;
        let check_len = |name: &str, len: usize, want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(kernel_err(format!(
                    "'{name}' has {len} values, expected {want} for {rank} spatial dimensions"
                )))
            }
        };
        check_len("kernel_shape", kernel.len(), rank)?;
        let ones = vec![1; rank];
        let strides = self.strides.as_deref().unwrap_or(&ones);
        check_len("strides", strides.len(), rank)?;
        let dilations = self.dilations.as_deref().unwrap_or(&ones);
        check_len("dilations", dilations.len(), rank)?;
        let zeros = vec![0; 2 * rank];
        let pads = match self.auto_pad {
            AutoPad::NotSet => self.pads.as_deref().unwrap_or(&zeros),
            _ => &zeros,
        };
        check_len("pads", pads.len(), 2 * rank)?;

        let mut pad_begin = vec![0; rank];
        let mut pad_end = vec![0; rank];
        let mut output = vec![0; rank];
        for i in 0..rank {
            let (x, k, s, d) = (input[i], kernel[i], strides[i], dilations[i]);
            let span = (k - 1) * d + 1;
            match self.auto_pad {
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let out = x.div_ceil(s);
                    let total = ((out.max(1) - 1) * s + span).saturating_sub(x);
                    let small = total / 2;
                    if self.auto_pad == AutoPad::SameUpper {
                        pad_begin[i] = small;
                        pad_end[i] = total - small;
                    } else {
                        pad_begin[i] = total - small;
                        pad_end[i] = small;
                    }
                    output[i] = out;
                }
                AutoPad::NotSet | AutoPad::Valid => {
                    let (pb, pe) = (pads[i], pads[rank + i]);
                    let padded = x + pb + pe;
                    if padded < span {
                        return Err(kernel_err(format!(
                            "window of extent {span} does not fit the padded input of size \
                             {padded} along spatial axis {i}"
                        )));
                    }
                    let mut out = if self.ceil_mode {
                        (padded - span).div_ceil(s) + 1
                    } else {
                        (padded - span) / s + 1
                    };
                    // With ceil_mode the last window must still start inside the input or the
                    // leading padding.
                    if self.ceil_mode && out > 1 && (out - 1) * s >= x + pb {
                        out -= 1;
                    }
                    pad_begin[i] = pb;
                    pad_end[i] = pe;
                    output[i] = out;
                }
            }
        }
        Ok(Window {
            rank,
            input: lift(input, 1)?,
            kernel: lift(kernel, 1)?,
            stride: lift(strides, 1)?,
            dilation: lift(dilations, 1)?,
            pad_begin: lift(&pad_begin, 0)?,
            pad_end: lift(&pad_end, 0)?,
            output: lift(&output, 1)?,
        })
    }
}

/// The outputs `o` in `0..out_len` for which `o * stride + offset` falls in `0..in_len`, as a
/// half-open range (empty when there are none).
#[inline]
pub(crate) fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    offset: isize,
) -> (usize, usize) {
    let s = stride as isize;
    let lo = if offset >= 0 {
        0
    } else {
        ((-offset + s - 1) / s) as usize
    };
    let last = in_len as isize - 1 - offset;
    let hi = if last < 0 {
        0
    } else {
        ((last / s) as usize + 1).min(out_len)
    };
    (lo.min(hi), hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(auto_pad: AutoPad, pads: Option<Vec<usize>>, strides: Vec<usize>) -> WindowAttrs {
        WindowAttrs {
            auto_pad,
            kernel: None,
            strides: Some(strides),
            dilations: None,
            pads,
            ceil_mode: false,
        }
    }

    #[test]
    fn same_padding_splits_the_extra_pixel() {
        let a = attrs(AutoPad::SameUpper, None, vec![2, 2]);
        let w = a.resolve(&[5, 6], Some(&[3, 3])).unwrap();
        assert_eq!(w.output, [1, 3, 3]);
        assert_eq!(w.pad_begin, [0, 1, 0]);
        assert_eq!(w.pad_end, [0, 1, 1]);
        let a = attrs(AutoPad::SameLower, None, vec![2, 2]);
        let w = a.resolve(&[5, 6], Some(&[3, 3])).unwrap();
        assert_eq!(w.pad_begin, [0, 1, 1]);
        assert_eq!(w.pad_end, [0, 1, 0]);
    }

    #[test]
    fn ceil_mode_drops_a_window_starting_in_the_end_padding() {
        let mut a = attrs(AutoPad::NotSet, Some(vec![1, 1]), vec![2]);
        a.ceil_mode = true;
        // padded size 6, kernel 2, stride 2 -> ceil(4/2)+1 = 3 windows, the last starting at 4
        // which is >= 4 + 1? no: 4 < 5, kept.
        assert_eq!(a.resolve(&[4], Some(&[2])).unwrap().output, [1, 1, 3]);
        let mut a = attrs(AutoPad::NotSet, Some(vec![0, 1]), vec![2]);
        a.ceil_mode = true;
        // padded 5, kernel 2, stride 2 -> ceil(3/2)+1 = 3, last starts at 4 >= 4 -> dropped.
        assert_eq!(a.resolve(&[4], Some(&[2])).unwrap().output, [1, 1, 2]);
    }

    #[test]
    fn valid_range_clips_both_ends() {
        assert_eq!(valid_range(5, 5, 1, -1), (1, 5));
        assert_eq!(valid_range(5, 5, 1, 1), (0, 4));
        assert_eq!(valid_range(3, 5, 2, -1), (1, 3));
        assert_eq!(valid_range(3, 2, 1, 5), (0, 0));
        assert_eq!(valid_range(3, 2, 1, -7), (3, 3));
    }
}
