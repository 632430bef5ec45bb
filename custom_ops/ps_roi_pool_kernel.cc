// CPU kernels of RcnnZooPsRoiPool and RcnnZooPsRoiPoolGrad (see ps_roi_pool_op.cc).
//
// Semantics (R-FCN PSROIPooling, channels-last), arithmetic in T as the Caffe layer's Dtype:
//   x1' = round(x1) * s, x2' = (round(x2) + 1) * s (round half away from zero; likewise y),
//   roi_w = max(x2' - x1', 0.1), bin_w = roi_w / k; bin j covers columns
//   [floor(j * bin_w + x1'), ceil((j + 1) * bin_w + x1')) with both ends clipped to [0, W];
//   likewise rows. Output channel d of bin (i, j) = mean of input channel (d * k + i) * k + j
//   over the bin, 0 for an empty bin. Gradient: grad / area to every cell of the bin.

#include <vector>

#include "roi_common.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"

namespace rcnn_zoo {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;

// Half-open clipped cell ranges of one bin.
struct PsBin {
  int64_t h0, h1, w0, w1;
  bool empty() const { return h1 <= h0 || w1 <= w0; }
  int64_t area() const { return (h1 - h0) * (w1 - w0); }
};

template <typename T>
struct PsRoiBox {
  T start_h, start_w, bin_h, bin_w;

  PsRoiBox(const T* roi, T scale, int64_t group_size) {
    start_w = std::round(roi[1]) * scale;
    start_h = std::round(roi[2]) * scale;
    const T end_w = (std::round(roi[3]) + T(1)) * scale;
    const T end_h = (std::round(roi[4]) + T(1)) * scale;
    // The 0.1 floor keeps malformed RoIs from producing zero-sized bins (as in R-FCN).
    bin_w = std::max(end_w - start_w, T(0.1)) / static_cast<T>(group_size);
    bin_h = std::max(end_h - start_h, T(0.1)) / static_cast<T>(group_size);
  }

  PsBin Bin(int64_t i, int64_t j, int64_t height, int64_t width) const {
    PsBin b;
    b.h0 = ClampToInt(std::floor(static_cast<T>(i) * bin_h + start_h), 0, height);
    b.h1 = ClampToInt(std::ceil(static_cast<T>(i + 1) * bin_h + start_h), 0, height);
    b.w0 = ClampToInt(std::floor(static_cast<T>(j) * bin_w + start_w), 0, width);
    b.w1 = ClampToInt(std::ceil(static_cast<T>(j + 1) * bin_w + start_w), 0, width);
    return b;
  }
};

// Attributes and checks shared by the forward and the gradient kernel.
class PsRoiPoolBase : public OpKernel {
 public:
  explicit PsRoiPoolBase(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("group_size", &group_size_));
    OP_REQUIRES_OK(context, context->GetAttr("output_dim", &output_dim_));
    OP_REQUIRES(context, group_size_ >= 1 && output_dim_ >= 1,
                absl::InvalidArgumentError(absl::StrCat(
                    "group_size and output_dim must be >= 1, got ", group_size_, " and ",
                    output_dim_)));
  }

 protected:
  // Checks everything but the incoming gradient; reads the scale.
  template <typename T>
  absl::Status ValidateInputs(OpKernelContext* context, T* scale) const {
    const Tensor& features = context->input(0);
    const Tensor& rois = context->input(1);
    TF_RETURN_IF_ERROR(ValidateFeaturesAndRoisShapes(features, rois));
    TF_RETURN_IF_ERROR(ReadSpatialScale<T>(context->input(2), scale));
    TF_RETURN_IF_ERROR(CheckPsChannels(features.dim_size(3), group_size_, output_dim_));
    return ValidateRoiValues<T>(rois, features.dim_size(0));
  }

  int64_t group_size_ = 0;
  int64_t output_dim_ = 0;
};

template <typename T>
class PsRoiPoolOp : public PsRoiPoolBase {
 public:
  using PsRoiPoolBase::PsRoiPoolBase;

  void Compute(OpKernelContext* context) override {
    T scale;
    OP_REQUIRES_OK(context, ValidateInputs<T>(context, &scale));
    const Tensor& features = context->input(0);
    const Tensor& rois = context->input(1);
    const int64_t height = features.dim_size(1), width = features.dim_size(2),
                  channels = features.dim_size(3);
    const int64_t num_rois = rois.dim_size(0);
    const int64_t k = group_size_, dims = output_dim_;
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(0, TensorShape({num_rois, k, k, dims}), &output));
    if (output->NumElements() == 0) return;

