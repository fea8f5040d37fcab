"""Tests of the Panoptic-DeepLab post-processing on hand-made inputs with known answers."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from axial_deploy.models.postprocess import (
    OUTPUT_NAMES,
    PanopticConfig,
    PanopticPostProcessor,
    outputs_as_dict,
)

NUM_CLASSES = 19
ROAD, BUILDING = 0, 2  # stuff classes
PERSON, RIDER, CAR = 11, 12, 13  # thing classes
VOID = -1


def logits_for(class_map: torch.Tensor) -> torch.Tensor:
    """[1, K, H, W] logits whose argmax is ``class_map`` [H, W]."""
    one_hot = torch.nn.functional.one_hot(class_map, NUM_CLASSES).permute(2, 0, 1)
    return (5.0 * one_hot.float()).unsqueeze(0)


def heatmap_with(h: int, w: int, peaks: dict[tuple[int, int], float]) -> torch.Tensor:
    """[1, 1, H, W] heatmap that is 0 except for single-pixel peaks."""
    heat = torch.zeros(1, 1, h, w)
    for (y, x), score in peaks.items():
        heat[0, 0, y, x] = score
    return heat


def offsets_towards(h: int, w: int, targets: list[tuple[torch.Tensor, tuple[int, int]]]):
    """[1, 2, H, W] offsets: pixels in each mask point at that mask's (y, x) target."""
    rows = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w)
    offsets = torch.zeros(1, 2, h, w)
    for mask, (ty, tx) in targets:
        offsets[0, 0][mask] = (ty - rows)[mask]
        offsets[0, 1][mask] = (tx - cols)[mask]
    return offsets


