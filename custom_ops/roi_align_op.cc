// Op registrations for RoIAlign (Mask R-CNN / detectron2 ROIAlign semantics, channels-last).
//
// RcnnZooRoiAlign(features [N, H, W, C], rois [K, 5], spatial_scale [])
//   -> output [K, ph, pw, C]
//   sampling_ratio: samples per bin along each axis; <= 0 means adaptive, ceil(roi_size / pooled
//   size) per axis. aligned: shift the RoI by -0.5 cell (detectron2 `aligned=True`).
//
// RcnnZooRoiAlignGrad(features, rois, spatial_scale, grad [K, ph, pw, C]) -> d features
// `features` is only read for its shape.

#include "roi_common.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace rcnn_zoo {
namespace {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;

absl::Status RoiAlignShape(InferenceContext* c) {
  DimensionHandle num_rois, channels;
  TF_RETURN_IF_ERROR(RoiInputShapes(c, &num_rois, &channels));
  TF_RETURN_IF_ERROR(ScalarInputShape(c, 2));
  int64_t pooled_height, pooled_width;
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_height", &pooled_height));
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_width", &pooled_width));
  c->set_output(0, c->MakeShape({num_rois, pooled_height, pooled_width, channels}));
  return absl::OkStatus();
}

absl::Status RoiAlignGradShape(InferenceContext* c) {
  DimensionHandle num_rois, channels;
  TF_RETURN_IF_ERROR(RoiInputShapes(c, &num_rois, &channels));
  TF_RETURN_IF_ERROR(ScalarInputShape(c, 2));
  int64_t pooled_height, pooled_width;
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_height", &pooled_height));
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_width", &pooled_width));
  return GradInputShape(c, 3, num_rois, pooled_height, pooled_width, channels);
}

}  // namespace

REGISTER_OP("RcnnZooRoiAlign")
    .Input("features: T")
    .Input("rois: T")
    .Input("spatial_scale: T")
    .Output("output: T")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("sampling_ratio: int = -1")
    .Attr("aligned: bool = false")
    .Attr("T: {float, double}")
    .SetShapeFn(RoiAlignShape);

REGISTER_OP("RcnnZooRoiAlignGrad")
    .Input("features: T")
    .Input("rois: T")
    .Input("spatial_scale: T")
    .Input("grad: T")
    .Output("grad_features: T")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("sampling_ratio: int = -1")
    .Attr("aligned: bool = false")
    .Attr("T: {float, double}")
    .SetShapeFn(RoiAlignGradShape);

}  // namespace rcnn_zoo
