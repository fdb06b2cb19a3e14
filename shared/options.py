"""Every inpainting option in one table: type, range, default, and what to tell a person.

Declared once here (name, type, bounds, default, help, where it is offered), checked once where
options enter (a sidecar at ingest, the CLI's flags, the UI's sidebar: `InpaintOptions.check`),
and carried as one `InpaintOptions` value to the sampler and, whole, into the job manifest,
result.json and the notification. The CLI's flags, the UI's widgets and the README's table are
made from the declaration, so a new option is one entry here, the code that uses it, and a test.
Standard library only: the Lambdas, the UI and `--help` read it without torch.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, make_dataclass

# The classes of the shipped weights (PBC, Acevedo et al. 2020); "none" = no label.
LABELS = ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")
SAMPLERS = ("ddim", "ddpm")
COMBINE_CHOICES = ("mean", "first", "nearest")


class OptionError(ValueError):
    """An option value a person gave that cannot be used; the message says what it must be."""

    def __init__(self, name: str, value, what: str, words: str = ""):
        super().__init__(f"{name} must be {what}, got {value!r}")
        self.name, self.value, self.what, self.words = name, value, what, words or what

    def __reduce__(self):
        return (type(self), (self.name, self.value, self.what, self.words))

    def in_document(self) -> str:
        """As a sidecar's reader needs it: the value as written in the JSON, and what to write."""
        return f"option {self.name!r} is {json.dumps(self.value, default=str)[:60]}; it must be {self.words}"


class UnknownOptions(ValueError):
    def __init__(self, unknown: list[str], allowed: tuple[str, ...]):
        super().__init__(f"unknown option(s) {', '.join(map(repr, unknown))}; the options are {', '.join(allowed)}")

    def in_document(self) -> str:
        return str(self)


# Where options come from decides their bounds. An upload (a sidecar, the UI) costs the stack, so
# it is bounded; on a person's own machine (the CLI, evaluation) some bounds do not apply: any class
# of their own weights, any number of samples. Nothing else loosens a bound.
UPLOAD, OWN_MACHINE = "upload", "own machine"
SURFACES = ("sidecar", "cli", "ui")  # where a person can set an option


@dataclass(frozen=True)
class Option:
    name: str
    kind: type  # int | float | bool | str
    default: object
    help: str  # one line, for --help, the UI and the README's table
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    surfaces: tuple[str, ...] = SURFACES  # where it is offered: a pair's NAME.json, `cellpaint inpaint` flags, the UI's sidebar
    title: str = ""  # the UI's label (default: the name)
    words: str = ""  # what a valid value is, in a person's words, where the choices alone say too little
    open_on_own_machine: bool = False  # the upper bound and the choices do not apply on one's own machine
    sampler_arg: str = ""  # the first-stage sampler's keyword it sets (gpu_job/inpainter/sampler.py sample()), if any
    null: bool = False  # None (JSON null) is a valid value besides the default, e.g. a label of None = no label
    default_words: str = ""  # what a default of None means, in the README's table

    def what(self, bounds: str = UPLOAD) -> str:
        """What a valid value is, in words: the end of every error message."""
        if self.kind is bool:
            return "true or false"
        open_ = bounds == OWN_MACHINE and self.open_on_own_machine
        if self.choices and not open_:
            return "one of " + ", ".join(self.choices)
        noun = {int: "an integer", float: "a number", str: "a string"}[self.kind]
        high = None if open_ else self.high
        num = lambda x: str(int(x)) if float(x).is_integer() else f"{x:g}"  # noqa: E731 (2147483647, not 2.14748e+09)
        if self.low is not None and high is not None:
            return f"{noun} from {num(self.low)} to {num(high)}"
        return f"{noun} >= {num(self.low)}" if self.low is not None else noun

    def check(self, value, bounds: str = UPLOAD):
        """`value` if it is valid, else OptionError. JSON true/false are not integers, 50.0 is not
        an integer, and an integer is a number."""
        if value is None and (self.null or self.default is None):
            return None
        ok = isinstance(value, self.kind) and not (isinstance(value, bool) and self.kind is not bool)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if ok and self.kind is not bool:
            open_ = bounds == OWN_MACHINE and self.open_on_own_machine
            ok = ((self.low is None or value >= self.low) and (open_ or self.high is None or value <= self.high)
                  and (open_ or not self.choices or value in self.choices))
        if not ok:
            raise OptionError(self.name, value, self.what(bounds), self.words)
        return value


