// Shared helpers for the rcnn_zoo RoI op kernels (roi_pool, roi_align, ps_roi_pool).
//
// Everything that touches user-provided values before a kernel reads memory lives here, so the
// three ops validate identically: tensor ranks, the RoI batch indices (integral, in [0, N)) and
// finite coordinates. Also: grouping RoIs by image and channel blocking for race-free gradients,
// and a thin wrapper around TensorFlow's CPU thread pool.
//
// Layouts: features [N, H, W, C] (channels-last), rois [K, 5] rows (batch_index, x1, y1, x2, y2)
// in input-image pixels, spatial_scale a scalar mapping image pixels onto the feature map.

#ifndef RCNN_ZOO_CUSTOM_OPS_ROI_COMMON_H_
#define RCNN_ZOO_CUSTOM_OPS_ROI_COMMON_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace rcnn_zoo {

using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

// Number of columns of a RoI row: (batch_index, x1, y1, x2, y2).
constexpr int64_t kRoiColumns = 5;

// Upper bound of the sampling_ratio attribute: sampling_ratio^2 samples are taken per bin, so an
// unbounded value would let one attribute stall the kernel.
constexpr int64_t kMaxSamplingRatio = 256;

// Checks features [N, H, W, C] and rois [K, 5].
inline absl::Status ValidateFeaturesAndRoisShapes(const Tensor& features, const Tensor& rois) {
  if (features.dims() != 4) {
    return absl::InvalidArgumentError(
        "features must have rank 4 [N, H, W, C], got shape " + features.shape().DebugString());
  }
  if (rois.dims() != 2 || rois.dim_size(1) != kRoiColumns) {
    return absl::InvalidArgumentError(
        "rois must have rank 2 and shape [K, 5], rows (batch_index, x1, y1, x2, y2), got shape " +
        rois.shape().DebugString());
  }
  return absl::OkStatus();
}

// Checks that spatial_scale is a finite, positive scalar and returns it through `scale`.
template <typename T>
absl::Status ReadSpatialScale(const Tensor& spatial_scale, T* scale) {
  if (spatial_scale.dims() != 0) {
    return absl::InvalidArgumentError("spatial_scale must be a scalar, got shape " +
                                      spatial_scale.shape().DebugString());
  }
  const T value = spatial_scale.scalar<T>()();
  if (!std::isfinite(static_cast<double>(value)) || !(value > T(0))) {
    return absl::InvalidArgumentError(
        absl::StrCat("spatial_scale must be finite and > 0, got ", static_cast<double>(value)));
  }
  *scale = value;
  return absl::OkStatus();
}

// Checks every RoI row: all five values finite, batch index an integer in [0, batch_size).
// Runs before any kernel reads features at a RoI's batch index, so a bad row cannot cause an
// out-of-bounds read.
template <typename T>
absl::Status ValidateRoiValues(const Tensor& rois, int64_t batch_size) {
  const auto r = rois.matrix<T>();
  const int64_t num_rois = rois.dim_size(0);
  for (int64_t k = 0; k < num_rois; ++k) {
    const double b = static_cast<double>(r(k, 0));
    if (!std::isfinite(b)) {
      return absl::InvalidArgumentError(
          absl::StrCat("rois[", k, "] has a non-finite batch index (", b, ")"));
    }
    for (int64_t col = 1; col < kRoiColumns; ++col) {
      const double v = static_cast<double>(r(k, col));
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("rois[", k, "] has a non-finite coordinate (", v, ") in column ", col,
                         "; RoI coordinates must be finite"));
      }
    }
    if (b != std::floor(b)) {
      return absl::InvalidArgumentError(
          absl::StrCat("rois[", k, "] has non-integer batch index ", b));
    }
    if (b < 0 || b >= static_cast<double>(batch_size)) {
      return absl::InvalidArgumentError(absl::StrCat("rois[", k, "] has batch index ", b,
                                                     " but features has batch size ", batch_size));
    }
  }
  return absl::OkStatus();
}

