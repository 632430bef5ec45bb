// CPU kernels of RcnnZooRoiAlign and RcnnZooRoiAlignGrad (see roi_align_op.cc for the interface).
//
// Semantics (detectron2 ROIAlign, channels-last), all arithmetic in T:
//   x1 = roi.x1 * scale - offset (offset 0.5 if aligned, else 0), likewise y1, x2, y2;
//   roi_w = x2 - x1, at least 1 unless aligned; bin_w = roi_w / pw; grid_w = sampling_ratio if
//   > 0 else ceil(roi_w / pw); sample ix of bin j at x = x1 + j * bin_w + (ix + 0.5) * bin_w /
//   grid_w (likewise y). A sample with y < -1 or y > H (or x < -1 or x > W) contributes 0;
//   otherwise y is clamped to >= 0, y_low = floor(y), and when y_low >= H - 1 the sample snaps
//   to row H - 1; bilinear weights (1 - ly, ly) for rows (y_low, y_high), likewise columns.
//   Output = sum of the samples / max(grid_h * grid_w, 1) (zero-contributing samples count).
// Gradient: each sample scatters grad / count times its four bilinear weights.
//
// The sampling grid is separable, so each bin precomputes its valid row samples and column
// samples once and the per-channel loop only does the weighted sums.

#include <vector>

#include "roi_common.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"

namespace rcnn_zoo {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;

// Cap of the adaptive grid per axis. Only RoIs more than 2^40 bins tall or wide reach it; it keeps
// the sample index arithmetic in range for absurd (finite) coordinates.
constexpr int64_t kMaxAdaptiveGrid = int64_t{1} << 40;

// One sample position along one axis: the two neighbouring cells and their bilinear weights.
template <typename T>
struct AxisSample {
  int64_t low, high;
  T w_low, w_high;  // (1 - l, l) with l the distance from `low`
};

// Continuous RoI geometry on the feature map.
template <typename T>
struct RoiAlignBox {
  T start_h, start_w, bin_h, bin_w;
  int64_t grid_h, grid_w;
  T count;  // divisor of the bin average: number of samples per bin, at least 1

