"""Axial-ResNet classification nets (axial26s, axial50s, axial50m, axial50l).

Module tree and state_dict keys match the reference implementation (csrhddlam/axial-deeplab,
`lib/models/axialnet.py`), so its checkpoints load unchanged and give the same logits. Beyond the
reference, the nets run at input sizes other than 224: attention layers clamp relative offsets that
their tables (sized for 224) do not cover. The same blocks, with a local span and an Inception
stem, form the backbone of Axial-DeepLab (`axial_deeplab.py`).
"""

from __future__ import annotations

from torch import Tensor, nn

from .axial_attention import GLOBAL_SPAN, AxialAttention
from .registry import register_model


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class AxialBlock(nn.Module):
    """Bottleneck block whose 3x3 conv is replaced by height- then width-axis attention."""

    expansion = 2

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 8,
        kernel_size: int = 56,
        span: int = GLOBAL_SPAN,
        pool: str = "reference",
        shared_tables: bool = True,
    ) -> None:
        super().__init__()
        width = planes
        self.conv_down = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        # "hight" is the reference's spelling; checkpoints carry it in their keys.
        self.hight_block = AxialAttention(
            width,
            width,
            groups=groups,
            kernel_size=kernel_size,
            span=span,
            shared_tables=shared_tables,
        )
        self.width_block = AxialAttention(
            width,
            width,
            groups=groups,
            kernel_size=kernel_size,
            stride=stride,
            width=True,
            span=span,
            pool=pool,
            shared_tables=shared_tables,
        )
        self.conv_up = conv1x1(width, planes * self.expansion)
        self.bn2 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv_down(x)))
        out = self.relu(self.width_block(self.hight_block(out)))
        out = self.bn2(self.conv_up(out))
        return self.relu(out + identity)


def make_axial_stage(
    inplanes: int,
    planes: int,
    blocks: int,
    *,
    stride: int,
    groups: int,
    kernel_size: int,
    span: int = GLOBAL_SPAN,
    pool: str = "reference",
    shared_tables: bool = True,
) -> nn.Sequential:
    """One stage of AxialBlocks; the first one strides (and projects the identity if needed).

    `kernel_size` is the line length the first block's global tables are sized for; blocks after
    a strided first block see lines half as long, as in the reference.
    """
    out_planes = planes * AxialBlock.expansion
    downsample = None
    if stride != 1 or inplanes != out_planes:
        downsample = nn.Sequential(
            conv1x1(inplanes, out_planes, stride), nn.BatchNorm2d(out_planes)
        )
    attention = {"span": span, "shared_tables": shared_tables}
    layers = [
        AxialBlock(
            inplanes, planes, stride, downsample, groups, kernel_size, pool=pool, **attention
        )
    ]
    if stride != 1:
        kernel_size //= 2
    layers += [
        AxialBlock(out_planes, planes, groups=groups, kernel_size=kernel_size, **attention)
        for _ in range(1, blocks)
    ]
    return nn.Sequential(*layers)


class AxialAttentionNet(nn.Module):
    """Axial-ResNet for classification: ResNet stem, four stages of AxialBlocks, pooled FC."""

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        num_classes: int = 1000,
        groups: int = 8,
        s: float = 0.5,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        self.width_multiplier = s
        stem = int(64 * s)
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        # Line lengths at 224 input: 56 (stride 4), 28, 14, 7.
        stages = [
            (int(128 * s), 1, 56),
            (int(256 * s), 2, 56),
            (int(512 * s), 2, 28),
            (int(1024 * s), 2, 14),
        ]
        inplanes = stem
        for index, ((planes, stride, kernel), blocks) in enumerate(
            zip(stages, layers, strict=True), start=1
        ):
            stage = make_axial_stage(
                inplanes, planes, blocks, stride=stride, groups=groups, kernel_size=kernel
            )
            setattr(self, f"layer{index}", stage)
            inplanes = planes * AxialBlock.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)
        init_weights(self, zero_init_residual)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def init_weights(model: nn.Module, zero_init_residual: bool) -> None:
    """He init for convs (attention projections keep their own init), unit BatchNorms, and
    optionally a zero last BatchNorm per residual branch so each block starts as identity."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if zero_init_residual:
        for module in model.modules():
            if isinstance(module, AxialBlock):
                nn.init.zeros_(module.bn2.weight)


@register_model(task="classification", input_shape=(1, 3, 224, 224))
def axial26s(num_classes: int = 1000, **kwargs) -> AxialAttentionNet:
    return AxialAttentionNet((1, 2, 4, 1), num_classes=num_classes, s=0.5, **kwargs)


@register_model(task="classification", input_shape=(1, 3, 224, 224))
def axial50s(num_classes: int = 1000, **kwargs) -> AxialAttentionNet:
    return AxialAttentionNet((3, 4, 6, 3), num_classes=num_classes, s=0.5, **kwargs)


@register_model(task="classification", input_shape=(1, 3, 224, 224))
def axial50m(num_classes: int = 1000, **kwargs) -> AxialAttentionNet:
    return AxialAttentionNet((3, 4, 6, 3), num_classes=num_classes, s=0.75, **kwargs)


@register_model(task="classification", input_shape=(1, 3, 224, 224))
def axial50l(num_classes: int = 1000, **kwargs) -> AxialAttentionNet:
    return AxialAttentionNet((3, 4, 6, 3), num_classes=num_classes, s=1.0, **kwargs)


@register_model(task="classification", input_shape=(1, 3, 64, 64))
def axial26_tiny(num_classes: int = 5, **kwargs) -> AxialAttentionNet:
    """A small Axial-ResNet (width 0.25, one block per stage) for the synthetic shape
    classification dataset (64 x 64 images): trains on a CPU in minutes."""
    return AxialAttentionNet((1, 1, 1, 1), num_classes=num_classes, s=0.25, **kwargs)