# Why each default is what it is: BENCHMARKS.md has the measurements.
OPTIONS = {o.name: o for o in (
    # 5 DDIM steps: one sample scored higher on PBC val than at 10 (24.14 against 23.37 dB), at half the model calls.
    Option("steps", int, 5, "sampler steps (DDPM: up to 1000)", low=1, high=1000, title="Steps", sampler_arg="steps"),
    # The mean of 8 ancestral samples scored 0.1 dB higher, better on some kinds and worse on others.
    Option("sampler", str, "ddim", "ddim (deterministic from its noise) or ddpm (ancestral)", choices=SAMPLERS, words="ddim or ddpm",
           sampler_arg="method"),
    Option("seed", int, 0, "seed of the sampler's noise", low=0, high=2**31 - 1),
    # auto: the labeller (gpu_job/inpainter/labeler.py) guesses each window's class from its known pixels, and the
    # model is told it where the guess is sure. On PBC val white cells: class kept 91 -> 93 %, +0.25 dB (at temperature 1).
    Option("label", str, "auto", "the cell's class, auto (guessed from what the mask leaves, where sure) or none",
           choices=LABELS + ("auto", "none"), open_on_own_machine=True, null=True, words="one of " + ", ".join(LABELS) + ", auto or none",
           title="Cell class"),
    # One committed sample: the mean of 8 scores ~1 dB higher on PBC val but blurs what the samples
    # disagree on (a nucleus's lobes) and costs 8x the first stage. K > 1 also gives the uncertainty map.
    Option("samples", int, 1, "samples per window; more than one also gives an uncertainty map", low=1, high=8, open_on_own_machine=True),
    Option("combine", str, "first", "mean (of the samples: closest to the truth on average), first (one sharp sample) "
           "or nearest (the sample nearest their mean)", choices=COMBINE_CHOICES,
           words="mean (of the samples) or first (one sample), or nearest (the sample nearest their mean)", title="Result"),
    # The texture stage: fine detail 0.25 -> 0.57 of the truth's, for 0.06 dB inside the mask.
    Option("texture", bool, True, "redraw the fill at full resolution with the texture stage", title="Texture at full size"),
    # One step from t = 60 scores as 10 from t = 200 did (PSNR, SSIM; fine detail 0.60 of the truth's) at a tenth of the calls.
    Option("texture_steps", int, 1, "texture-stage DDIM steps (from its start level)", low=1, high=200, surfaces=("cli",)),
    Option("texture_start", int, 60, "texture-stage start level: the noise level its redrawing starts from", low=1, high=999, surfaces=("cli",)),
    # Grain (gpu_job/inpainter/grain.py): the detail between the two stages' scales, matched to the hole's surroundings.
    # 1: a classifier tells PBC val fills from real cells far less often, for a tenth of a dB (BENCHMARKS.md, realism).
    Option("grain", float, 1.0, "fine detail drawn into the fill as noise, as strong per scale as around the hole "
           "(1 = as much as there, 0 = none)", low=0.0, high=2.0, surfaces=("sidecar", "cli")),
    # A fill whose colours appear nowhere around it falls back to a classical fill (gpu_job/inpainter/guard.py).
    Option("guard", bool, False, "fall back to a classical fill where the fill's colours appear nowhere around it"),
    # On an image the OOD flag calls unlike the training images (gpu_job/inpainter/ood.py), the fill moves this
    # share of the way to a classical fill (gpu_job/inpainter/classical.py). Such images are filled by the model of
    # two microscopes (gpu_job/inpainter/inpaint.py); alone it was still below biharmonic in BCCD's white and red
    # cells. 0.7 is the least share (in tenths) that put every region kind above biharmonic with no fill 6 dB
    # below, on photos 41-110 of that set (0.9 before the model of two microscopes; BENCHMARKS.md). PBC-like
    # images are not flagged.
    # Above 0 it also lets a hole in plain slide take the smooth fill (gpu_job/inpainter/guard.py, plain_ring).
    Option("fallback", float, 0.7, "on an image unlike the training images, the share of the fill taken from a classical fill "
           "(0 = the model's fill as it is, with no classical share anywhere)", low=0.0, high=1.0, title="Classical share on unlike images"),
    # None: the temperature measured best for the model that fills the window, from its record
    # (TEMPERATURE below where the record names none).
    Option("temperature", float, None, "scale of the first stage's starting noise: below 1 nearer the likeliest fill, "
           "1 = a sample at the model's own spread; default: the model's own for one sample (PBC's 0.6, more microscopes' 0, a lab's as "
           "adapt measured it), 0.6 for several",
           low=0.0, high=1.0, surfaces=("cli",), sampler_arg="temperature", default_words="the model's own"),
    Option("guidance", float, 1.0, "classifier-free guidance scale with a label (1 = plain conditional)", low=0.0, surfaces=("cli",),
           sampler_arg="guidance"),
    Option("feather", int, 0, "px inside the mask edge blended toward the original", low=0, surfaces=("cli",)),
    Option("seam", bool, True, "correct the patch's low frequencies to meet the original without a seam", surfaces=("cli",)),
    # None: the PBC field of view scaled by the image's cell size (shared/imaging/scale.py), so cells reach the
    # model at the scale it learned; a number overrides it; <= 0: the whole image as one field.
    Option("window", int, None, "source px per model field for large images (default: from the image's cell size; 0 = the whole image)",
           surfaces=("cli",), default_words="from the image"),
    # Colours and stains of another lab moved to the training set's around the model (shared/imaging/colour.py).
    # auto: Reinhard on every window cost PBC val 0.3 dB, so auto gates it by the slide's light (BENCHMARKS.md).
    Option("normalize", str, "auto", "match the image's colours to the training set's around the model: none, auto (Reinhard, "
           "as far as the slide's light is unlike the training set's), reinhard or macenko", choices=("none", "auto", "reinhard", "macenko"),
           title="Colour normalisation"),
)}
# The temperature of a model whose record names none (the shipped PBC model): the warmest, in
# tenths, at which one sample loses nothing on PBC val against the mean of 8 (PSNR, SSIM) on two
# seeds: +1.0 dB over a sample at 1, at no cost in time; with the labeller's threshold 0.55, class
# kept 92/88 % against 93/90 % at 1 and 85/84 % for the mean of 8. The model of more microscopes
# and a lab's model record their own (weights.own_temperature; BENCHMARKS.md, Other labs' images).
# Several samples are drawn at it whatever the model (their spread is the uncertainty map).
TEMPERATURE = 0.6
SIDECAR = tuple(n for n, o in OPTIONS.items() if "sidecar" in o.surfaces)
# Option name -> the sampler's keyword. Windows whose options agree on all of these share model batches.
SAMPLER_ARGS = {n: o.sampler_arg for n, o in OPTIONS.items() if o.sampler_arg}


