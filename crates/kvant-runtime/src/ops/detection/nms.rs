//! `NonMaxSuppression`, following ONNX Runtime's selection semantics.
//!
//! For every batch and class independently: candidates whose score is strictly above
//! `score_threshold` (when given) are sorted by score, descending and stable for ties (so the
//! lower box index wins), then taken greedily; a candidate is dropped when its IoU with any
//! box already selected is strictly above `iou_threshold`. At most
//! `max_output_boxes_per_class` boxes are selected per class (0, the default, selects none).
//! The output lists `[batch, class, box]` triples in batch, class, selection order.

use crate::ops::{attr_err, input, optional_input, BuildContext, Kernel};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::Tensor;

/// A configured `NonMaxSuppression` node.
struct NmsKernel {
    /// Boxes are `[x_center, y_center, width, height]` instead of two corners.
    center_point_box: bool,
}

/// Builds a `NonMaxSuppression` kernel.
pub fn build(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let center_point_box = match node.attr_int("center_point_box").map_err(attr_err)? {
        None | Some(0) => false,
        Some(1) => true,
        Some(other) => return Err(unsupported(format!("center_point_box {other}"))),
    };
    Ok(Box::new(NmsKernel { center_point_box }))
}

/// An axis-aligned box as `(y_min, x_min, y_max, x_max)`, corners already ordered.
#[derive(Clone, Copy)]
struct Corners {
    y_min: f32,
    x_min: f32,
    y_max: f32,
    x_max: f32,
}

impl Corners {
    fn new(b: &[f32], center_point_box: bool) -> Corners {
        let (b0, b1, b2, b3) = match b {
            [b0, b1, b2, b3] => (*b0, *b1, *b2, *b3),
            // Callers always pass 4 values; a degenerate box suppresses nothing.
            _ => (0.0, 0.0, 0.0, 0.0),
        };
        if center_point_box {
            // [x_center, y_center, width, height]
            let (half_w, half_h) = (b2 / 2.0, b3 / 2.0);
            Corners {
                y_min: b1 - half_h,
                x_min: b0 - half_w,
                y_max: b1 + half_h,
                x_max: b0 + half_w,
            }
        } else {
            // [y1, x1, y2, x2], where either pair of corners may be flipped.
            Corners {
                y_min: b0.min(b2),
                x_min: b1.min(b3),
                y_max: b0.max(b2),
                x_max: b1.max(b3),
            }
        }
    }

    fn area(&self) -> f32 {
        (self.x_max - self.x_min) * (self.y_max - self.y_min)
    }
}

/// Whether `b` is suppressed by the already selected `a` (IoU strictly above the threshold).
/// Empty intersections and degenerate areas never suppress, as in ONNX Runtime.
fn suppresses(a: &Corners, b: &Corners, iou_threshold: f32) -> bool {
    let ix_min = a.x_min.max(b.x_min);
    let iy_min = a.y_min.max(b.y_min);
    let ix_max = a.x_max.min(b.x_max);
    let iy_max = a.y_max.min(b.y_max);
    if ix_max <= ix_min || iy_max <= iy_min {
        return false;
    }
    let inter = (ix_max - ix_min) * (iy_max - iy_min);
    let (area_a, area_b) = (a.area(), b.area());
    let union = area_a + area_b - inter;
    if inter <= 0.0 || area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > iou_threshold
}

impl Kernel for NmsKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let boxes_t = input(inputs, 0)?;
        let scores_t = input(inputs, 1)?;
        let (bs, ss) = (boxes_t.shape(), scores_t.shape());
        let (batches, num_boxes) = match bs {
            [b, n, 4] => (*b, *n),
            _ => {
                return Err(kernel_err(format!(
                    "boxes must have shape [batch, boxes, 4], got {bs:?}"
                )))
            }
        };
        let classes = match ss {
            [b, c, n] if *b == batches && *n == num_boxes => *c,
            _ => {
                return Err(kernel_err(format!(
                    "scores must have shape [{batches}, classes, {num_boxes}], got {ss:?}"
                )))
            }
        };
        let max_out = match optional_input(inputs, 2) {
            Some(t) => t.to_i64_vec()?.first().copied().unwrap_or(0).max(0),
            None => 0,
        };
        let iou_threshold = match optional_input(inputs, 3) {
            Some(t) => t.to_f32_vec()?.first().copied().unwrap_or(0.0),
            None => 0.0,
        };
        if !(0.0..=1.0).contains(&iou_threshold) {
            return Err(kernel_err(format!(
                "iou_threshold must be in [0, 1], got {iou_threshold}"
            )));
        }
        let score_threshold = match optional_input(inputs, 4) {
            Some(t) => t.to_f32_vec()?.first().copied(),
            None => None,
        };
        let boxes = boxes_t.to_f32_vec()?;
        let scores = scores_t.to_f32_vec()?;
        // A per-class selection can never exceed the number of boxes.
        let max_out = usize::try_from(max_out)
            .unwrap_or(usize::MAX)
            .min(num_boxes);

        let mut selected: Vec<i64> = Vec::new();
        if max_out > 0 {
            let mut candidates: Vec<(f32, usize)> = Vec::with_capacity(num_boxes);
            let mut chosen: Vec<Corners> = Vec::with_capacity(max_out);
            for b in 0..batches {
                let batch_boxes = boxes
                    .get(b * num_boxes * 4..(b + 1) * num_boxes * 4)
                    .ok_or_else(|| kernel_err("boxes data is shorter than its shape"))?;
                let corners: Vec<Corners> = batch_boxes
                    .chunks_exact(4)
                    .map(|c| Corners::new(c, self.center_point_box))
                    .collect();
                for c in 0..classes {
                    let start = (b * classes + c) * num_boxes;
                    let class_scores = scores
                        .get(start..start + num_boxes)
                        .ok_or_else(|| kernel_err("scores data is shorter than its shape"))?;
                    candidates.clear();
                    candidates.extend(
                        class_scores
                            .iter()
                            .enumerate()
                            .filter(|(_, &s)| score_threshold.is_none_or(|t| s > t))
                            .map(|(i, &s)| (s, i)),
                    );
                    // `sort_by` is stable: equal scores keep their box order.
                    candidates.sort_by(|x, y| y.0.total_cmp(&x.0));
                    chosen.clear();
                    for &(_, i) in &candidates {
                        let Some(cand) = corners.get(i) else { continue };
                        if chosen.iter().any(|s| suppresses(s, cand, iou_threshold)) {
                            continue;
                        }
                        chosen.push(*cand);
                        selected.extend([b as i64, c as i64, i as i64]);
                        if chosen.len() >= max_out {
                            break;
                        }
                    }
                }
            }
        }
        let n = selected.len() / 3;
        Ok(vec![Tensor::from_vec(vec![n, 3], selected)?])
    }
}
