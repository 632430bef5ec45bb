// CPU kernels of RcnnZooRoiPool and RcnnZooRoiPoolGrad (see roi_pool_op.cc for the interface).
//
// Semantics (Fast R-CNN / py-faster-rcnn ROIPooling, channels-last):
//   start = round(x1 * scale), end = round(x2 * scale) (round half away from zero; same for y),
//   roi_w = max(end_w - start_w + 1, 1), bin_w = roi_w / pw computed in T (as the Caffe layer
//   does in its Dtype; this decides the bin edges, e.g. 7 * (29 / 7) is 29 in float, 30 in
//   double), bin j covers columns [floor(j * bin_w), ceil((j + 1) * bin_w)) + start_w clipped
//   to [0, W); likewise rows. Output = max over the bin (0 for an empty bin), NaN if the bin
//   holds a NaN (non-finite features reach only the bins that contain them).
// Ties: the first maximum in row-major scan order (h, then w) wins, and receives the gradient;
// in a bin holding NaNs that is the first NaN.

#include <atomic>
#include <limits>

#include "roi_common.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"

namespace rcnn_zoo {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;

// Half-open clipped bin ranges of one RoI, in feature-map cells.
struct BinRange {
  int64_t h0, h1, w0, w1;
  bool empty() const { return h1 <= h0 || w1 <= w0; }
};

// Quantised RoI geometry: integer start cell and the (fractional) bin size, per axis.
template <typename T>
struct RoiPoolBox {
  double start_h, start_w;  // integral values; double keeps huge coordinates free of overflow
  T bin_h, bin_w;

  RoiPoolBox(const T* roi, T scale, int64_t pooled_height, int64_t pooled_width) {
    start_w = static_cast<double>(std::round(roi[1] * scale));
    start_h = static_cast<double>(std::round(roi[2] * scale));
    const double end_w = static_cast<double>(std::round(roi[3] * scale));
    const double end_h = static_cast<double>(std::round(roi[4] * scale));
    const double roi_w = std::max(end_w - start_w + 1.0, 1.0);
    const double roi_h = std::max(end_h - start_h + 1.0, 1.0);
    bin_w = static_cast<T>(roi_w) / static_cast<T>(pooled_width);
    bin_h = static_cast<T>(roi_h) / static_cast<T>(pooled_height);
  }

  // Cells of bin (i, j), clipped to the [height, width] map.
  BinRange Bin(int64_t i, int64_t j, int64_t height, int64_t width) const {
    BinRange r;
    r.h0 = ClampToInt(std::floor(static_cast<T>(i) * bin_h) + start_h, 0, height);
    r.h1 = ClampToInt(std::ceil(static_cast<T>(i + 1) * bin_h) + start_h, 0, height);
    r.w0 = ClampToInt(std::floor(static_cast<T>(j) * bin_w) + start_w, 0, width);
    r.w1 = ClampToInt(std::ceil(static_cast<T>(j + 1) * bin_w) + start_w, 0, width);
    return r;
  }
};

// Max-pools one bin over all channels. `image` is one [H, W, C] feature map; out/argmax point at
// the bin's C outputs. Initialising from the bin's first cell and replacing only on a strictly
// greater value implements the "first maximum in scan order" tie rule.
template <typename T>
void MaxPoolBin(const T* __restrict__ image, int64_t width, int64_t channels, const BinRange& bin,
                T* __restrict__ out, int32_t* __restrict__ argmax) {
  if (bin.empty()) {
    std::fill_n(out, channels, T(0));
    std::fill_n(argmax, channels, -1);
    return;
  }
  const int32_t first = static_cast<int32_t>(bin.h0 * width + bin.w0);
  const T* first_cell = image + first * channels;
  std::copy_n(first_cell, channels, out);
  std::fill_n(argmax, channels, first);
  for (int64_t h = bin.h0; h < bin.h1; ++h) {
    for (int64_t w = (h == bin.h0 ? bin.w0 + 1 : bin.w0); w < bin.w1; ++w) {
      const int32_t pos = static_cast<int32_t>(h * width + w);
      const T* cell = image + static_cast<int64_t>(pos) * channels;
      // Branch-free update (a select and a bit mask) so that GCC vectorises the loop. A NaN
      // beats every number and no NaN beats another, so a bin holding a NaN yields NaN (as
      // np.max / tf.reduce_max do) with its gradient at the first NaN in scan order, whatever
      // cell the scan starts from.
      for (int64_t c = 0; c < channels; ++c) {
        const T value = cell[c], best = out[c];
        const bool take = (value > best) | ((value != value) & (best == best));
        const int32_t take_mask = -static_cast<int32_t>(take);
        out[c] = take ? value : best;
        argmax[c] ^= (argmax[c] ^ pos) & take_mask;
      }
    }
  }
}

// Attributes and checks shared by the forward and the gradient kernel.
class RoiPoolBase : public OpKernel {
 public:
  explicit RoiPoolBase(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("pooled_height", &pooled_height_));
    OP_REQUIRES_OK(context, context->GetAttr("pooled_width", &pooled_width_));
    OP_REQUIRES_OK(context, CheckPooledSize(pooled_height_, pooled_width_));
  }