def box(h: int, w: int, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    """Boolean [H, W] mask of rows[0]:rows[1], cols[0]:cols[1]."""
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


def processor(**overrides) -> PanopticPostProcessor:
    config = PanopticConfig(**{"top_k": 10, "stuff_area_limit": 50, **overrides})
    return PanopticPostProcessor(NUM_CLASSES, config).eval()


def two_instance_scene():
    """A person and a car on a road, plus a small building patch below the area limit."""
    h, w = 32, 40
    person = box(h, w, (2, 12), (3, 13))  # 100 px, center (6, 7)
    car = box(h, w, (16, 28), (20, 36))  # 192 px, center (21, 27)
    building = box(h, w, (28, 31), (2, 6))  # 12 px < stuff_area_limit
    class_map = torch.full((h, w), ROAD)
    class_map[person] = PERSON
    class_map[car] = CAR
    class_map[building] = BUILDING
    # The car peak is higher, so the car gets instance id 1 and the person id 2.
    heat = heatmap_with(h, w, {(21, 27): 0.9, (6, 7): 0.7})
    offsets = offsets_towards(h, w, [(person, (6, 7)), (car, (21, 27))])
    # Imperfect offsets still land nearest to their own center.
    noise = torch.rand(offsets.shape, generator=torch.Generator().manual_seed(0))
    offsets += 4.0 * noise - 2.0
    expected = torch.full((h, w), ROAD * 1000)
    expected[person] = PERSON * 1000 + 2
    expected[car] = CAR * 1000 + 1
    expected[building] = VOID
    return (logits_for(class_map), heat, offsets), expected, class_map


def test_two_instances_stuff_limit_and_centers() -> None:
    inputs, expected, class_map = two_instance_scene()
    panoptic, semantic, instance, centers = processor()(*inputs)

    assert panoptic.dtype == semantic.dtype == instance.dtype == torch.int64
    assert torch.equal(panoptic[0], expected)
    assert torch.equal(semantic[0], class_map)
    expected_instance = torch.zeros_like(class_map)
    expected_instance[class_map == CAR] = 1
    expected_instance[class_map == PERSON] = 2
    assert torch.equal(instance[0], expected_instance)
    assert centers.shape == (1, 10, 3)
    assert torch.allclose(centers[0, 0], torch.tensor([21.0, 27.0, 0.9]))
    assert torch.allclose(centers[0, 1], torch.tensor([6.0, 7.0, 0.7]))
    assert torch.equal(centers[0, 2:], torch.tensor([-1.0, -1.0, 0.0]).expand(8, 3))
    named = outputs_as_dict((panoptic, semantic, instance, centers))
    assert list(named) == ["panoptic", "semantic", "instance", "centers"]
    assert named["instance"] is instance


def test_large_stuff_kept_small_stuff_void() -> None:
    h, w = 10, 12
    class_map = torch.full((h, w), ROAD)  # 69 px, kept
    class_map[:, :5] = BUILDING  # 50 px: exactly the limit, kept
    class_map[0, 5] = 3  # 1 px of "wall": void
    panoptic, _, instance, _ = processor()(
        logits_for(class_map), torch.zeros(1, 1, h, w), torch.zeros(1, 2, h, w)
    )
    expected = torch.full((h, w), ROAD * 1000)
    expected[:, :5] = BUILDING * 1000
    expected[0, 5] = VOID
    assert torch.equal(panoptic[0], expected)
    assert not instance.any()


def test_offsets_not_position_decide_the_instance() -> None:
    # One person blob; each pixel's offsets point at a center chosen by a checkerboard,
    # whatever its position. Swapped dy/dx channels would misassign e.g. pixel (16, 16).
    h = w = 33
    class_map = torch.full((h, w), PERSON)
    rows = torch.arange(h).view(h, 1)
    cols = torch.arange(w).view(1, w)
    to_first = (rows + cols) % 2 == 0
    heat = heatmap_with(h, w, {(2, 30): 0.9, (30, 2): 0.8})
    offsets = offsets_towards(h, w, [(to_first, (2, 30)), (~to_first, (30, 2))])
    panoptic, _, instance, _ = processor()(logits_for(class_map), heat, offsets)
    assert torch.equal(instance[0], torch.where(to_first, 1, 2))
    assert torch.equal(panoptic[0], PERSON * 1000 + torch.where(to_first, 1, 2))


def test_nms_suppresses_neighbour_within_kernel_only() -> None:
    h, w = 32, 40
    peaks = {
        (10, 10): 0.9,
        (10, 16): 0.5,  # 6 px away: inside the 13x13 window of (10, 10), suppressed
        (17, 10): 0.3,  # 7 px away: outside every higher peak's window, kept
        (10, 30): 0.6,  # far away, kept
    }
    _, _, _, centers = processor(nms_kernel=13)(
        logits_for(torch.full((h, w), ROAD)), heatmap_with(h, w, peaks), torch.zeros(1, 2, h, w)
    )
    expected = torch.tensor([[10.0, 10.0, 0.9], [10.0, 30.0, 0.6], [17.0, 10.0, 0.3]])
    assert torch.allclose(centers[0, :3], expected)
    assert (centers[0, 3:, 2] == 0).all()

    # A 3x3 window no longer reaches the 0.5 peak's neighbour: it survives.
    _, _, _, centers = processor(nms_kernel=3)(
        logits_for(torch.full((h, w), ROAD)), heatmap_with(h, w, peaks), torch.zeros(1, 2, h, w)
    )
    assert (centers[0, :, 2] > 0).sum() == 4


def test_threshold_removes_weak_peaks() -> None:
    h, w = 32, 40
    peaks = {(5, 5): 0.2, (5, 30): 0.25, (25, 5): 0.3}  # 0.25 == threshold: not kept
    _, _, _, centers = processor(center_threshold=0.25)(
        logits_for(torch.full((h, w), ROAD)), heatmap_with(h, w, peaks), torch.zeros(1, 2, h, w)
    )
    assert torch.allclose(centers[0, 0], torch.tensor([25.0, 5.0, 0.3]))
    assert torch.equal(centers[0, 1:], torch.tensor([-1.0, -1.0, 0.0]).expand(9, 3))


def test_top_k_limits_number_of_centers() -> None:
    h, w = 32, 40
    peaks = {(5, 5): 0.5, (5, 30): 0.7, (25, 5): 0.6, (25, 30): 0.4}
    _, _, _, centers = processor(top_k=2)(
        logits_for(torch.full((h, w), ROAD)), heatmap_with(h, w, peaks), torch.zeros(1, 2, h, w)
    )
    assert torch.allclose(centers[0], torch.tensor([[5.0, 30.0, 0.7], [25.0, 5.0, 0.6]]))


@pytest.mark.parametrize(("majority", "minority"), [(PERSON, RIDER), (RIDER, PERSON)])
def test_majority_vote_picks_most_frequent_thing_class(majority: int, minority: int) -> None:
    h, w = 16, 16
    blob = box(h, w, (4, 8), (4, 8))  # 16 px instance
    class_map = torch.full((h, w), ROAD)
    class_map[blob] = majority
    class_map[4:6, 4:7] = minority  # 6 of the 16 pixels
    heat = heatmap_with(h, w, {(6, 6): 0.8})
    offsets = offsets_towards(h, w, [(blob, (6, 6))])
    panoptic, semantic, _, _ = processor(stuff_area_limit=0)(logits_for(class_map), heat, offsets)
    expected = torch.full((h, w), ROAD * 1000)
    expected[blob] = majority * 1000 + 1
    assert torch.equal(panoptic[0], expected)
    assert torch.equal(semantic[0], class_map)  # the raw argmax is not voted


def test_no_valid_center_makes_thing_pixels_void() -> None:
    inputs, expected, class_map = two_instance_scene()
    logits, _, offsets = inputs
    weak = torch.full_like(inputs[1], 0.05)  # everywhere below the 0.1 threshold
    panoptic, _, instance, centers = processor()(logits, weak, offsets)
    things = (class_map == PERSON) | (class_map == CAR)
    assert (panoptic[0][things] == VOID).all()
    assert torch.equal(panoptic[0][~things], expected[~things])
    assert not instance.any()
    assert (centers[..., 2] == 0).all() and (centers[..., :2] == -1).all()


def test_batch_of_two_is_processed_per_image() -> None:
    inputs_a, expected_a, _ = two_instance_scene()
    h, w = 32, 40
    car = box(h, w, (4, 14), (5, 25))
    class_map = torch.full((h, w), BUILDING)
    class_map[car] = CAR
    inputs_b = (
        logits_for(class_map),
        heatmap_with(h, w, {(9, 15): 0.6}),
        offsets_towards(h, w, [(car, (9, 15))]),
    )
    expected_b = torch.full((h, w), BUILDING * 1000)
    expected_b[car] = CAR * 1000 + 1

    post = processor()
    batch = [torch.cat([a, b]) for a, b in zip(inputs_a, inputs_b, strict=True)]
    panoptic, _, instance, centers = post(*batch)
    assert torch.equal(panoptic[0], expected_a)
    assert torch.equal(panoptic[1], expected_b)
    assert instance[1].max() == 1
    # Batched results equal running each image on its own.
    for i, outputs in enumerate([post(*inputs_a), post(*inputs_b)]):
        assert torch.equal(panoptic[i], outputs[0][0])
        assert torch.equal(instance[i], outputs[2][0])
        assert torch.equal(centers[i], outputs[3][0])


def test_image_smaller_than_top_k() -> None:
    class_map = torch.full((3, 4), PERSON)
    heat = heatmap_with(3, 4, {(1, 1): 0.9})
    offsets = offsets_towards(3, 4, [(class_map == PERSON, (1, 1))])
    panoptic, _, _, centers = processor(top_k=200, stuff_area_limit=0)(
        logits_for(class_map), heat, offsets
    )
    assert (panoptic == PERSON * 1000 + 1).all()
    assert centers.shape == (1, 200, 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nms_kernel": 4}, "odd"),
        ({"nms_kernel": 0}, "odd"),
        ({"nms_kernel": -3}, "odd"),
        ({"top_k": 0}, "top_k"),
        ({"center_threshold": 1.0}, "center_threshold"),
        ({"center_threshold": -0.1}, "center_threshold"),
        ({"top_k": 1000}, "label_divisor"),
        ({"label_divisor": 200}, "label_divisor"),
        ({"stuff_area_limit": -1}, "stuff_area_limit"),
        ({"void_label": 0}, "void_label"),
        ({"thing_ids": (11, 11)}, "duplicates"),
        ({"thing_ids": (-1,)}, "non-negative"),
        ({"thing_ids": ("car",)}, "integers"),
    ],
)
def test_config_validation(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PanopticConfig(**overrides)


def test_config_accepts_list_of_thing_ids() -> None:
    config = PanopticConfig(thing_ids=[3, np.int64(4)])
    assert config.thing_ids == (3, 4)
    hash(config)  # frozen and hashable


def test_processor_validation() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        PanopticPostProcessor(10)  # default Cityscapes thing ids go up to 18
    with pytest.raises(ValueError, match="num_classes"):
        PanopticPostProcessor(0, PanopticConfig(thing_ids=()))
    post = PanopticPostProcessor(NUM_CLASSES)
    with pytest.raises(ValueError, match="classes"):
        post(torch.zeros(1, 5, 8, 8), torch.zeros(1, 1, 8, 8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="offsets"):
        post(torch.zeros(1, 19, 8, 8), torch.zeros(1, 1, 8, 8), torch.zeros(1, 2, 8, 9))


def structured_inputs(seed: int, n: int, h: int, w: int) -> tuple[torch.Tensor, ...]:
    """Random scene: blocky semantics, Gaussian center peaks, offsets to the nearest peak."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, NUM_CLASSES, (n, (h + 7) // 8, (w + 7) // 8), generator=g)
    blocks = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :h, :w]
    blocks = torch.where(blocks % 3 == 0, PERSON + blocks % 8, blocks)  # more things
    logits = torch.randn(n, NUM_CLASSES, h, w, generator=g)
    logits += 4.0 * torch.nn.functional.one_hot(blocks, NUM_CLASSES).permute(0, 3, 1, 2)

    num_peaks = 6
    peak_y = torch.rand(n, num_peaks, 1, 1, generator=g) * (h - 1)
    peak_x = torch.rand(n, num_peaks, 1, 1, generator=g) * (w - 1)
    rows = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w)
    sq_dist = (rows - peak_y) ** 2 + (cols - peak_x) ** 2  # [N, P, H, W]
    heat = torch.exp(-sq_dist / (2 * 3.0**2)).amax(dim=1, keepdim=True)
    heat += 0.02 * torch.rand(heat.shape, generator=g)

    nearest = sq_dist.argmin(dim=1).view(n, h * w)
    target_y = peak_y.view(n, num_peaks).gather(1, nearest).view(n, 1, h, w)
    target_x = peak_x.view(n, num_peaks).gather(1, nearest).view(n, 1, h, w)
    offsets = torch.cat([target_y - rows, target_x - cols], dim=1)
    offsets += 1.5 * torch.randn(offsets.shape, generator=g)
    return logits, heat, offsets


# dynamo=False (the TorchScript exporter) is chosen on purpose; it warns that it is legacy.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_matches_pytorch_in_onnxruntime() -> None:
    post = PanopticPostProcessor(NUM_CLASSES, PanopticConfig(stuff_area_limit=100)).eval()
    example = structured_inputs(seed=0, n=2, h=40, w=56)
    buffer = io.BytesIO()
    input_names = ["semantic_logits", "center_heatmap", "offsets"]
    torch.onnx.export(
        post,
        example,
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=input_names,
        output_names=list(OUTPUT_NAMES),
        dynamic_axes={name: {0: "batch", 2: "height", 3: "width"} for name in input_names},
    )
    model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model)
    op_types = {node.op_type for node in model.graph.node}
    # No data-dependent shapes or Python decisions baked in as control flow.
    assert not op_types & {"NonZero", "Unique", "If", "Loop"}
    assert "ScatterElements" in op_types and "TopK" in op_types

    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    # The export example and a different batch size / image size (dynamic axes).
    for inputs in (example, structured_inputs(seed=1, n=3, h=33, w=47)):
        with torch.no_grad():
            expected = post(*inputs)
        feed = {name: x.numpy() for name, x in zip(input_names, inputs, strict=True)}
        got = session.run(list(OUTPUT_NAMES), feed)
        panoptic = expected[0].numpy()
        # The scene must exercise instances, stuff and void for the comparison to matter.
        assert (panoptic % 1000 > 0).sum() > 0 and (panoptic == VOID).any()
        assert len(np.unique(panoptic[panoptic >= 11000])) >= 2
        np.testing.assert_array_equal(got[0], panoptic)
        np.testing.assert_array_equal(got[1], expected[1].numpy())
        np.testing.assert_array_equal(got[2], expected[2].numpy())
        np.testing.assert_allclose(got[3], expected[3].numpy(), rtol=0, atol=1e-6)