  RoiAlignBox(const T* roi, T scale, bool aligned, int64_t pooled_height, int64_t pooled_width,
              int64_t sampling_ratio) {
    const T offset = aligned ? T(0.5) : T(0);
    start_w = roi[1] * scale - offset;
    start_h = roi[2] * scale - offset;
    T roi_w = (roi[3] * scale - offset) - start_w;
    T roi_h = (roi[4] * scale - offset) - start_h;
    if (!aligned) {  // legacy (Mask R-CNN) mode forces malformed RoIs to be 1x1
      roi_w = std::max(roi_w, T(1));
      roi_h = std::max(roi_h, T(1));
    }
    bin_h = roi_h / static_cast<T>(pooled_height);
    bin_w = roi_w / static_cast<T>(pooled_width);
    grid_h = sampling_ratio > 0 ? sampling_ratio
                                : ClampToInt(std::ceil(bin_h), 0, kMaxAdaptiveGrid);
    grid_w = sampling_ratio > 0 ? sampling_ratio
                                : ClampToInt(std::ceil(bin_w), 0, kMaxAdaptiveGrid);
    count = std::max(static_cast<T>(grid_h) * static_cast<T>(grid_w), T(1));
  }
};

// Range [*first, *last) of sample indices worth visiting. Normally all of [0, grid); for a huge
// adaptive grid (a RoI much larger than the map) only the indices whose position can fall in
// [-1, size], with one index of margin for rounding: the others contribute 0 anyway, and
// visiting them could take arbitrarily long.
inline void CandidateSamples(double base, double bin, int64_t grid, int64_t size,
                             int64_t* first, int64_t* last) {
  *first = 0;
  *last = grid;
  if (grid <= 4 * (size + 2) || !(bin > 0)) return;
  const double step = bin / static_cast<double>(grid);
  const double t0 = (-1.0 - base) / step - 0.5;
  const double t1 = (static_cast<double>(size) - base) / step - 0.5;
  *first = ClampToInt(std::floor(t0) - 1.0, 0, grid);
  *last = ClampToInt(std::ceil(t1) + 2.0, 0, grid);
}

// Valid samples of bin `index` along one axis of length `size` (rows: start_h, bin_h, grid_h, H).
template <typename T>
void AxisSamples(T start, T bin, int64_t index, int64_t grid, int64_t size,
                 std::vector<AxisSample<T>>* samples) {
  samples->clear();
  if (size <= 0 || grid <= 0) return;  // an empty map has no cell to interpolate from
  const T base = start + static_cast<T>(index) * bin;
  int64_t first, last;
  CandidateSamples(static_cast<double>(base), static_cast<double>(bin), grid, size, &first,
                   &last);
  for (int64_t s = first; s < last; ++s) {
    T pos = base + (static_cast<T>(s) + T(0.5)) * bin / static_cast<T>(grid);
    // Written so that NaN (from inf - inf with overflowing coordinates) is also skipped.
    if (!(pos >= T(-1) && pos <= static_cast<T>(size))) continue;
    if (pos <= T(0)) pos = T(0);
    AxisSample<T> sample;
    sample.low = static_cast<int64_t>(pos);  // pos is in [0, size] here, so this is floor
    if (sample.low >= size - 1) {
      sample.low = sample.high = size - 1;
      pos = static_cast<T>(sample.low);
    } else {
      sample.high = sample.low + 1;
    }
    sample.w_high = pos - static_cast<T>(sample.low);
    sample.w_low = T(1) - sample.w_high;
    samples->push_back(sample);
  }
}

// out[c] = sum over the bin's samples of the bilinear interpolation of channel c, / count.
// A neighbour whose weight is 0 (a sample exactly on a row or column, or snapped to the last
// one) is not read: 0 * inf would turn an infinite feature next to the sample into NaN. So a
// non-finite feature value reaches exactly the bins that weigh it (w_low = 1 - frac is never
// 0), and finite sums are unchanged (the skipped terms were exact zeros).
template <typename T>
void InterpolateBin(const T* __restrict__ image, int64_t width, int64_t channels,
                    const std::vector<AxisSample<T>>& ys, const std::vector<AxisSample<T>>& xs,
                    T count, T* __restrict__ out) {
  std::fill_n(out, channels, T(0));
  for (const AxisSample<T>& y : ys) {
    for (const AxisSample<T>& x : xs) {
      const T w1 = y.w_low * x.w_low, w2 = y.w_low * x.w_high;
      const T w3 = y.w_high * x.w_low, w4 = y.w_high * x.w_high;
      const T* p1 = image + (y.low * width + x.low) * channels;
      const T* p2 = image + (y.low * width + x.high) * channels;
      const T* p3 = image + (y.high * width + x.low) * channels;
      const T* p4 = image + (y.high * width + x.high) * channels;
      const bool read_y_high = y.w_high != T(0), read_x_high = x.w_high != T(0);
      if (read_y_high && read_x_high) {
        for (int64_t c = 0; c < channels; ++c) {
          out[c] += w1 * p1[c] + w2 * p2[c] + w3 * p3[c] + w4 * p4[c];
        }
      } else if (read_y_high) {
        for (int64_t c = 0; c < channels; ++c) out[c] += w1 * p1[c] + w3 * p3[c];
      } else if (read_x_high) {
        for (int64_t c = 0; c < channels; ++c) out[c] += w1 * p1[c] + w2 * p2[c];
      } else {
        for (int64_t c = 0; c < channels; ++c) out[c] += w1 * p1[c];
      }
    }
  }
  for (int64_t c = 0; c < channels; ++c) out[c] /= count;
}

// dst[c] += src[c] * weight for c in [0, n).
template <typename T>
inline void AddScaled(T* __restrict__ dst, const T* __restrict__ src, T weight, int64_t n) {
  for (int64_t c = 0; c < n; ++c) dst[c] += src[c] * weight;
}

// One map row touched by a bin's samples, with its bilinear row weight.
template <typename T>
struct RowWeight {
  int64_t row;
  T weight;
};

// The rows of the samples `ys` that lie in [row0, row1), in sample order (low row, then high).
template <typename T>
void RowsInBand(const std::vector<AxisSample<T>>& ys, int64_t row0, int64_t row1,
                std::vector<RowWeight<T>>* rows) {
  rows->clear();
  for (const AxisSample<T>& y : ys) {
    if (y.low >= row0 && y.low < row1) rows->push_back({y.low, y.w_low});
    if (y.high >= row0 && y.high < row1) rows->push_back({y.high, y.w_high});
  }
}

// Scatters one bin's gradient `g` (already divided by the sample count, all C channels) to the
// samples' neighbours on `rows` of `image` (one [H, W, C] gradient map).
template <typename T>
void ScatterBin(T* image, int64_t width, int64_t channels, const std::vector<RowWeight<T>>& rows,
                const std::vector<AxisSample<T>>& xs, const T* g) {
  for (const RowWeight<T>& y : rows) {
    T* row = image + y.row * width * channels;
    for (const AxisSample<T>& x : xs) {
      // One pass per neighbour: each pass has a single destination, so it vectorises, and
      // coinciding neighbours (at the map border) still add up in a fixed order.
      AddScaled(row + x.low * channels, g, y.weight * x.w_low, channels);
      AddScaled(row + x.high * channels, g, y.weight * x.w_high, channels);
    }
  }
}

// Attributes and checks shared by the forward and the gradient kernel.
class RoiAlignBase : public OpKernel {
 public:
  explicit RoiAlignBase(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("pooled_height", &pooled_height_));
    OP_REQUIRES_OK(context, context->GetAttr("pooled_width", &pooled_width_));
    OP_REQUIRES_OK(context, context->GetAttr("sampling_ratio", &sampling_ratio_));
    OP_REQUIRES_OK(context, context->GetAttr("aligned", &aligned_));
    OP_REQUIRES_OK(context, CheckPooledSize(pooled_height_, pooled_width_));
    OP_REQUIRES(context, sampling_ratio_ <= kMaxSamplingRatio,
                absl::InvalidArgumentError(absl::StrCat("sampling_ratio must be <= ",
                                                        kMaxSamplingRatio,
                                                        " (or <= 0 for adaptive), got ",
                                                        sampling_ratio_)));
  }

