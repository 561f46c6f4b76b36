"""Question/answer templates. Families of the paper's Tables 12-14 (verbatim phrasings first,
then a few more of our own), SpatialVLM-style mirrors for the other predicates, captions and the
multi-view VQA of App. C. Placeholders: {A}, {B} (points or objects), {X}, {Y} (values)."""

from __future__ import annotations

__all__ = ["PIXEL", "OBJECT", "SCENE", "CAPTION", "MVQA", "FAMILIES", "fmt_len", "fmt_vec", "fmt_size"]

# ------------------------------------------------------------------------- pixel level (Table 12)
PIXEL = {
    # depth = z along the camera's optical axis (what the depth map holds)
    "point_depth": {
        "q": [
            "What is the depth value at pixel point {A}?",
            "Tell me the depth of point {A}.",
            "How deep is the scene at point {A}?",
            "Estimate the depth (along the camera's viewing axis) of the surface at point {A}.",
        ],
        "a": [
            "It is {X}.",
            "Depth value of point {A} is {X}.",
            "The surface at point {A} has a depth of {X}.",
        ],
    },
    # distance = Euclidean distance from the camera centre to the 3D point (not the depth)
    "point_distance": {
        "q": [
            "How far away is point {A}?",
            "Estimate the distance from the camera to the surface at point {A}.",
        ],
        "a": [
            "{X} away.",
            "It is {X}.",
            "The surface at point {A} is {X} from the camera.",
        ],
    },
    # yes/no comparisons: "is A closer than B"
    "point_closer": {
        "q": [
            "Is point {A} closer than {B}?",
            "Is point {A} closer to the viewer than point {B}?",
            "Does point {A} have a smaller depth value than point {B}?",
        ],
        "true": [
            "Yes, point {A} is closer to the viewer than point {B}.",
            "Indeed, point {A} has a smaller depth value than point {B}.",
            "Correct, point {A} is closer than point {B}.",
        ],
        "false": [
            "No, point {A} is not closer than point {B}.",
            "In fact, point {B} is closer to the viewer than point {A}.",
            "Incorrect, point {B} has a smaller depth value than point {A}.",
        ],
    },
    # which-of-two comparisons; {W} = the closer point, {F} = the farther one
    "point_which_closer": {
        "q": [
            "Which point is close to a viewer? Point: {A}, Point: {B}.",
            "Which point has a smaller depth value? Point {A} or Point {B}?",
            "Compare the depth of point {A} and point {B}.",
        ],
        "a": [
            "Point {W} is closer to the viewer than point {F}.",
            "Point {W} has a smaller depth value than point {F}.",
            "Point {W} is at a depth of {X} and point {F} at {Y}, so point {W} is closer.",
        ],
    },
}

# ------------------------------------------------------------------------- object level (Table 13)
OBJECT = {
    "cube_center": {
        "q": [
            "What is the center of the 3d bounding box coordinate for {A}?",
            "Where is the center of the 3D bounding cube of {A}?",
            "Give the 3D center of {A}.",
        ],
        "a": ["{X}", "Center: {X}", "The bounding cube of {A} is centered at {X}."],
    },
    "cube_identify": {
        "q": ["Identify {A} and {B}", "Locate {A} and {B} in 3D.", "Give the 3D bounding cube centers of {A} and {B}."],
        "a": ["{A} in {X} and {B} in {Y}", "{A} is centered at {X}; {B} is centered at {Y}."],
    },
    "cube_extent": {
        "q": [
            "What is the size of the 3D bounding cube of {A}?",
            "How big is {A}?",
            "What are the dimensions of {A}?",
        ],
        "a": ["{X}", "Its bounding cube measures {X}.", "{A} is about {X}."],
    },
    "left": {
        "q": [
            "Is the {A} to the left of the {B} from the viewer's perspective?",
            "Does the {A} appear on the left side of the {B}?",
            "Can you confirm if the {A} is positioned to the left of the {B}?",
        ],
        "true": [
            "Yes, the {A} is to the left of the {B}.",
            "Indeed, the {A} is positioned on the left side of the {B}.",
            "Correct, you'll find the {A} to the left of the {B}.",
        ],
        "false": [
            "No, the {A} is not to the left of the {B}.",
            "In fact, the {A} is either to the right of or directly aligned with the {B}.",
            "Incorrect, the {A} is not on the left side of the {B}.",
        ],
    },
    "right": {
        "q": [
            "Is the {A} to the right of the {B} from the viewer's perspective?",
            "Does the {A} appear on the right side of the {B}?",
            "Can you confirm if the {A} is positioned to the right of the {B}?",
        ],
        "true": [
            "Yes, the {A} is to the right of the {B}.",
            "Indeed, the {A} is positioned on the right side of the {B}.",
            "Correct, you'll find the {A} to the right of the {B}.",
        ],
        "false": [
            "No, the {A} is not to the right of the {B}.",
            "In fact, the {A} is either to the left of or directly aligned with the {B}.",
            "Incorrect, the {A} is not on the right side of the {B}.",
        ],
    },
    "above": {
        "q": ["Is the {A} above the {B}?", "Is the {A} positioned higher than the {B}?", "Does the {A} sit above the {B}?"],
        "true": ["Yes, the {A} is above the {B}.", "Indeed, the {A} is higher than the {B}.", "Correct, the {A} is located above the {B}."],
        "false": ["No, the {A} is not above the {B}.", "In fact, the {A} is below or level with the {B}.", "Incorrect, the {A} is not higher than the {B}."],
    },
    "below": {
        "q": ["Is the {A} below the {B}?", "Is the {A} positioned lower than the {B}?", "Does the {A} sit below the {B}?"],
        "true": ["Yes, the {A} is below the {B}.", "Indeed, the {A} is lower than the {B}.", "Correct, the {A} is located below the {B}."],
        "false": ["No, the {A} is not below the {B}.", "In fact, the {A} is above or level with the {B}.", "Incorrect, the {A} is not lower than the {B}."],
    },
    "behind": {
        "q": ["Is the {A} behind the {B} from the viewer's perspective?", "Is the {A} farther from the viewer than the {B}?",
              "Does the {A} lie behind the {B}?"],
        "true": ["Yes, the {A} is behind the {B}.", "Indeed, the {A} is farther from the viewer than the {B}.",
                 "Correct, the {A} lies behind the {B}."],
        "false": ["No, the {A} is not behind the {B}.", "In fact, the {A} is in front of the {B}.",
                  "Incorrect, the {A} is closer to the viewer than the {B}."],
    },
    "front": {
        "q": ["Is the {A} in front of the {B} from the viewer's perspective?", "Is the {A} closer to the viewer than the {B}?",
              "Does the {A} lie in front of the {B}?"],
        "true": ["Yes, the {A} is in front of the {B}.", "Indeed, the {A} is closer to the viewer than the {B}.",
                 "Correct, the {A} lies in front of the {B}."],
        "false": ["No, the {A} is not in front of the {B}.", "In fact, the {A} is behind the {B}.",
                  "Incorrect, the {A} is farther from the viewer than the {B}."],
    },
}
PREDICATES = ("left", "right", "above", "below", "behind", "front")

