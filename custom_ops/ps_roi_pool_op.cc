// Op registrations for position-sensitive RoI pooling (R-FCN's original PSROIPooling layer,
// channels-last).
//
// RcnnZooPsRoiPool(features [N, H, W, k*k*D], rois [K, 5], spatial_scale [])
//   -> output [K, k, k, D]
//   group_size k: bins per side; output_dim D: output channels. Output channel d of bin (i, j)
//   averages input channel (d * k + i) * k + j over the bin.
//
// RcnnZooPsRoiPoolGrad(features, rois, spatial_scale, grad [K, k, k, D]) -> d features
// `features` is only read for its shape.

#include "roi_common.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace rcnn_zoo {
namespace {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;

// Checks the shared inputs and that features has k*k*D channels (when known); returns K, k, D.
absl::Status PsRoiInputShapes(InferenceContext* c, DimensionHandle* num_rois,
                              int64_t* group_size, int64_t* output_dim) {
  DimensionHandle channels;
  TF_RETURN_IF_ERROR(RoiInputShapes(c, num_rois, &channels));
  TF_RETURN_IF_ERROR(ScalarInputShape(c, 2));
  TF_RETURN_IF_ERROR(c->GetAttr("group_size", group_size));
  TF_RETURN_IF_ERROR(c->GetAttr("output_dim", output_dim));
  if (c->ValueKnown(channels)) {
    TF_RETURN_IF_ERROR(CheckPsChannels(c->Value(channels), *group_size, *output_dim));
  }
  return absl::OkStatus();
}

absl::Status PsRoiPoolShape(InferenceContext* c) {
  DimensionHandle num_rois;
  int64_t group_size, output_dim;
  TF_RETURN_IF_ERROR(PsRoiInputShapes(c, &num_rois, &group_size, &output_dim));
  c->set_output(0, c->MakeShape({num_rois, group_size, group_size, output_dim}));
  return absl::OkStatus();
}

absl::Status PsRoiPoolGradShape(InferenceContext* c) {
  DimensionHandle num_rois;
  int64_t group_size, output_dim;
  TF_RETURN_IF_ERROR(PsRoiInputShapes(c, &num_rois, &group_size, &output_dim));
  return GradInputShape(c, 3, num_rois, group_size, group_size, output_dim);
}

}  // namespace

REGISTER_OP("RcnnZooPsRoiPool")
    .Input("features: T")
    .Input("rois: T")
    .Input("spatial_scale: T")
    .Output("output: T")
    .Attr("group_size: int >= 1")
    .Attr("output_dim: int >= 1")
    .Attr("T: {float, double}")
    .SetShapeFn(PsRoiPoolShape);

REGISTER_OP("RcnnZooPsRoiPoolGrad")
    .Input("features: T")
    .Input("rois: T")
    .Input("spatial_scale: T")
    .Input("grad: T")
    .Output("grad_features: T")
    .Attr("group_size: int >= 1")
    .Attr("output_dim: int >= 1")
    .Attr("T: {float, double}")
    .SetShapeFn(PsRoiPoolGradShape);

}  // namespace rcnn_zoo