 protected:
  // Argmax stores h * W + w as int32, so the map must have fewer than 2^31 cells.
  static absl::Status CheckMapSize(const Tensor& features) {
    if (features.dim_size(1) * features.dim_size(2) >
        static_cast<int64_t>(std::numeric_limits<int32_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat("roi_pool supports feature maps with H * W < 2^31, got ",
                       features.shape().DebugString()));
    }
    return absl::OkStatus();
  }

  int64_t pooled_height_ = 0;
  int64_t pooled_width_ = 0;
};

template <typename T>
class RoiPoolOp : public RoiPoolBase {
 public:
  using RoiPoolBase::RoiPoolBase;

  void Compute(OpKernelContext* context) override {
    const Tensor& features = context->input(0);
    const Tensor& rois = context->input(1);
    OP_REQUIRES_OK(context, ValidateFeaturesAndRoisShapes(features, rois));
    T scale;
    OP_REQUIRES_OK(context, ReadSpatialScale<T>(context->input(2), &scale));
    OP_REQUIRES_OK(context, CheckMapSize(features));
    const int64_t batch = features.dim_size(0), height = features.dim_size(1),
                  width = features.dim_size(2), channels = features.dim_size(3);
    OP_REQUIRES_OK(context, ValidateRoiValues<T>(rois, batch));

    const int64_t num_rois = rois.dim_size(0);
    const TensorShape out_shape({num_rois, pooled_height_, pooled_width_, channels});
    Tensor* output = nullptr;
    Tensor* argmax = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, out_shape, &output));
    OP_REQUIRES_OK(context, context->allocate_output(1, out_shape, &argmax));
    if (out_shape.num_elements() == 0) return;

    const T* feat = features.flat<T>().data();
    const T* roi_data = rois.flat<T>().data();
    T* out = output->flat<T>().data();
    int32_t* arg = argmax->flat<int32_t>().data();
    const int64_t bins = pooled_height_ * pooled_width_;
    const int64_t image_size = height * width * channels;
    // One unit = one output bin (all channels); bins write disjoint outputs.
    auto work = [&](int64_t begin, int64_t end) {
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t k = unit / bins, i = (unit % bins) / pooled_width_,
                      j = unit % pooled_width_;
        const T* roi = roi_data + k * kRoiColumns;
        const RoiPoolBox<T> box(roi, scale, pooled_height_, pooled_width_);
        MaxPoolBin(feat + RoiBatchIndex(roi) * image_size, width, channels,
                   box.Bin(i, j, height, width), out + unit * channels, arg + unit * channels);
      }
    };
    // Rough cost: a bin of a typical proposal spans a handful of cells, each a compare per channel.
    ParallelFor(context, num_rois * bins, 10 * channels + 100, work);
  }
};

template <typename T>
class RoiPoolGradOp : public RoiPoolBase {
 public:
  using RoiPoolBase::RoiPoolBase;

