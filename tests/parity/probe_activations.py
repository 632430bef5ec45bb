"""Check that a synthetic checkpoint keeps a torchvision detector's activations O(1) and yields
dozens of varied detections (torch env only; a tuning aid, not used by CI).

    /tmp/torchvision-venv/bin/python tests/parity/probe_activations.py MODEL [photo.jpg ...]
"""

import os
import sys

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import photos  # noqa: E402
import synthetic_checkpoint as sc  # noqa: E402


def build(name, seed=sc.DEFAULT_SEED):
    model = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None)
    state = sc.make_state_dict(sc.load_layout(name), seed)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model.eval()


def rms(t):
    return float(t.float().pow(2).mean().sqrt())


def main():
    torch.set_num_threads(2)
    name = sys.argv[1]
    files = sys.argv[2:] or ["raccoon-11.jpg", "raccoon-147.jpg"]
    model = build(name)
    stats = []

    def bn_hook(mod_name):
        def hook(module, inputs, output):
            x = inputs[0]
            flat = x.transpose(0, 1).flatten(1)
            var = flat.var(1)
            ratio = (var / module.running_var).median()
            shift = ((flat.mean(1) - module.running_mean).abs() / module.running_var.sqrt()).median()
            stats.append((mod_name, float(ratio), rms(output), float(shift)))
        return hook

    def out_hook(mod_name):
        def hook(module, inputs, output):
            if isinstance(output, dict):
                for k, v in output.items():
                    stats.append((f"{mod_name}[{k}]", float("nan"), rms(v)))
            elif isinstance(output, (tuple, list)):
                for i, v in enumerate(output):
                    if isinstance(v, torch.Tensor):
                        stats.append((f"{mod_name}[{i}]", float("nan"), rms(v)))
                    elif isinstance(v, list):
                        stats.append((f"{mod_name}[{i}]", float("nan"), rms(torch.cat([t.flatten() for t in v]))))
            else:
                stats.append((mod_name, float("nan"), rms(output)))
                if output.dim() == 2:
                    m = output.mean(0, keepdim=True)
                    stats.append((mod_name + " |common|/|deviation|", float("nan"),
                                  float(m.norm() / (output - m).norm(dim=1).mean())))
        return hook

    for mod_name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.register_forward_hook(bn_hook(mod_name))
    for mod_name in ["backbone.body", "backbone.fpn", "rpn.head", "roi_heads.box_head", "roi_heads.box_predictor"]:
        model.get_submodule(mod_name).register_forward_hook(out_hook(mod_name))
    for f in files:
        stats.clear()
        arr = photos.load_rgb(os.path.join(photos.DEFAULT_ROOT, "images", f)) if f.endswith(".jpg") else None
        x = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
        with torch.no_grad():
            det = model([x])[0]
        print(f"== {name} {f} {tuple(arr.shape)}")
        ratios = [s[1] for s in stats if s[1] == s[1]]
        if ratios:
            print(f"  BN actual/running var ratio: median {np.median(ratios):.3f} min {min(ratios):.3f} max {max(ratios):.3f}")
            outs = [s[2] for s in stats if s[1] == s[1]]
            print(f"  BN output rms: median {np.median(outs):.3f} min {min(outs):.3f} max {max(outs):.3f}")
        for s in stats:
            if s[1] != s[1] or "-v" in sys.argv:
                print(f"  {s[0]:40s} ratio {s[1]:.3f} rms {s[2]:.3f}" + (f" |mean shift| {s[3]:.3f}" if len(s) > 3 else ""))
        labels = det["labels"].numpy()
        scores = det["scores"].numpy()
        print(f"  detections {len(labels)} distinct labels {len(set(labels.tolist()))} "
              f"scores {scores.min() if len(scores) else 0:.3f}..{scores.max() if len(scores) else 0:.3f}")
        b = det["boxes"].numpy()
        if len(b):
            wh = b[:, 2:] - b[:, :2]
            print(f"  box w/h median {np.median(wh, 0)} min {wh.min(0)} max {wh.max(0)}")


if __name__ == "__main__":
    main()