def _check(self, bounds: str = UPLOAD) -> "InpaintOptions":
    """Every field valid under `bounds` (None where the option allows it: a None label means no
    label), else OptionError. The one validation: each surface calls it once, where options enter."""
    for name, o in OPTIONS.items():
        setattr(self, name, o.check(getattr(self, name), bounds))
    return self


def _from_dict(cls, doc: dict, bounds: str = UPLOAD, allowed: tuple[str, ...] | None = None) -> "InpaintOptions":
    """Options as a document gives them (a sidecar, the UI, a variant; missing keys take their
    defaults), checked. UnknownOptions for a key that is not an option (or not one of `allowed`)."""
    allowed = tuple(OPTIONS) if allowed is None else allowed
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise UnknownOptions(unknown, allowed)
    return cls(**doc).check(bounds)


def _from_record(cls, doc: dict) -> "InpaintOptions":
    """Options recorded by the stack itself after they were checked (a job manifest, result.json):
    read back as they were, not checked again. Keys of options since removed are ignored."""
    return cls(**{k: v for k, v in doc.items() if k in OPTIONS})


def _to_dict(self) -> dict:
    return asdict(self)


# The options as one typed record, a field per entry of OPTIONS (so it never lags behind them).
InpaintOptions = make_dataclass(
    "InpaintOptions", [(n, o.kind | None if o.default is None or o.null else o.kind, field(default=o.default)) for n, o in OPTIONS.items()],
    namespace={"check": _check, "from_dict": classmethod(_from_dict), "from_record": classmethod(_from_record), "to_dict": _to_dict,
               "__doc__": "The options of one inpainting: a field for each entry of shared.options.OPTIONS."})
InpaintOptions.__module__ = __name__


def offered(surface: str) -> list[Option]:
    """The options a surface (sidecar, cli, ui) offers, in declaration order."""
    return [o for o in OPTIONS.values() if surface in o.surfaces]


def markdown_table() -> str:
    """The README's options table, made from the declaration (tests/test_options.py holds the
    README to it; `python -m shared.options` prints it)."""
    rows = ["| option | default | values | where | what it does |", "| --- | --- | --- | --- | --- |"]
    for o in OPTIONS.values():
        default = o.default_words if o.default is None else json.dumps(o.default)
        where = ", ".join(f"`--{o.name.replace('_', '-')}`" if s == "cli" else s for s in o.surfaces)
        rows.append(f"| `{o.name}` | {default} | {o.what(UPLOAD).replace('|', '/')} | {where} | {o.help.replace('|', '/')} |")
    return "\n".join(rows) + "\n"




# ---- Whole-cell generation (`cellpaint sample`) ----------------------------------------------------
# One sample with nothing known to clamp to: more steps than inpainting.
GENERATE_STEPS = 25
# Guidance 5 with the ancestral sampler: a classifier trained on real cells names the requested
# class for every generated cell of every class (24 a class), against 79 % at 1. Two model calls a step.
GENERATE_GUIDANCE = 5.0
# Ancestral: deterministic DDIM left coloured speckle on about a third of generated cells; the
# fresh noise of ancestral steps is denoised away again (1 % speckled, as many as real cells).
GENERATE_SAMPLER = "ddpm"


if __name__ == "__main__":
    print(markdown_table(), end="")
