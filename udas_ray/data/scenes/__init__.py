"""The embedded sim->real benchmark suite: procedural 2-D street scenes in several domains, paired.

One scene grammar (a pinhole camera over a ground plane: horizon, a road in
perspective with lanes, sidewalks, terrain strips, building facades with windows,
walls, fences, hedges, poles carrying signs and traffic lights, trees, bushes,
persons, riders on bicycles and motorcycles, parked and moving cars, trucks,
buses, an occasional tram) is rendered in domains (:data:`DOMAINS`); the original two:

* ``source`` -- "synthetic", a game engine: plausible per-class colour families
  (dark blue-grey asphalt, beige/brick/grey/cream facades, bright green foliage, a
  blue skybox with clear, hazy and overcast weather, cars in saturated and neutral
  paints), flat cel shading (two tones per facade), crisp edges, vivid colour
  grading, no blur and no noise; plus domain-randomization knobs (``jitter``,
  ``textures``, ``distractors``, ``lighting``; see :data:`SOURCE_KNOBS`).
* ``target`` -- "real-like": a fixed, different appearance (muted real-world
  colours: grey/white/black cars, warm light asphalt, olive vegetation, hazy sky,
  concrete walls, buses and trams in muted liveries), textures, sun gradient, aerial
  haze, soft shadows under objects, slight blur, sensor noise, an ego-vehicle hood,
  and a shifted layout distribution (higher horizon, longer focal length, narrower
  roads, many more parked cars and pedestrians, more trees).

The suite's other domains change one thing each (:mod:`.domains`): ``source_toon`` is another
engine (pastel toon shading, ink outlines); ``target_material`` the camera over other surfaces;
``target_weather`` the camera at dusk, at night, in fog or rain; ``target_geometry`` the camera
on a high, wide-angle mount over wide roads with other class frequencies. :data:`PAIRS` pairs
them: ``street`` (source -> target, the original), ``material``, ``sensor``, ``geometry`` and
``engine``; :data:`PAIR_GAPS` says what each tests.

As in Cityscapes' polygons, a bicycle's label covers its whole wheels, not just the rims.

Every pixel's label is the Cityscapes labelId of what is drawn there (the same
geometry is drawn on the RGB image and on an 'L' label image); distractors and the
ego hood are labelId 0 ("unlabeled"). Image ``i`` of a split is a pure function of
``(seed, domain, split, i)``.

Sizes are ``(height, width)``. Files are written in the real dataset layouts:
GTA5 (``images/00001.png`` + ``labels/00001.png``) for the source and Cityscapes
(``leftImg8bit/{split}/{city}/..._leftImg8bit.png`` + ``gtFine/.../..._gtFine_labelIds.png``)
for the target.

The package, in the order a scene is made:

* :mod:`.domains` -- the domains and pairs; palettes, layout distributions, :data:`SOURCE_KNOBS`, cities;
* :mod:`.labels` -- the labelIds drawn;
* :mod:`.canvas` -- the shared state: random draws, colours, image+label drawing primitives;
* :mod:`.layout` -- the camera and the plan of the street (what stands where);
* :mod:`.street`, :mod:`.vehicles`, :mod:`.objects` -- drawing the planned things;
* :mod:`.looks` -- the per-domain finishing (game, camera, noise, blur), with :mod:`.toon`,
  :mod:`.materials` and :mod:`.weather` for the suite's other looks;
* :mod:`.scene` -- :func:`render_scene`: one scene from start to finish;
* :mod:`.files` -- writing the GTA5 / Cityscapes layouts atomically; :mod:`.cli` -- the command line.
"""

from udas_ray.classes import CLASS_NAMES, NUM_CLASSES
from udas_ray.data.scenes.cli import class_frequencies, contact_sheet, main
from udas_ray.data.scenes.domains import DOMAINS, PAIR_GAPS, PAIRS, SOURCE_KNOBS, SPLITS, TARGET_CITIES, Domain
from udas_ray.data.scenes.files import (DEFAULT_NUM_SOURCE, DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, DEFAULT_SOURCE_SIZE,
                                        DEFAULT_TARGET_SIZE, FORMAT_VERSION, target_name, write_source, write_target)
from udas_ray.data.scenes.labels import (BIKE, BUILDING, BUS, CAR, FENCE, LIGHT, MOTO, PERSON, POLE, RIDER, ROAD,
                                         SIDEWALK, SIGN, SKY, TERRAIN, TRAIN, TRUCK, VEG, VOID, WALL)
from udas_ray.data.scenes.scene import Scene as _Scene  # (tests draw single objects on one)
from udas_ray.data.scenes.scene import render_scene

__all__ = [
    "BIKE", "BUILDING", "BUS", "CAR", "CLASS_NAMES", "Domain", "PAIRS", "PAIR_GAPS", "DEFAULT_NUM_SOURCE", "DEFAULT_NUM_TRAIN", "DEFAULT_NUM_VAL",
    "DEFAULT_SOURCE_SIZE", "DEFAULT_TARGET_SIZE", "DOMAINS", "FENCE", "FORMAT_VERSION", "LIGHT", "MOTO",
    "NUM_CLASSES", "PERSON", "POLE", "RIDER", "ROAD", "SIDEWALK", "SIGN", "SKY", "SOURCE_KNOBS", "SPLITS",
    "TARGET_CITIES", "TERRAIN", "TRAIN", "TRUCK", "VEG", "VOID", "WALL", "class_frequencies", "contact_sheet", "main",
    "render_scene", "target_name", "write_source", "write_target",
]