  void Compute(OpKernelContext* context) override {
    const Tensor& features = context->input(0);
    const Tensor& rois = context->input(1);
    const Tensor& argmax = context->input(3);
    const Tensor& grad = context->input(4);
    OP_REQUIRES_OK(context, ValidateFeaturesAndRoisShapes(features, rois));
    T scale;
    OP_REQUIRES_OK(context, ReadSpatialScale<T>(context->input(2), &scale));
    OP_REQUIRES_OK(context, CheckMapSize(features));
    const int64_t batch = features.dim_size(0), height = features.dim_size(1),
                  width = features.dim_size(2), channels = features.dim_size(3);
    const int64_t num_rois = rois.dim_size(0);
    OP_REQUIRES_OK(context,
                   ValidateGradShape(grad, num_rois, pooled_height_, pooled_width_, channels));
    OP_REQUIRES(context, argmax.shape() == grad.shape(),
                absl::InvalidArgumentError("argmax must have the shape of grad " +
                                           grad.shape().DebugString() + ", got " +
                                           argmax.shape().DebugString()));
    OP_REQUIRES_OK(context, ValidateRoiValues<T>(rois, batch));

    Tensor* grad_features = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, features.shape(), &grad_features));
    if (grad_features->NumElements() == 0) return;

    const T* roi_data = rois.flat<T>().data();
    const int32_t* arg = argmax.flat<int32_t>().data();
    const T* g = grad.flat<T>().data();
    T* gin = grad_features->flat<T>().data();
    const RoisByImage groups = GroupRoisByImage(roi_data, num_rois, batch);
    const RowBands bands(batch, height, NumWorkerThreads(context));
    const int64_t cells = height * width;
    std::atomic<bool> bad_argmax{false};

    // Each element's contributions are summed in RoI order, then bin order, whatever the band
    // layout: the result does not depend on the thread count.
    auto work = [&](int64_t begin, int64_t end) {
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t n = bands.Image(unit);
        const int64_t row0 = bands.RowBegin(unit), row1 = bands.RowEnd(unit);
        T* image = gin + n * cells * channels;
        std::fill(image + row0 * width * channels, image + row1 * width * channels, T(0));
        // Flat positions h * W + w of this band's cells.
        const int64_t pos0 = row0 * width, pos1 = row1 * width;
        for (int64_t r = groups.offset[n]; r < groups.offset[n + 1]; ++r) {
          const int64_t k = groups.order[r];
          const RoiPoolBox<T> box(roi_data + k * kRoiColumns, scale, pooled_height_,
                                  pooled_width_);
          for (int64_t i = 0; i < pooled_height_; ++i) {
            const BinRange rows = box.Bin(i, 0, height, width);
            if (rows.h1 <= row0 || rows.h0 >= row1) continue;  // bin row outside the band
            const int64_t first = (k * pooled_height_ + i) * pooled_width_ * channels;
            bool bad = false;
            for (int64_t j = 0; j < pooled_width_; ++j) {
              const int32_t* a = arg + first + j * channels;
              const T* gb = g + first + j * channels;
              for (int64_t c = 0; c < channels; ++c) {
                const int64_t pos = a[c];
                if (pos >= pos0 && pos < pos1) {
                  image[pos * channels + c] += gb[c];
                } else {
                  // -1 marks an empty bin; other positions belong to other bands. Anything
                  // outside [-1, H * W) is corrupt input: never written, reported below.
                  bad |= pos < -1 || pos >= cells;
                }
              }
            }
            if (bad) bad_argmax.store(true, std::memory_order_relaxed);
          }
        }
      }
    };
    // Rough cost: zeroing the band, plus the share of the image's bins that meet the band.
    const int64_t bins_per_image = (num_rois + batch - 1) / batch * pooled_height_ * pooled_width_;
    ParallelFor(context, batch * bands.bands_per_image,
                bands.rows_per_band * width * channels +
                    bins_per_image * channels * 4 / bands.bands_per_image + 100,
                work);
    OP_REQUIRES(context, !bad_argmax.load(),
                absl::InvalidArgumentError(
                    "argmax has entries outside [-1, H * W); it must be the argmax output of "
                    "RcnnZooRoiPool for the same features shape"));
  }
};

#define RCNN_ZOO_REGISTER_ROI_POOL(T)                                                        \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("RcnnZooRoiPool").Device(DEVICE_CPU).TypeConstraint<T>("T"), RoiPoolOp<T>);      \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("RcnnZooRoiPoolGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"), RoiPoolGradOp<T>);

RCNN_ZOO_REGISTER_ROI_POOL(float);
RCNN_ZOO_REGISTER_ROI_POOL(double);

#undef RCNN_ZOO_REGISTER_ROI_POOL

}  // namespace
}  // namespace rcnn_zoo
