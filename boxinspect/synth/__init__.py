"""Synthetic data: cardboard boxes on a conveyor belt, seen from above.

One renderer makes both the training images and the conveyor video, so a model trained on the images
sees the same thing in the video's region of interest (ROI):

* ``make_dataset`` renders the ROI square of a virtual 640x360 frame with one box at a jittered position
  and rotation, resized to ``size``: ``out/ok/*.jpg``, ``out/defective/*.jpg`` and ``out/manifest.json``.
* ``make_video`` renders boxes riding a belt left to right at constant speed through the same ROI, one box
  in the ROI at a time with empty belt between them, and writes the ground truth beside the video.

Everything is domain-randomised (box size, pose, cardboard colour, tape, printed marks and shipping
labels, lighting gradient, white balance, blur, sensor noise, belt texture) and the defects are the ones
a real line sees: ``dent`` (crushed corner or dented top), ``tear`` (torn or punctured panel), ``open_flap``,
``water_stain``, ``missing_tape`` and ``loose_tape``. ``difficulty="easy"`` makes them large and
high-contrast; ``"hard"`` makes them smaller and subtler and adds clutter. OK boxes never carry a defect.

Only numpy and OpenCV are used (this module is part of the edge install). All randomness comes from
``numpy.random.Generator`` objects seeded from ``seed``, so the same seed gives identical output.

The package is split along the renderer's stages: ``layout`` (frame geometry and constants), ``_draw``
(drawing helpers), ``boxes``, ``defects``, ``sprite``, ``scene``, ``dataset``, ``video``, ``sheet`` (contact
sheets), ``line`` (line scenes: wide frames, two views per part) and ``cli``. Everything public is re-exported here.
"""

from __future__ import annotations

from boxinspect.synth.boxes import CARDBOARD, INKS, TAPES, WORDS, Sprite, rng_uniform
from boxinspect.synth.cli import EXAMPLES, HELP, register
from boxinspect.synth.dataset import child_rng, make_dataset, render_sample
from boxinspect.synth.layout import (
    BASE_ROI,
    BELT_SPEED,
    CLASSES,
    DATASET_FRAME,
    DEFECTS,
    DIFFICULTIES,
    LEAD_FRAMES,
    MAX_EXT_X,
    MAX_EXT_Y,
    MIN_FULL_FRAMES_15FPS,
    TAIL_FRAMES,
    Layout,
    layout_for,
)
from boxinspect.synth.line import (
    AREA_RANGE,
    LINE_FRAME,
    VIEWS,
    line_sheet,
    make_line_dataset,
    part_name,
    render_line_part,
)
from boxinspect.synth.scene import BELTS, Placed, Scene, SceneParams, sample_scene
from boxinspect.synth.sheet import contact_sheet, dataset_sheet, video_sheet
from boxinspect.synth.sprite import draw_box, make_box, render_box
from boxinspect.synth.video import VideoPlan, make_video, plan_video, video_frames

__all__ = [
    "AREA_RANGE",
    "LINE_FRAME",
    "VIEWS",
    "line_sheet",
    "make_line_dataset",
    "part_name",
    "render_line_part",
    "BASE_ROI",
    "BELTS",
    "BELT_SPEED",
    "CARDBOARD",
    "CLASSES",
    "DATASET_FRAME",
    "DEFECTS",
    "DIFFICULTIES",
    "EXAMPLES",
    "HELP",
    "INKS",
    "LEAD_FRAMES",
    "Layout",
    "MAX_EXT_X",
    "MAX_EXT_Y",
    "MIN_FULL_FRAMES_15FPS",
    "Placed",
    "Scene",
    "SceneParams",
    "Sprite",
    "TAIL_FRAMES",
    "TAPES",
    "VideoPlan",
    "WORDS",
    "child_rng",
    "draw_box",
    "contact_sheet",
    "dataset_sheet",
    "layout_for",
    "make_box",
    "make_dataset",
    "make_video",
    "plan_video",
    "register",
    "render_box",
    "render_sample",
    "rng_uniform",
    "sample_scene",
    "video_frames",
    "video_sheet",
]
