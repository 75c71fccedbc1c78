"""The config's schema: the dataclasses of :class:`Config` (one section per concern) and :class:`ConfigError`.

Loading, overrides and validation live in :mod:`rtmdet_keras.config`, which re-exports these names; the
checks of values against these annotations in :mod:`rtmdet_keras.config_parse`.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import yaml

from rtmdet_keras.files import atomic_write_text

# The presets ship inside the package (in a checkout rtmdet_keras/configs is a link to the top-level configs/), so
# a preset name resolves the same from a checkout, an editable install, a wheel or an sdist, from any folder.
CONFIG_DIR = Path(str(importlib.resources.files("rtmdet_keras").joinpath("configs")))


class ConfigError(ValueError):
    """A config file or override is wrong; the message says which key and what to do."""


@dataclass
class ModelConfig:
    """Network architecture. Channel counts are before ``widen_factor``, block counts before
    ``deepen_factor`` unless the name says otherwise."""

    backbone: str = "cspnext"  # "cspnext" (P5) or "mnv4" (MobileNetV4-conv-small)
    deepen_factor: float = 0.33
    widen_factor: float = 0.25
    act: str = "relu"  # "relu", "relu6" or "silu"
    channel_attention: bool = False
    expand_ratio: float = 0.5
    # SPP kernel sizes; realised as a chain of stride-1 max pools (5x5, or 3x3 with pool_chain_kernel=3).
    spp_kernel_sizes: List[int] = field(default_factory=lambda: [5, 9, 13])
    pool_chain_kernel: int = 5
    # Neck. in_channels are the backbone's C3, C4, C5 channels *after* widening.
    neck_in_channels: List[int] = field(default_factory=lambda: [64, 128, 256])
    neck_out_channels: int = 64
    neck_csp_blocks: int = 0  # blocks per neck CSPLayer, already scaled (SSCMA nano: round(1*0.33)=0)
    # Head.
    feat_channels: int = 64
    stacked_convs: int = 2
    share_conv: bool = False
    exp_on_reg: bool = False
    strides: List[int] = field(default_factory=lambda: [8, 16, 32])
    prior_prob: float = 0.01
    # Initial box of every prior: each of the four distances starts at reg_prior strides (the reg conv's
    # bias; its log with exp_on_reg). mmdetection starts at 0 (a point), which a short run from scratch
    # spends its first hundreds of steps growing out of; converted or loaded weights replace it.
    reg_prior: float = 0.0
    # BatchNorm as PyTorch: eps 1e-5, running-stat momentum 0.1 (0.9 in Keras terms).
    bn_eps: float = 1.0e-5
    bn_momentum: float = 0.9
    # Input contract: the model takes RGB 0-255 and normalises inside: x' = (x[order] - mean) / std,
    # with mean/std given in the channel order *after* reordering.
    channel_order: str = "rgb"  # "rgb" or "bgr"
    mean: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: List[float] = field(default_factory=lambda: [255.0, 255.0, 255.0])


@dataclass
class AssignerConfig:
    """Dynamic soft label assignment (RTMDet)."""

    topk: int = 13
    iou_weight: float = 3.0
    soft_center_radius: float = 3.0
    # "gt_class": SSCMA/mmyolo (cost of the GT class logit only); "all_classes": mmdetection.
    class_cost: str = "all_classes"


@dataclass
class LossConfig:
    cls_weight: float = 1.0
    qfl_beta: float = 2.0
    box_weight: float = 2.0


@dataclass
class AugmentConfig:
    """Training augmentation. Stage 1 runs for all but the last ``stage2_num_epochs`` epochs."""

    cache_images: bool = True
    hsv_gains: List[float] = field(default_factory=lambda: [5.0, 30.0, 30.0])  # h, s, v in OpenCV units
    mosaic: bool = True
    mosaic_prob: float = 1.0
    pad_val: int = 114
    # Keep-ratio resize to ratio x (scale_factor x imgsz); stage 1 uses a 2x canvas.
    resize_ratio_range: List[float] = field(default_factory=lambda: [0.5, 2.0])
    stage1_scale_factor: float = 2.0
    stage2_ratio_range: List[float] = field(default_factory=lambda: [0.5, 2.0])
    stage2_scale_factor: float = 1.0
    flip_prob: float = 0.5
    mixup: bool = False
    mixup_prob: float = 0.5
    min_box_size: float = 1.0  # boxes narrower or shorter than this (pixels) after cropping are dropped
    # mmdetection's RandomCrop(allow_negative_crop=False): a crop that keeps none of its image's boxes is
    # drawn again (up to negative_crop_retries times, then kept) instead of training on an empty sample.
    allow_negative_crop: bool = False
    negative_crop_retries: int = 10


@dataclass
class TestConfig:
    """Decode + NMS, shared by evaluation, export checks and prediction."""

    score_thr: float = 0.001
    nms_pre: int = 30000
    iou_thr: float = 0.65
    max_per_img: int = 300


@dataclass
class ExportConfig:
    calib_images: int = 200
    int8_input_type: str = "int8"  # "int8" or "uint8"


@dataclass
class QATConfig:
    """Quantization-aware fine-tuning recipe (SSCMA nano_relu_q)."""

    epochs: int = 5
    lr: float = 2.0e-5
    warmup_epochs: int = 1
    warmup_power: float = 2.0  # quadratic warm-up
    constant_epochs: int = 2  # lr held constant for the last epochs
    freeze_observer_ratio: float = 1.0 / 3.0
    freeze_bn_ratio: float = 2.0 / 3.0
    stage: int = 2  # data pipeline stage used for QAT


@dataclass
class Config:
    """The whole run. Paths are relative to ``data_root`` where the name says so."""

    preset: str = "nano"
    # --- data (SSCMA command-line names) ---
    data_root: str = "datasets/demo"
    dataset_format: str = "auto"  # "coco", "yolo" or "auto" (detect from the files)
    train_ann_file: str = "train/_annotations.coco.json"
    val_ann_file: str = "valid/_annotations.coco.json"
    train_img_prefix: str = "train/"
    val_img_prefix: str = "valid/"
    num_classes: int = 2
    filter_empty_gt: bool = True  # leave training images without boxes out (mmdetection's filter_cfg)
    class_names: Optional[List[str]] = None  # filled from the data set; checked against num_classes
    imgsz: List[int] = field(default_factory=lambda: [192, 192])  # height, width in pixels
    # --- training ---
    max_epochs: int = 300
    batch_size: int = 32
    lr: float = 0.004  # from scratch, at base_batch_size; scaled linearly with batch_size
    # Used instead of lr when weights are loaded (load_from or backbone_weights); null: lr either way.
    finetune_lr: Optional[float] = None
    base_batch_size: int = 256
    weight_decay: float = 0.05
    warmup_iters: int = 1000
    warmup_ratio: float = 1.0e-5
    min_lr_ratio: float = 0.05
    stage2_num_epochs: int = 20
    val_interval: int = 10
    # Early stopping: stop once this many epochs have passed since the best COCO bbox_mAP (checked at each
    # evaluation, across both stages); 0 never stops early.
    patience: int = 0
    ema_momentum: float = 0.0002
    ema_gamma: float = 2000.0
    save_interval: int = 1
    max_keep_ckpts: int = 3
    seed: int = 0
    # Threads of the training pipeline (tf.data's private pool; SSCMA's dataloader workers). 0: TensorFlow's
    # shared pool, sized to the machine, which the training step's own threads then compete with.
    workers: int = 2
    work_dir: Optional[str] = None  # default work_dirs/<config name>
    load_from: Optional[str] = None  # converted weights or mmdetection .pth for the whole detector
    backbone_weights: Optional[str] = None  # converted weights or .pth for the backbone only
    # --- sections ---
    model: ModelConfig = field(default_factory=ModelConfig)
    assigner: AssignerConfig = field(default_factory=AssignerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    test: TestConfig = field(default_factory=TestConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    qat: QATConfig = field(default_factory=QATConfig)

    # Name of the config file the run came from (without .yaml); not a setting.
    name: str = "nano"

    @property
    def input_shape(self):
        """(height, width, 3)."""
        return (int(self.imgsz[0]), int(self.imgsz[1]), 3)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def save(self, path) -> None:
        """Write the resolved config as YAML (atomically)."""
        atomic_write_text(path, self.to_yaml())