// Checks the pooled output size attributes (also enforced by the op registration; re-checked
// here because the kernels index with them).
inline absl::Status CheckPooledSize(int64_t pooled_height, int64_t pooled_width) {
  if (pooled_height < 1 || pooled_width < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pooled_height and pooled_width must be >= 1, got ", pooled_height, " x ", pooled_width));
  }
  return absl::OkStatus();
}

// Checks that ps_roi_pool features have group_size^2 * output_dim channels.
inline absl::Status CheckPsChannels(int64_t channels, int64_t group_size, int64_t output_dim) {
  const int64_t groups = group_size * group_size;
  if (channels % groups != 0 || channels / groups != output_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "features has ", channels, " channels but ps_roi_pool needs group_size^2 * output_dim = ",
        group_size, "^2 * ", output_dim, " = ", groups * output_dim));
  }
  return absl::OkStatus();
}

// Checks that the incoming gradient has the forward output's shape [K, a, b, c].
inline absl::Status ValidateGradShape(const Tensor& grad, int64_t k, int64_t a, int64_t b,
                                      int64_t c) {
  const TensorShape expected({k, a, b, c});
  if (grad.shape() != expected) {
    return absl::InvalidArgumentError("grad must have shape " + expected.DebugString() +
                                      " (the forward output's), got " +
                                      grad.shape().DebugString());
  }
  return absl::OkStatus();
}

// Converts a finite or infinite double to int64 after clamping it to [lo, hi], so huge (but
// finite) RoI coordinates never hit the undefined behaviour of an out-of-range cast.
inline int64_t ClampToInt(double v, int64_t lo, int64_t hi) {
  if (!(v > static_cast<double>(lo))) return lo;  // also catches NaN
  if (v >= static_cast<double>(hi)) return hi;
  return static_cast<int64_t>(v);
}

// Batch index of RoI row `k`, already validated to be an integer in [0, N).
template <typename T>
inline int64_t RoiBatchIndex(const T* roi_row) {
  return static_cast<int64_t>(roi_row[0]);
}

// RoI indices grouped by image: rois of image n are order[offset[n] .. offset[n+1]), in
// increasing RoI index. Gradient kernels walk RoIs per image in this fixed order, which makes the
// floating-point accumulation order (and so the result) independent of thread scheduling.
struct RoisByImage {
  std::vector<int64_t> offset;
  std::vector<int64_t> order;
};

template <typename T>
RoisByImage GroupRoisByImage(const T* rois, int64_t num_rois, int64_t batch_size) {
  RoisByImage groups;
  groups.offset.assign(batch_size + 1, 0);
  groups.order.resize(num_rois);
  for (int64_t k = 0; k < num_rois; ++k) {
    ++groups.offset[RoiBatchIndex(rois + k * kRoiColumns) + 1];
  }
  for (int64_t n = 0; n < batch_size; ++n) groups.offset[n + 1] += groups.offset[n];
  std::vector<int64_t> cursor(groups.offset.begin(), groups.offset.end() - 1);
  for (int64_t k = 0; k < num_rois; ++k) {
    groups.order[cursor[RoiBatchIndex(rois + k * kRoiColumns)]++] = k;
  }
  return groups;
}

// Number of worker threads of the op's CPU device.
inline int NumWorkerThreads(OpKernelContext* context) {
  return context->device()->tensorflow_cpu_worker_threads()->num_threads;
}

// Splits `num_items` (map rows, or output channel groups) into contiguous blocks for gradient
// sharding: enough blocks to keep every thread busy, but not so small that per-block overhead
// (recomputing bin geometry) dominates. Returns the block size.
inline int64_t ItemsPerBlock(int64_t num_items, int64_t batch_size, int num_threads,
                             int64_t min_block) {
  const int64_t wanted_units = 4 * static_cast<int64_t>(std::max(num_threads, 1));
  const int64_t blocks_per_image =
      std::max<int64_t>(1, (wanted_units + batch_size - 1) / std::max<int64_t>(batch_size, 1));
  int64_t per_block = (num_items + blocks_per_image - 1) / blocks_per_image;
  per_block = std::max(per_block, std::min(min_block, num_items));
  return std::max<int64_t>(per_block, 1);
}