 protected:
  template <typename T>
  RoiAlignBox<T> Box(const T* roi, T scale) const {
    return RoiAlignBox<T>(roi, scale, aligned_, pooled_height_, pooled_width_, sampling_ratio_);
  }

  int64_t pooled_height_ = 0;
  int64_t pooled_width_ = 0;
  int64_t sampling_ratio_ = -1;
  bool aligned_ = false;
};

template <typename T>
class RoiAlignOp : public RoiAlignBase {
 public:
  using RoiAlignBase::RoiAlignBase;

  void Compute(OpKernelContext* context) override {
    const Tensor& features = context->input(0);
    const Tensor& rois = context->input(1);
    OP_REQUIRES_OK(context, ValidateFeaturesAndRoisShapes(features, rois));
    T scale;
    OP_REQUIRES_OK(context, ReadSpatialScale<T>(context->input(2), &scale));
    const int64_t batch = features.dim_size(0), height = features.dim_size(1),
                  width = features.dim_size(2), channels = features.dim_size(3);
    OP_REQUIRES_OK(context, ValidateRoiValues<T>(rois, batch));

    const int64_t num_rois = rois.dim_size(0);
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       0, TensorShape({num_rois, pooled_height_, pooled_width_, channels}),
                       &output));
    if (output->NumElements() == 0) return;

    const T* feat = features.flat<T>().data();
    const T* roi_data = rois.flat<T>().data();
    T* out = output->flat<T>().data();
    const int64_t bins = pooled_height_ * pooled_width_;
    const int64_t image_size = height * width * channels;
    // One unit = one output bin (all channels); bins write disjoint outputs.
    auto work = [&](int64_t begin, int64_t end) {
      std::vector<AxisSample<T>> ys, xs;
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t k = unit / bins, i = (unit % bins) / pooled_width_,
                      j = unit % pooled_width_;
        const T* roi = roi_data + k * kRoiColumns;
        const RoiAlignBox<T> box = Box(roi, scale);
        AxisSamples(box.start_h, box.bin_h, i, box.grid_h, height, &ys);
        AxisSamples(box.start_w, box.bin_w, j, box.grid_w, width, &xs);
        InterpolateBin(feat + RoiBatchIndex(roi) * image_size, width, channels, ys, xs,
                       box.count, out + unit * channels);
      }
    };
    // Rough cost: a typical bin has ~4 samples of 4 neighbours, ~2 flops each, per channel.
    ParallelFor(context, num_rois * bins, 32 * channels + 200, work);
  }
};