# ------------------------------------------------------------------------- scene level (Table 14)
SCENE = {
    "distance": {
        "q": [
            "What is the distance between the {A} and the {B}?",
            "How far is the {A} from the {B}?",
            "How distant is the {A} from the {B}?",
            "Measure the distance from the {A} to the {B}.",
        ],
        "a": [
            "{X}",
            "the {A} and the {B} are {X} apart.",
            "They are {X} apart.",
            "The distance of the {A} from the {B} is {X}.",
        ],
        # forward order: recall the centres of the object-level turns (CoT)
        "rationale": [
            "The {A} is centered at {CA} and the {B} at {CB}, so they are {X} apart.",
            "From the centers found above ({CA} and {CB}), the distance of the {A} from the {B} is {X}.",
        ],
    }
}

# ------------------------------------------------------------------------- captions (template captioner)
CAPTION = {
    "short_q": ["Describe the scene briefly.", "What does the image show?", "Give a short caption of the scene."],
    "detail_q": ["Describe the layout of the scene in detail.", "Describe where the objects are in the scene.",
                 "Give a detailed description of the scene."],
}

# ------------------------------------------------------------------------- multi-view VQA (App. C)
MVQA = {
    "common_q": [
        "Which objects can be seen in both the first image and the second image?",
        "Considering both views, which objects appear in the first image and also in the second image?",
    ],
    "only_q": [
        "Which objects are visible in the {N} image but not in the {M} image?",
    ],
    "motion_q": [
        "How did the camera move from the first image to the second image?",
        "Describe the change of viewpoint between the first and the second image.",
    ],
    "choice_q": [
        "Which object is visible in the second image but not in the first image?",
        "Which of these objects appears only in the second image?",
    ],
    "closest_q": [
        "Which of these objects has the smallest depth (along the viewing axis) in the second image?",
    ],
    "adv_q": [
        "Where is the {A} in the second image?",
        "How far is the {A} from the camera in the first image?",
        "What color is the {A} in the second image?",
    ],
}

FAMILIES = {"pix": tuple(PIXEL), "obj": ("cube_center", "cube_identify", "cube_extent") + PREDICATES,
            "scene": tuple(SCENE), "caption": ("caption_short", "caption_detail")}


# ------------------------------------------------------------------------- formatting
def fmt_len(x: float) -> str:
    """Metric length with sensible rounding: < 1 m in whole centimetres, else metres (2 decimals)."""
    x = float(x)
    cm = round(abs(x) * 100)
    if cm < 100:
        return f"{'-' if x < 0 and cm else ''}{cm} cm"
    return f"{x:.2f} m"


def fmt_vec(v) -> str:
    return "(" + ", ".join(f"{float(a):.2f}" for a in v) + ") m"


def fmt_size(size_wdh) -> str:
    """``(width, depth, height)``: the two horizontal extents (major, minor) and the vertical one."""
    w, d, h = (float(a) for a in size_wdh)
    return f"{fmt_len(w)} wide, {fmt_len(d)} deep and {fmt_len(h)} tall"


def rounded_len(x: float) -> float:
    """The value :func:`fmt_len` states, in metres."""
    x = float(x)
    cm = round(abs(x) * 100)
    if cm < 100:
        return (-cm if x < 0 else cm) / 100.0
    return round(x, 2)