    const T* feat = features.flat<T>().data();
    const T* roi_data = rois.flat<T>().data();
    T* out = output->flat<T>().data();
    const int64_t image_size = height * width * channels;
    // One unit = one output bin (all D channels); bins write disjoint outputs.
    auto work = [&](int64_t begin, int64_t end) {
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t r = unit / (k * k), i = (unit / k) % k, j = unit % k;
        const T* roi = roi_data + r * kRoiColumns;
        const PsBin bin = PsRoiBox<T>(roi, scale, k).Bin(i, j, height, width);
        T* o = out + unit * dims;
        std::fill_n(o, dims, T(0));
        if (bin.empty()) continue;
        // Channel d of this bin lives at offset d * k^2 + (i * k + j) of each cell.
        const T* image = feat + RoiBatchIndex(roi) * image_size + i * k + j;
        for (int64_t h = bin.h0; h < bin.h1; ++h) {
          for (int64_t w = bin.w0; w < bin.w1; ++w) {
            const T* cell = image + (h * width + w) * channels;
            for (int64_t d = 0; d < dims; ++d) o[d] += cell[d * k * k];
          }
        }
        const T area = static_cast<T>(bin.area());
        for (int64_t d = 0; d < dims; ++d) o[d] /= area;
      }
    };
    // Rough cost: a bin of a typical proposal spans a handful of cells, one add per channel.
    ParallelFor(context, num_rois * k * k, 10 * dims + 100, work);
  }
};

template <typename T>
class PsRoiPoolGradOp : public PsRoiPoolBase {
 public:
  using PsRoiPoolBase::PsRoiPoolBase;

  void Compute(OpKernelContext* context) override {
    T scale;
    OP_REQUIRES_OK(context, ValidateInputs<T>(context, &scale));
    const Tensor& features = context->input(0);
    const Tensor& rois = context->input(1);
    const Tensor& grad = context->input(3);
    const int64_t batch = features.dim_size(0), height = features.dim_size(1),
                  width = features.dim_size(2), channels = features.dim_size(3);
    const int64_t num_rois = rois.dim_size(0);
    const int64_t k = group_size_, dims = output_dim_;
    OP_REQUIRES_OK(context, ValidateGradShape(grad, num_rois, k, k, dims));

    Tensor* grad_features = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, features.shape(), &grad_features));
    if (grad_features->NumElements() == 0) return;

    const T* roi_data = rois.flat<T>().data();
    const T* g = grad.flat<T>().data();
    T* gin = grad_features->flat<T>().data();
    const RoisByImage groups = GroupRoisByImage(roi_data, num_rois, batch);
    const int64_t cells = height * width;
    const int64_t block = ItemsPerBlock(dims, batch, NumWorkerThreads(context), 1);
    const int64_t blocks = (dims + block - 1) / block;

    // One unit = (image n, block of output channels [d0, d1)): it owns input channels
    // [d0 * k^2, d1 * k^2) of image n exclusively, so writes never race, and each element sums
    // its contributions in RoI order: the result does not depend on the thread count.
    auto work = [&](int64_t begin, int64_t end) {
      std::vector<T> g_bin(block);
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t n = unit / blocks;
        const int64_t d0 = (unit % blocks) * block, len = std::min(dims, d0 + block) - d0;
        T* image = gin + n * cells * channels;
        for (int64_t pos = 0; pos < cells; ++pos) {
          std::fill_n(image + pos * channels + d0 * k * k, len * k * k, T(0));
        }
        for (int64_t r = groups.offset[n]; r < groups.offset[n + 1]; ++r) {
          const int64_t roi_index = groups.order[r];
          const PsRoiBox<T> box(roi_data + roi_index * kRoiColumns, scale, k);
          for (int64_t i = 0; i < k; ++i) {
            for (int64_t j = 0; j < k; ++j) {
              const PsBin bin = box.Bin(i, j, height, width);
              if (bin.empty()) continue;
              const T area = static_cast<T>(bin.area());
              const T* gb = g + ((roi_index * k + i) * k + j) * dims + d0;
              for (int64_t d = 0; d < len; ++d) g_bin[d] = gb[d] / area;
              T* base = image + d0 * k * k + i * k + j;
              for (int64_t h = bin.h0; h < bin.h1; ++h) {
                for (int64_t w = bin.w0; w < bin.w1; ++w) {
                  T* cell = base + (h * width + w) * channels;
                  for (int64_t d = 0; d < len; ++d) cell[d * k * k] += g_bin[d];
                }
              }
            }
          }
        }
      }
    };
    const int64_t rois_per_image = (num_rois + batch - 1) / batch;
    ParallelFor(context, batch * blocks,
                cells * block * k * k + rois_per_image * k * k * (10 * block + 100) + 100, work);
  }
};

#define RCNN_ZOO_REGISTER_PS_ROI_POOL(T)                                                   \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("RcnnZooPsRoiPool").Device(DEVICE_CPU).TypeConstraint<T>("T"), PsRoiPoolOp<T>); \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("RcnnZooPsRoiPoolGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),              \
      PsRoiPoolGradOp<T>);

RCNN_ZOO_REGISTER_PS_ROI_POOL(float);
RCNN_ZOO_REGISTER_PS_ROI_POOL(double);

#undef RCNN_ZOO_REGISTER_PS_ROI_POOL

}  // namespace
}  // namespace rcnn_zoo