template <typename T>
class RoiAlignGradOp : public RoiAlignBase {
 public:
  using RoiAlignBase::RoiAlignBase;

  void Compute(OpKernelContext* context) override {
    const Tensor& features = context->input(0);
    const Tensor& rois = context->input(1);
    const Tensor& grad = context->input(3);
    OP_REQUIRES_OK(context, ValidateFeaturesAndRoisShapes(features, rois));
    T scale;
    OP_REQUIRES_OK(context, ReadSpatialScale<T>(context->input(2), &scale));
    const int64_t batch = features.dim_size(0), height = features.dim_size(1),
                  width = features.dim_size(2), channels = features.dim_size(3);
    const int64_t num_rois = rois.dim_size(0);
    OP_REQUIRES_OK(context,
                   ValidateGradShape(grad, num_rois, pooled_height_, pooled_width_, channels));
    OP_REQUIRES_OK(context, ValidateRoiValues<T>(rois, batch));

    Tensor* grad_features = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, features.shape(), &grad_features));
    if (grad_features->NumElements() == 0) return;

    const T* roi_data = rois.flat<T>().data();
    const T* g = grad.flat<T>().data();
    T* gin = grad_features->flat<T>().data();
    const RoisByImage groups = GroupRoisByImage(roi_data, num_rois, batch);
    const RowBands bands(batch, height, NumWorkerThreads(context));
    const int64_t cells = height * width;

    // Each element's contributions are summed in RoI, bin, sample order whatever the band
    // layout: the result does not depend on the thread count.
    auto work = [&](int64_t begin, int64_t end) {
      std::vector<AxisSample<T>> ys, xs;
      std::vector<RowWeight<T>> rows;
      std::vector<T> g_bin(channels);
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t n = bands.Image(unit);
        const int64_t row0 = bands.RowBegin(unit), row1 = bands.RowEnd(unit);
        T* image = gin + n * cells * channels;
        std::fill(image + row0 * width * channels, image + row1 * width * channels, T(0));
        for (int64_t r = groups.offset[n]; r < groups.offset[n + 1]; ++r) {
          const int64_t k = groups.order[r];
          const RoiAlignBox<T> box = Box(roi_data + k * kRoiColumns, scale);
          for (int64_t i = 0; i < pooled_height_; ++i) {
            AxisSamples(box.start_h, box.bin_h, i, box.grid_h, height, &ys);
            RowsInBand(ys, row0, row1, &rows);
            if (rows.empty()) continue;
            for (int64_t j = 0; j < pooled_width_; ++j) {
              AxisSamples(box.start_w, box.bin_w, j, box.grid_w, width, &xs);
              if (xs.empty()) continue;
              const T* gb = g + ((k * pooled_height_ + i) * pooled_width_ + j) * channels;
              for (int64_t c = 0; c < channels; ++c) g_bin[c] = gb[c] / box.count;
              ScatterBin(image, width, channels, rows, xs, g_bin.data());
            }
          }
        }
      }
    };
    // Rough cost: zeroing the band, plus the share of the image's bins that meet the band, each
    // ~4 samples of 4 neighbours per channel.
    const int64_t bins_per_image = (num_rois + batch - 1) / batch * pooled_height_ * pooled_width_;
    ParallelFor(context, batch * bands.bands_per_image,
                bands.rows_per_band * width * channels +
                    bins_per_image * (32 * channels + 200) / bands.bands_per_image + 100,
                work);
  }
};

#define RCNN_ZOO_REGISTER_ROI_ALIGN(T)                                                       \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("RcnnZooRoiAlign").Device(DEVICE_CPU).TypeConstraint<T>("T"), RoiAlignOp<T>);    \
  REGISTER_KERNEL_BUILDER(Name("RcnnZooRoiAlignGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          RoiAlignGradOp<T>);

RCNN_ZOO_REGISTER_ROI_ALIGN(float);
RCNN_ZOO_REGISTER_ROI_ALIGN(double);

#undef RCNN_ZOO_REGISTER_ROI_ALIGN

}  // namespace
}  // namespace rcnn_zoo
