"""Panoptic Axial-DeepLab-S/M/L/XL (Wang et al. ECCV 2020, Sec. 4 and Table 6).

Backbone: Inception-style stem of three 3x3 convs (stride 2) and a max-pool, then four stages of
axial-attention blocks (Axial-ResNet-50 depths [3, 4, 6, 3]) with local span 65 from stride 4,
output stride 16 (the last stage keeps stride 16), no ASPP. Width multipliers 0.5 / 0.75 / 1 / 2.
Each attention head has its own relative tables (paper Eq. 4; the classification nets share one
table across heads, as the reference PyTorch code does): with them the parameter counts land
within 1.3% of the paper's Table 6.
Heads: the Panoptic-DeepLab dual decoder (semantic 256 ch, instance 128 ch) fusing the stride-8 and
stride-4 features, a semantic head, a 1-channel center heatmap and 2-channel offsets, all upsampled
to the input size. Odd input sizes (1025 x 2049) map to 513, 257, 129, 65 as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .axialnet import AxialBlock, init_weights, make_axial_stage
from .registry import register_model

SPAN = 65  # the paper's local span for segmentation
# The heads predict offsets in stride-4 pixels; x4 turns them into input pixels (exact with
# align_corners upsampling for 4n + 1 sizes such as 1025 x 2049).
DECODER_STRIDE = 4


def conv_bn_relu(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def separable_conv(in_ch: int, out_ch: int, kernel: int = 5) -> nn.Sequential:
    """Depthwise kernel x kernel conv + pointwise 1x1 conv, each with BatchNorm and ReLU."""
    return nn.Sequential(
        conv_bn_relu(in_ch, in_ch, kernel, groups=in_ch), conv_bn_relu(in_ch, out_ch, 1)
    )


def resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    # align_corners=True maps 65 -> 129 -> 257 -> 1025 grid points exactly onto each other.
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class InceptionStem(nn.Module):
    """Three 3x3 convs (the first strided) and a 3x3 max-pool: stride 4."""

    def __init__(self, channels: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(3, channels[0], 3, stride=2)
        self.conv2 = conv_bn_relu(channels[0], channels[1], 3)
        self.conv3 = conv_bn_relu(channels[1], channels[2], 3)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool(self.conv3(self.conv2(self.conv1(x))))


class AxialDeepLabBackbone(nn.Module):
    """Axial-ResNet with Inception stem and local span; returns stride 4, 8 and 16 features."""

    def __init__(self, s: float, layers=(3, 4, 6, 3), groups: int = 8, span: int = SPAN) -> None:
        super().__init__()
        self.stem = InceptionStem((int(64 * s), int(64 * s), int(128 * s)))
        inplanes = int(128 * s)
        strides = (1, 2, 2, 1)  # output stride 16: the last stage is not strided
        self.channels: list[int] = []
        for index, (blocks, stride) in enumerate(zip(layers, strides, strict=True), start=1):
            planes = int(128 * s) * 2 ** (index - 1)
            stage = make_axial_stage(
                inplanes,
                planes,
                blocks,
                stride=stride,
                groups=groups,
                kernel_size=span,
                span=span,
                pool="centered",
                shared_tables=False,
            )
            setattr(self, f"layer{index}", stage)
            inplanes = planes * AxialBlock.expansion
            self.channels.append(inplanes)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.stem(x)
        s4 = self.layer1(x)
        s8 = self.layer2(s4)
        s16 = self.layer4(self.layer3(s8))
        return {"s4": s4, "s8": s8, "s16": s16}


class PanopticDecoder(nn.Module):
    """One branch of the Panoptic-DeepLab dual decoder.

    The stride-16 features are projected to `channels` (Axial-DeepLab drops ASPP), upsampled and
    fused with the projected stride-8 and then stride-4 features by 5x5 separable convs.
    """

    def __init__(
        self, in_channels: dict[str, int], channels: int, skip_channels: tuple[int, int]
    ) -> None:
        super().__init__()
        self.project_s16 = conv_bn_relu(in_channels["s16"], channels, 1)
        self.project_s8 = conv_bn_relu(in_channels["s8"], skip_channels[0], 1)
        self.fuse_s8 = separable_conv(channels + skip_channels[0], channels)
        self.project_s4 = conv_bn_relu(in_channels["s4"], skip_channels[1], 1)
        self.fuse_s4 = separable_conv(channels + skip_channels[1], channels)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        x = self.project_s16(features["s16"])
        skip = self.project_s8(features["s8"])
        x = self.fuse_s8(torch.cat([resize(x, skip.shape[-2:]), skip], dim=1))
        skip = self.project_s4(features["s4"])
        return self.fuse_s4(torch.cat([resize(x, skip.shape[-2:]), skip], dim=1))


class PredictionHead(nn.Module):
    """5x5 separable conv then a 1x1 conv (with bias) to the outputs."""

    def __init__(self, in_ch: int, head_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = separable_conv(in_ch, head_ch)
        self.predict = nn.Conv2d(head_ch, out_ch, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.predict(self.conv(x))


@dataclass(frozen=True)
class AxialDeepLabConfig:
    width_multiplier: float
    num_classes: int = 19
    semantic_channels: int = 256
    instance_channels: int = 128
    semantic_head_channels: int = 256
    instance_head_channels: int = 32
    span: int = SPAN
    # Blocks per stage and attention heads: the paper's Axial-ResNet-50 depths and 8 heads;
    # the tiny zoo variant trained on synthetic data uses fewer of both.
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    groups: int = 8


class AxialDeepLab(nn.Module):
    """Panoptic Axial-DeepLab. forward(images [N, 3, H, W]) returns a dict of
    semantic [N, K, H, W] logits, center [N, 1, H, W] heatmap and offset [N, 2, H, W]
    (dy, dx in input pixels from each pixel to its instance center)."""

    def __init__(self, config: AxialDeepLabConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = AxialDeepLabBackbone(
            config.width_multiplier, layers=config.layers, groups=config.groups, span=config.span
        )
        c4, c8, c16 = (
            self.backbone.channels[0],
            self.backbone.channels[1],
            self.backbone.channels[3],
        )
        in_channels = {"s4": c4, "s8": c8, "s16": c16}
        self.semantic_decoder = PanopticDecoder(in_channels, config.semantic_channels, (64, 32))
        self.instance_decoder = PanopticDecoder(in_channels, config.instance_channels, (32, 16))
        self.semantic_head = PredictionHead(
            config.semantic_channels, config.semantic_head_channels, config.num_classes
        )
        self.center_head = PredictionHead(
            config.instance_channels, config.instance_head_channels, 1
        )
        self.offset_head = PredictionHead(
            config.instance_channels, config.instance_head_channels, 2
        )
        init_weights(self, zero_init_residual=True)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        size = images.shape[-2:]
        features = self.backbone(images)
        semantic = self.semantic_head(self.semantic_decoder(features))
        instance = self.instance_decoder(features)
        center = self.center_head(instance)
        offset = self.offset_head(instance)
        return {
            "semantic": resize(semantic, size),
            "center": resize(center, size),
            "offset": resize(offset, size) * DECODER_STRIDE,
        }


@register_model(task="panoptic", input_shape=(1, 3, 1025, 2049))
def axial_deeplab_s(num_classes: int = 19, **kwargs) -> AxialDeepLab:
    return AxialDeepLab(AxialDeepLabConfig(0.5, num_classes, **kwargs))


@register_model(task="panoptic", input_shape=(1, 3, 1025, 2049))
def axial_deeplab_m(num_classes: int = 19, **kwargs) -> AxialDeepLab:
    return AxialDeepLab(AxialDeepLabConfig(0.75, num_classes, **kwargs))


@register_model(task="panoptic", input_shape=(1, 3, 1025, 2049))
def axial_deeplab_l(num_classes: int = 19, **kwargs) -> AxialDeepLab:
    return AxialDeepLab(AxialDeepLabConfig(1.0, num_classes, **kwargs))


@register_model(task="panoptic", input_shape=(1, 3, 1025, 2049))
def axial_deeplab_xl(num_classes: int = 19, **kwargs) -> AxialDeepLab:
    return AxialDeepLab(AxialDeepLabConfig(2.0, num_classes, **kwargs))


@register_model(task="panoptic", input_shape=(1, 3, 129, 129))
def axial_deeplab_tiny(num_classes: int = 7, **kwargs) -> AxialDeepLab:
    """A small Axial-DeepLab with the full architecture (Inception stem, axial-attention
    stages with local span 17, output stride 16, dual decoder, semantic / center / offset
    heads) at width 0.25, one block per stage, 4 heads and narrow decoders: trains on a CPU in
    minutes on the synthetic dataset (`axial_deploy.datasets.synthetic`, 7 classes, 129 x 129)."""
    settings = {
        "semantic_channels": 64,
        "instance_channels": 32,
        "semantic_head_channels": 64,
        "instance_head_channels": 32,
        "span": 17,
        "layers": (1, 1, 1, 1),
        "groups": 4,
    }
    settings.update(kwargs)
    return AxialDeepLab(AxialDeepLabConfig(0.25, num_classes, **settings))
