"""Image-classification tasks for zero-shot CLIP evaluation: class names, prompt templates and where the data lives.

The eight standard tasks of the task-vector literature use the public CLIP / task-vectors prompt templates that
FusionBench uses and FusionBench's dataset ids on the Hugging Face hub. For SUN397, Stanford Cars and GTSRB the class
names are read from the dataset's own ``label`` feature (underscores become spaces) unless given explicitly.
The offline zoo's tasks (``digits``, ``emoji``, ``icons``, ``textures``, ``letters``, ``scripts``, and ``mnist`` /
``fashion_mnist`` on their own data) live here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

NUMBER = ('a photo of the number: "{}".',)


def _resisc_templates() -> tuple[str, ...]:
    # satellite/aerial × imagery/photo/view × (no article, a, the), in the published order
    out = []
    for article in ("", "a ", "the "):
        for what in ("imagery", "photo", "view"):
            for kind in ("satellite", "aerial"):
                out.append(f"{kind} {what} of {article}{{}}.")
    return tuple(out)


@dataclass(frozen=True)
class Task:
    """One classification task. ``classnames`` may be empty: then they come from the dataset's label feature."""

    name: str
    templates: tuple[str, ...]
    classnames: tuple[str, ...] = ()
    dataset: str | None = None
    test_split: str = "test"
    train_split: str = "train"
    aliases: tuple[str, ...] = field(default=(), compare=False)

    def prompts(self, classname: str) -> list[str]:
        return [t.format(classname) for t in self.templates]

    def with_classnames(self, names: list[str] | tuple[str, ...]) -> "Task":
        return replace(self, classnames=tuple(names))


DIGITS = tuple(str(i) for i in range(10))

EUROSAT = ("annual crop land", "forest", "brushland or shrubland", "highway or road",
           "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
           "residential buildings or homes or apartments", "river", "lake or sea")

RESISC45 = ("airplane", "airport", "baseball diamond", "basketball court", "beach", "bridge", "chaparral", "church",
            "circular farmland", "cloud", "commercial area", "dense residential", "desert", "forest", "freeway",
            "golf course", "ground track field", "harbor", "industrial area", "intersection", "island", "lake",
            "meadow", "medium residential", "mobile home park", "mountain", "overpass", "palace", "parking lot",
            "railway", "railway station", "rectangular farmland", "river", "roundabout", "runway", "sea ice", "ship",
            "snowberg", "sparse residential", "stadium", "storage tank", "tennis court", "terrace",
            "thermal power station", "wetland")

DTD = ("banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
       "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid", "grooved", "honeycombed",
       "interlaced", "knitted", "lacelike", "lined", "marbled", "matted", "meshed", "paisley", "perforated", "pitted",
       "pleated", "polka-dotted", "porous", "potholed", "scaly", "smeared", "spiralled", "sprinkled", "stained",
       "stratified", "striped", "studded", "swirly", "veined", "waffled", "woven", "wrinkled", "zigzagged")

FASHION = ("T - shirt / top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")

# The Unicode emoji groups (emoji-test.txt), less "Component".
EMOJI_GROUPS = ("smileys and emotion", "people and body", "animals and nature", "food and drink",
                "travel and places", "activities", "objects", "symbols", "flags")

# Offline zoo: Oxygen's icon contexts, GIMP's pattern folders (less "Legacy"), capitals, and Noto's scripts.
ICON_CONTEXTS = ("action", "application", "device", "file type", "place", "status")
TEXTURES = ("animal skin", "fabric", "food", "paper", "plant", "sky", "stone", "water", "wood")
CAPITALS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
SCRIPTS = ("arabic", "hebrew", "devanagari", "thai", "armenian", "georgian", "ethiopic", "bengali", "tamil", "khmer",
           "sinhala", "myanmar")
SYMBOLS = ("arrow", "mathematical operator", "box drawing", "braille pattern", "geometric shape", "dingbat",
           "hexagram", "domino tile", "playing card", "chess piece")
RACES = ("dwarf", "human", "undead", "saurian", "drake", "elf", "orc", "merfolk")  # Battle for Wesnoth's units

TASKS: dict[str, Task] = {t.name: t for t in (
    Task("sun397", ("a photo of a {}.", "a photo of the {}."), dataset="tanganke/sun397"),
    Task("stanford_cars", ("a photo of a {}.", "a photo of the {}.", "a photo of my {}.", "i love my {}!",
                           "a photo of my dirty {}.", "a photo of my clean {}.", "a photo of my new {}.",
                           "a photo of my old {}."), dataset="tanganke/stanford_cars", aliases=("cars",)),
    Task("resisc45", _resisc_templates(), RESISC45, dataset="tanganke/resisc45"),
    Task("eurosat", ("a centered satellite photo of {}.", "a centered satellite photo of a {}.",
                     "a centered satellite photo of the {}."), EUROSAT, dataset="tanganke/eurosat"),
    Task("svhn", NUMBER, DIGITS, dataset="tanganke/svhn"),
    Task("gtsrb", ('a zoomed in photo of a "{}" traffic sign.', 'a centered photo of a "{}" traffic sign.',
                   'a close up photo of a "{}" traffic sign.'), dataset="tanganke/gtsrb"),
    Task("mnist", NUMBER, DIGITS, dataset="mnist"),
    Task("dtd", tuple(f"a photo of {a} {{}} {w}." for a in ("a", "the") for w in ("texture", "pattern", "thing",
                                                                                   "object")),
         DTD, dataset="tanganke/dtd"),
    Task("fashion_mnist", ("a photo of a {}.", "a photo of the {}."), FASHION, dataset="zalando-datasets/fashion_mnist"),
    # Tasks of the offline zoo (their data ships with merge-rs).
    Task("digits", NUMBER, DIGITS),
    Task("emoji", ("an emoji of {}.", "an emoji from the {} group.", "a small icon of {}."), EMOJI_GROUPS),
    Task("icons", ("an icon of a {}.", "a {} icon."), ICON_CONTEXTS),
    Task("textures", ("a photo of a {} texture.", "a photo of a {} pattern."), TEXTURES),
    Task("letters", ('the letter "{}".', "a photo of the letter {}."), CAPITALS),
    Task("scripts", ("text in {} script.", "a photo of {} writing."), SCRIPTS),
    Task("symbols", ("a {} symbol.", "the {} sign."), SYMBOLS),
    Task("units", ("a {} unit.", "a picture of a {}."), RACES),
)}

EIGHT_TASKS = ("sun397", "stanford_cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd")


def get_task(name: str) -> Task:
    """A registered task by name or alias (case-insensitive)."""
    key = name.lower().replace("-", "_")
    for task in TASKS.values():
        if key == task.name or key in task.aliases:
            return task
    known = ", ".join(sorted(TASKS))
    raise ValueError(f"unknown task '{name}' (known: {known}); give class names and templates for a new one")


def classnames_from_labels(names: list[str]) -> list[str]:
    """Class names as datasets store them ('airplane_cabin', 'Abbey') turned into prompt text."""
    return [n.replace("_", " ").strip() for n in names]
