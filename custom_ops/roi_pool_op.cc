// Op registrations for RoI max pooling (Fast R-CNN / py-faster-rcnn semantics).
//
// RcnnZooRoiPool(features [N, H, W, C], rois [K, 5], spatial_scale [])
//   -> output [K, ph, pw, C], argmax [K, ph, pw, C] int32
// argmax holds the flat feature-map position h * W + w that produced each output value (the
// first maximum in row-major scan order, h then w), or -1 for an empty bin. It is returned so the
// gradient op can route gradients without recomputing the maxima.
//
// RcnnZooRoiPoolGrad(features, rois, spatial_scale, argmax, grad [K, ph, pw, C])
//   -> d features [N, H, W, C]
// `features` is only read for its shape; rois and spatial_scale give each bin's rows, which the
// kernel uses to shard the work (see RowBands). argmax must be the forward op's.

#include "roi_common.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace rcnn_zoo {
namespace {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;

absl::Status RoiPoolShape(InferenceContext* c) {
  DimensionHandle num_rois, channels;
  TF_RETURN_IF_ERROR(RoiInputShapes(c, &num_rois, &channels));
  TF_RETURN_IF_ERROR(ScalarInputShape(c, 2));
  int64_t pooled_height, pooled_width;
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_height", &pooled_height));
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_width", &pooled_width));
  auto out = c->MakeShape({num_rois, pooled_height, pooled_width, channels});
  c->set_output(0, out);
  c->set_output(1, out);
  return absl::OkStatus();
}

absl::Status RoiPoolGradShape(InferenceContext* c) {
  DimensionHandle num_rois, channels;
  TF_RETURN_IF_ERROR(RoiInputShapes(c, &num_rois, &channels));
  TF_RETURN_IF_ERROR(ScalarInputShape(c, 2));
  int64_t pooled_height, pooled_width;
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_height", &pooled_height));
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_width", &pooled_width));
  // argmax (input 3) and grad (input 4) both have the forward output's shape.
  TF_RETURN_IF_ERROR(GradInputShape(c, 3, num_rois, pooled_height, pooled_width, channels));
  return GradInputShape(c, 4, num_rois, pooled_height, pooled_width, channels);
}

}  // namespace

REGISTER_OP("RcnnZooRoiPool")
    .Input("features: T")
    .Input("rois: T")
    .Input("spatial_scale: T")
    .Output("output: T")
    .Output("argmax: int32")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("T: {float, double}")
    .SetShapeFn(RoiPoolShape);

REGISTER_OP("RcnnZooRoiPoolGrad")
    .Input("features: T")
    .Input("rois: T")
    .Input("spatial_scale: T")
    .Input("argmax: int32")
    .Input("grad: T")
    .Output("grad_features: T")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("T: {float, double}")
    .SetShapeFn(RoiPoolGradShape);

}  // namespace rcnn_zoo