// Row bands of the feature-gradient maps, the work units of the roi_pool / roi_align gradients.
// Unit u owns rows [row_begin, row_end) of image n = u / bands_per_image, over all columns and
// channels: that is one contiguous slice of the output, written by nobody else, so no two
// threads write the same element. A unit visits only the bins whose rows meet its band and
// reads their full channel vectors (contiguous), unlike a split over channels, whose units
// would each read a thin strided slice of every bin and waste most of each fetched cache line.
struct RowBands {
  int64_t height = 0, rows_per_band = 1, bands_per_image = 1;

  RowBands(int64_t batch_size, int64_t map_height, int num_threads) : height(map_height) {
    // Bands of at least 4 rows: a bin spanning two bands is read by both.
    rows_per_band = ItemsPerBlock(map_height, batch_size, num_threads, 4);
    bands_per_image = std::max<int64_t>(1, (map_height + rows_per_band - 1) / rows_per_band);
  }
  int64_t Image(int64_t unit) const { return unit / bands_per_image; }
  int64_t RowBegin(int64_t unit) const { return (unit % bands_per_image) * rows_per_band; }
  int64_t RowEnd(int64_t unit) const { return std::min(height, RowBegin(unit) + rows_per_band); }
};

// Runs work(begin, end) over [0, total) on the device's CPU thread pool; `cost_per_unit` is a
// rough cycle estimate per unit so that TensorFlow picks sensible shard sizes.
inline void ParallelFor(OpKernelContext* context, int64_t total, int64_t cost_per_unit,
                        const std::function<void(int64_t, int64_t)>& work) {
  if (total <= 0) return;
  using ::tensorflow::thread::ThreadPool;
  auto* workers = context->device()->tensorflow_cpu_worker_threads()->workers;
  workers->ParallelFor(
      total, ThreadPool::SchedulingParams::Adaptive(std::max<int64_t>(cost_per_unit, 1)), work);
}

// Shape function pieces shared by all ops: input 0 is features [N, H, W, C] (any dim may be
// unknown), input 1 is rois [K, 5]. Returns K and C through the out parameters.
inline absl::Status RoiInputShapes(::tensorflow::shape_inference::InferenceContext* c,
                                   ::tensorflow::shape_inference::DimensionHandle* num_rois,
                                   ::tensorflow::shape_inference::DimensionHandle* channels) {
  ::tensorflow::shape_inference::ShapeHandle features, rois;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &features));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &rois));
  ::tensorflow::shape_inference::DimensionHandle columns;
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(rois, 1), kRoiColumns, &columns));
  *num_rois = c->Dim(rois, 0);
  *channels = c->Dim(features, 3);
  return absl::OkStatus();
}

// Checks that input `index` (spatial_scale) is a scalar.
inline absl::Status ScalarInputShape(::tensorflow::shape_inference::InferenceContext* c,
                                     int index) {
  ::tensorflow::shape_inference::ShapeHandle scalar;
  return c->WithRank(c->input(index), 0, &scalar);
}

// Shape check of a gradient op's incoming gradient (input `grad_input`): it must merge with
// [K, a, b, last]. The op's output, d(features), has the shape of input 0.
inline absl::Status GradInputShape(::tensorflow::shape_inference::InferenceContext* c,
                                   int grad_input,
                                   ::tensorflow::shape_inference::DimensionHandle num_rois,
                                   ::tensorflow::shape_inference::DimensionOrConstant a,
                                   ::tensorflow::shape_inference::DimensionOrConstant b,
                                   ::tensorflow::shape_inference::DimensionOrConstant last) {
  ::tensorflow::shape_inference::ShapeHandle grad;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(grad_input), 4, &grad));
  TF_RETURN_IF_ERROR(c->Merge(grad, c->MakeShape({num_rois, a, b, last}), &grad));
  c->set_output(0, c->input(0));
  return absl::OkStatus();
}

}  // namespace rcnn_zoo

#endif  // RCNN_ZOO_CUSTOM_OPS_ROI_COMMON_H_
