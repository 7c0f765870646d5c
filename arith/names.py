"""Model names (docs/reference_facts.md F1.1): `[ins{1-4}_]<op>_d<D>_l<L>_h<H>_t<T>K[_gf]_s<SEED>`.

Examples: `add_d5_l1_h3_t30K_s372001`, `ins1_mix_d6_l3_h4_t40K_s372001`, `add_d10_l2_h3_t40K_gf_s572091`.

- `insN_` (N = 1..4): insertion mode (F5.4); absent means 0 (a plain model).
- op: `add` (all addition), `sub` (all subtraction), `mul` (all multiplication),
  `mix` (66% subtraction batches, 80% when the model has an `insN_` prefix),
  `mas` (50% multiplication, 30% subtraction, 20% addition).
- `d`: digits per operand (1..20); `l`: layers; `h`: heads; `t<T>K`: T thousand training steps;
  `_gf`: GrokFast; `_s`: the 6-digit training seed.

Differences from the reference parser, on purpose:
- Parsing is strict: the whole name must match the grammar (the reference searches for substrings
  and silently keeps defaults for parts it does not find). A malformed name raises InputError with
  one line naming the wrong part.
- The reference formatter writes a `mas` model back as `mix` (it only knows add/sub/mul/mix);
  ours keeps `mas`, so every name round-trips exactly.
- Extension for tiny test models: a step count below 1000 is written without the `K`, e.g.
  `add_d2_l1_h1_t300_s000001` means 300 steps. Counts of 1000 or more must be whole thousands
  and are always written `t<T>K`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from arith.errors import InputError, clip

OPS = ("add", "sub", "mix", "mul", "mas")
MAX_DIGITS = 20
MAX_INSERT_MODE = 4

_GRAMMAR = re.compile(
    r"(?:ins(?P<ins>[1-4])_)?"
    r"(?P<op>add|sub|mix|mul|mas)"
    r"_d(?P<d>[1-9]\d*)"
    r"_l(?P<l>[1-9]\d*)"
    r"_h(?P<h>[1-9]\d*)"
    r"_t(?P<t>[1-9]\d*)(?P<k>K?)"
    r"(?P<gf>_gf)?"
    r"_s(?P<seed>\d{6})"
)

# (letter, what it holds, example) for the numeric parts, in grammar order
_FIELDS = (
    ("d", "digits", "_d6"),
    ("l", "layers", "_l2"),
    ("h", "heads", "_h3"),
    ("t", "steps", "_t15K"),
    ("s", "seed", "_s372001"),
)


@dataclass(frozen=True)
class ModelName:
    """One parsed model name. `str(name)` / `name.format()` give the canonical text back."""

    insert_mode: int
    op: str
    n_digits: int
    n_layers: int
    n_heads: int
    steps: int
    grokfast: bool
    seed: int

    def __post_init__(self):
        problem = _field_problem(self)
        if problem:
            raise InputError(f"model name: {problem}")

    # --- training mix (percent of batches per operation, F1.1 and F3.1) ---
    @property
    def perc_mult(self) -> int:
        return {"mul": 100, "mas": 50}.get(self.op, 0)

    @property
    def perc_sub(self) -> int:
        if self.op == "mix":
            return 80 if self.insert_mode > 0 else 66
        return {"sub": 100, "mas": 30}.get(self.op, 0)

    @property
    def perc_add(self) -> int:
        return max(0, 100 - self.perc_mult - self.perc_sub)

    def format(self) -> str:
        prefix = f"ins{self.insert_mode}_" if self.insert_mode else ""
        steps = f"t{self.steps // 1000}K" if self.steps >= 1000 else f"t{self.steps}"
        gf = "_gf" if self.grokfast else ""
        shape = f"_d{self.n_digits}_l{self.n_layers}_h{self.n_heads}"
        return f"{prefix}{self.op}{shape}_{steps}{gf}_s{self.seed:06d}"

    def __str__(self) -> str:
        return self.format()

    def with_seed(self, seed: int) -> ModelName:
        """The same configuration trained from another seed."""
        return replace(self, seed=seed)

    def with_steps(self, steps: int) -> ModelName:
        return replace(self, steps=steps)


def _field_problem(m: ModelName) -> str | None:
    """What is wrong with a ModelName's values (None when nothing is)."""
    if not isinstance(m.insert_mode, int) or not 0 <= m.insert_mode <= MAX_INSERT_MODE:
        return f"insert mode must be 0..{MAX_INSERT_MODE}, got {m.insert_mode!r}"
    if m.op not in OPS:
        return f"unknown operation {m.op!r} (expected add, sub, mix, mul or mas)"
    if not isinstance(m.n_digits, int) or not 1 <= m.n_digits <= MAX_DIGITS:
        return f"digits must be 1..{MAX_DIGITS}, got {m.n_digits!r}"
    if not isinstance(m.n_layers, int) or m.n_layers < 1:
        return f"layers must be a positive whole number, got {m.n_layers!r}"
    if not isinstance(m.n_heads, int) or m.n_heads < 1:
        return f"heads must be a positive whole number, got {m.n_heads!r}"
    if not isinstance(m.steps, int) or m.steps < 1:
        return f"steps must be a positive whole number, got {m.steps!r}"
    if m.steps >= 1000 and m.steps % 1000:
        return f"steps must be below 1000 or a whole number of thousands, got {m.steps}"
    if not isinstance(m.grokfast, bool):
        return f"grokfast must be True or False, got {m.grokfast!r}"
    if not isinstance(m.seed, int) or not 0 <= m.seed <= 999_999:
        return f"seed must be 6 digits (0..999999), got {m.seed!r}"
    return None


def parse_name(text: str) -> ModelName:
    """Parse a model name; a malformed one raises InputError saying which part is wrong."""
    if not isinstance(text, str):
        raise InputError(f"model name must be text, got {type(text).__name__}")
    m = _GRAMMAR.fullmatch(text)
    if m is None:
        raise InputError(f"model name {clip(text)!r}: {_diagnose(text)}")
    steps = int(m["t"])
    if m["k"]:
        steps *= 1000
    elif steps >= 1000:
        hint = f"write t{steps // 1000}K for whole thousands" if steps % 1000 == 0 else "_t300"
        raise InputError(
            f"model name {clip(text)!r}: steps without K must be below 1000 ({hint}); larger counts are _t<thousands>K"
        )
    n_digits = int(m["d"])
    if n_digits > MAX_DIGITS:
        raise InputError(f"model name {clip(text)!r}: {_value_problem('d', m['d'])}")
    return ModelName(
        insert_mode=int(m["ins"] or 0),
        op=m["op"],
        n_digits=n_digits,
        n_layers=int(m["l"]),
        n_heads=int(m["h"]),
        steps=steps,
        grokfast=m["gf"] is not None,
        seed=int(m["seed"]),
    )


def _diagnose(text: str) -> str:
    """Name the first part of a name that does not fit the grammar (called when the full match failed)."""
    if not text:
        return "empty name"
    if text != text.strip() or any(c.isspace() for c in text):
        return "contains white space"
    parts = text.split("_")
    if "" in parts:
        return "empty part (doubled, leading or trailing '_')"
    i = 0
    if parts[0].startswith("ins"):
        if not re.fullmatch(r"ins[1-4]", parts[0]):
            return f"insert prefix {clip(parts[0])!r} must be ins1, ins2, ins3 or ins4"
        i = 1
    if i >= len(parts):
        return "missing operation (add, sub, mix, mul or mas)"
    if parts[i] not in OPS:
        return f"unknown operation {clip(parts[i])!r} (expected add, sub, mix, mul or mas)"
    i += 1
    letters = [f[0] for f in _FIELDS]
    for j, (letter, what, example) in enumerate(_FIELDS):
        if letter == "s" and i < len(parts) and parts[i] == "gf":
            i += 1  # `_gf` belongs just before the seed
        if i >= len(parts):
            return f"missing _{letter}<{what}> (e.g. {example})"
        part = parts[i]
        if part == "gf":
            return f"'_gf' must come just before the seed (..._t15K_gf_s372001), not before _{letter}"
        if part[0] != letter:
            later = [f for f in letters[j + 1 :] if part[0] == f and part[1:2].isdigit()]
            if later:
                return f"missing _{letter}<{what}> (e.g. {example})"
            return f"unexpected part {clip(part)!r} where _{letter}<{what}> belongs (e.g. {example})"
        problem = _value_problem(letter, part[1:])
        if problem:
            return problem
        i += 1
    if i < len(parts):
        rest = "_".join(parts[i:])
        if rest == "gf":
            return "'_gf' must come before the seed (..._t15K_gf_s372001)"
        return f"unexpected trailing part {clip(rest)!r} after the seed"
    return "does not match [insN_]<op>_d<D>_l<L>_h<H>_t<T>K[_gf]_s<SEED>"  # not reached for names split as above


def _value_problem(letter: str, value: str) -> str | None:
    if letter == "s":
        if not re.fullmatch(r"\d{6}", value):
            return "seed must be 6 digits (_s123456)"
        return None
    if letter == "t":
        if not re.fullmatch(r"[1-9]\d*K?", value):
            return "steps must be _t<thousands>K (e.g. _t15K), or _t<steps> below 1000 (_t300)"
        return None
    what, example = {"d": ("digits", "_d6"), "l": ("layers", "_l2"), "h": ("heads", "_h3")}[letter]
    if letter == "d" and not (re.fullmatch(r"[1-9]\d*", value) and int(value) <= MAX_DIGITS):
        return f"digits must be a whole number from 1 to {MAX_DIGITS} ({example}), got {clip(value)!r}"
    if not re.fullmatch(r"[1-9]\d*", value):
        return f"{what} must be a positive whole number without leading zeros ({example}), got {clip(value)!r}"
    return None


def parse_pair(text: str) -> tuple[ModelName, ModelName | None]:
    """`"main_name,insert_name"` (the training notebook's form) -> (main, insert).

    A lone name gives (main, None). The insert model's weights are copied into the main model (F5.4), so it
    must have the same number of digits and fit into the main model's layers and heads, and the main model
    must have an `insN_` prefix.
    """
    if not isinstance(text, str):
        raise InputError(f"model names must be text, got {type(text).__name__}")
    pieces = [p.strip() for p in text.split(",")]
    if len(pieces) > 2:
        raise InputError(f"model names {clip(text)!r}: expected 'main' or 'main,insert', got {len(pieces)} names")
    main = parse_name(pieces[0])
    if len(pieces) == 1:
        return main, None
    if not pieces[1]:
        raise InputError(f"model names {clip(text)!r}: the insert model name after ',' is empty")
    insert = parse_name(pieces[1])
    check_pair(main, insert, f"model names {clip(text)!r}")
    return main, insert


def check_pair(main: ModelName, insert: ModelName, where: str) -> None:
    """The insert model's weights are copied into the main model (F5.4): the main model has an
    `insN_` prefix, the insert model none, both have the same digits, and the insert model fits into the main
    model's layers and heads. InputError starting with `where` otherwise."""
    if main.insert_mode == 0:
        raise InputError(f"{where}: an insert model is given but {main} has no insN_ prefix")
    if insert.insert_mode != 0:
        raise InputError(f"{where}: the insert model {insert} must be a plain model (no insN_ prefix)")
    if insert.n_digits != main.n_digits:
        raise InputError(f"{where}: insert model {insert} has {insert.n_digits} digits, {main} has {main.n_digits}")
    if insert.n_layers > main.n_layers or insert.n_heads > main.n_heads:
        raise InputError(
            f"{where}: insert model {insert} (l{insert.n_layers} h{insert.n_heads}) does not fit into {main} "
            f"(l{main.n_layers} h{main.n_heads}); name one that fits, e.g. '{main},add_d{main.n_digits}_l1_h3_t15K'"
        )


def format_pair(main: ModelName, insert: ModelName | None) -> str:
    return main.format() if insert is None else f"{main.format()},{insert.format()}"


# The zoo as published today (upstream spec 14.2; docs/reference_facts.md F1.2 lists the 2024 subset): 53 models
# from 5 to 20 digits, by family (add, sub, mix from scratch, ins) in the spec's order. jobs/catalog.toml lists the
# same names in the same order, with the publisher's notes; this module owns the names and the insert pairings.
ZOO_ADD = (
    "add_d5_l1_h3_t15K_s372001",
    "add_d5_l1_h3_t30K_s372001",
    "add_d5_l2_h3_t15K_s372001",
    "add_d5_l2_h3_t40K_s372001",
    "add_d6_l2_h3_t15K_s372001",
    "add_d6_l2_h3_t20K_s173289",
    "add_d6_l2_h3_t20K_s572091",
    "add_d6_l2_h3_t40K_s372001",
    "add_d7_l2_h3_t45K_s173289",
    "add_d8_l2_h3_t45K_s173289",
    "add_d9_l2_h3_t45K_s173289",
    "add_d10_l2_h3_t40K_s572091",
    "add_d10_l2_h3_t40K_gf_s572091",
    "add_d11_l2_h3_t50K_s572091",
    "add_d12_l2_h3_t50K_s572091",
    "add_d13_l2_h3_t50K_s572091",
    "add_d14_l2_h3_t60K_s572091",
    "add_d15_l2_h3_t80K_s572091",
    "add_d20_l2_h3_t80K_s572091",
)
ZOO_SUB = (
    "sub_d5_l2_h3_t30K_s372001",
    "sub_d6_l2_h3_t30K_s372001",
    "sub_d6_l2_h3_t30K_s572091",
    "sub_d8_l2_h3_t50K_s173289",
    "sub_d8_l2_h3_t50K_s371793",
    "sub_d10_l2_h3_t75K_s173289",
    "sub_d10_l2_h3_t75K_gf_s173289",
    "sub_d12_l2_h3_t75K_s371793",
)
ZOO_MIX = (
    "mix_d5_l3_h4_t40K_s372001",
    "mix_d6_l3_h4_t40K_s372001",
    "mix_d7_l3_h4_t50K_s372001",
    "mix_d8_l3_h4_t60K_s173289",
    "mix_d9_l3_h4_t60K_s173289",
    "mix_d10_l3_h4_t75K_s173289",
    "mix_d10_l3_h4_t75K_gf_s173289",
    "mix_d11_l3_h4_t80K_s572091",
    "mix_d12_l3_h4_t85K_s572091",
    "mix_d13_l3_h4_t85K_s572091",
)

# The addition model each published ins* model starts from (spec 14.2: the training notebook QMTrain's model
# picker; docs/reference_facts.md F11 for the d6 ones), in the spec's order. PICKER_CHOICE marks the three for which
# the picker's rule changed: from 2024-06-10 it names add_d6_l2_h3_t20K_s173289 (the pairing used here), but when
# these three were first trained (April-May 2024) the rule was "the same seed as the ins model", i.e.
# add_d6_l2_h3_t20K_s572091. A real file's Config `insert_training_seed` settles it for that file.
DEFAULT_INSERT = "add_d6_l2_h3_t15K_s372001"
PICKER_INSERT = "add_d6_l2_h3_t20K_s173289"
SAME_SEED_INSERT = "add_d6_l2_h3_t20K_s572091"
INSERT_OF = {
    "ins1_mix_d5_l2_h3_t40K_s572091": "add_d5_l2_h3_t15K_s372001",
    "ins1_mix_d6_l2_h3_t40K_s572091": PICKER_INSERT,
    "ins1_mix_d6_l3_h3_t40K_s572091": PICKER_INSERT,
    "ins1_mix_d6_l3_h3_t80K_s572091": "add_d6_l2_h3_t40K_s372001",
    "ins1_mix_d6_l3_h4_t40K_s173289": PICKER_INSERT,
    "ins1_mix_d6_l3_h4_t40K_s372001": DEFAULT_INSERT,
    "ins1_mix_d6_l3_h4_t50K_s572091": PICKER_INSERT,
    "ins1_mix_d7_l3_h4_t50K_s572091": "add_d7_l2_h3_t45K_s173289",
    "ins1_mix_d8_l3_h4_t70K_s572091": "add_d8_l2_h3_t45K_s173289",
    "ins1_mix_d9_l3_h4_t70K_s572091": "add_d9_l2_h3_t45K_s173289",
    "ins1_mix_d10_l3_h3_t50K_s572091": "add_d10_l2_h3_t40K_s572091",
    "ins1_mix_d10_l3_h3_t50K_gf_s572091": "add_d10_l2_h3_t40K_gf_s572091",
    "ins1_mix_d11_l3_h4_t75K_s572091": "add_d11_l2_h3_t50K_s572091",
    "ins1_mix_d12_l3_h4_t85K_s572091": "add_d12_l2_h3_t50K_s572091",
    "ins2_mix_d6_l4_h4_t40K_s372001": DEFAULT_INSERT,
    "ins3_mix_d6_l4_h3_t40K_s372001": DEFAULT_INSERT,
}
PICKER_CHOICE = frozenset(
    ("ins1_mix_d6_l2_h3_t40K_s572091", "ins1_mix_d6_l3_h3_t40K_s572091", "ins1_mix_d6_l3_h4_t50K_s572091")
)
ZOO_INS = tuple(INSERT_OF)
ZOO = ZOO_ADD + ZOO_SUB + ZOO_MIX + ZOO_INS
# The published models: the whole zoo (jobs/catalog.toml lists exactly these, in this order).
PUBLISHED = ZOO

# The 13 names of the reference's 2024 model list hugging_models.md (F1.2), a subset of the zoo.
PUBLISHED_2024 = (
    "add_d5_l1_h3_t30K_s372001",
    "add_d5_l2_h3_t15K_s372001",
    "add_d6_l2_h3_t15K_s372001",
    "add_d6_l2_h3_t20K_s173289",
    "add_d6_l2_h3_t20K_s572091",
    "sub_d6_l2_h3_t30K_s372001",
    "mix_d6_l3_h4_t40K_s372001",
    "ins1_mix_d6_l3_h4_t40K_s372001",
    "ins1_mix_d6_l3_h4_t40K_s173289",
    "ins1_mix_d6_l3_h3_t40K_s572091",
    "ins1_mix_d6_l3_h4_t50K_s572091",
    "ins2_mix_d6_l4_h4_t40K_s372001",
    "ins3_mix_d6_l4_h3_t40K_s372001",
)


def default_insert(main: ModelName) -> ModelName:
    """The addition model an ins* model starts from when none is named: the published pairing for the
    published models, else the reference parser's defaults (2 layers, 3 heads, 15K steps, seed 372001)."""
    published = INSERT_OF.get(main.format())
    if published:
        return parse_name(published)
    return ModelName(0, "add", main.n_digits, 2, 3, 15000, False, 372001)


def resolve_pair(main: ModelName, insert: ModelName | None, where: str | None = None) -> ModelName | None:
    """The insert model of `main` (None for a plain model without one): `insert`, or the default one,
    checked against `main`."""
    if insert is None and not main.insert_mode:
        return None
    insert = insert if insert is not None else default_insert(main)
    check_pair(main, insert, where or f"model names '{format_pair(main, insert)}'")
    return insert


def parse_seed(value) -> int:
    """A 6-digit training seed (`372001`)."""
    text = str(value).strip() if not isinstance(value, bool) else "?"
    if not re.fullmatch(r"\d{6}", text):
        raise InputError(f"seed {clip(value)!r} is not 6 digits (e.g. 372001)")
    return int(text)


def _with_seed(text: str, seed: int, what: str) -> ModelName:
    try:
        return parse_name(f"{text}_s{seed:06d}")
    except InputError as exc:
        reason = str(exc).split("': ", 1)[-1]
        raise InputError(f"unknown {what} {clip(text)!r}: {reason}") from None


def _with_steps(name: ModelName, steps: int) -> ModelName:
    try:
        return name.with_steps(steps)
    except InputError as exc:
        raise InputError(f"--steps {steps}: {str(exc).split(': ', 1)[-1]}") from None


def expand_arch(arch: str, seed: int, steps: int | None = None) -> tuple[ModelName, ModelName | None]:
    """A sweep architecture `arch[,insert]` (names without the seed) and a seed -> (run name, its insert model
    or None). An insert name without a seed takes the run's seed; `steps` rewrites both step counts."""
    pieces = [p.strip() for p in arch.split(",")]
    if len(pieces) > 2 or not pieces[0]:
        raise InputError(f"unknown architecture {clip(arch)!r}: expected 'arch' or 'ins_arch,add_arch'")
    if re.search(r"_s\d*$", pieces[0]):
        raise InputError(f"architecture {clip(pieces[0])!r}: give it without the seed (seeds come from --seeds)")
    main = _with_seed(pieces[0], seed, "architecture")
    insert: ModelName | None = None
    if len(pieces) == 2:
        text = pieces[1]
        if re.search(r"_s\d{6}$", text):
            try:
                insert = parse_name(text)
            except InputError as exc:
                raise InputError(
                    f"unknown addition model {clip(text)!r}: {str(exc).split(chr(39) + ': ', 1)[-1]}"
                ) from None
        else:
            insert = _with_seed(text, seed, "addition model")
    if steps is not None:
        main = _with_steps(main, steps)
    insert = resolve_pair(main, insert, f"architecture {clip(arch)!r}")
    if insert is not None and steps is not None:
        insert = _with_steps(insert, steps)
    return main, insert


# The published artifacts of a model, by kind: `<name>.pth`, `<name>_train.json`, ... (F1.2), plus
# ours: the accuracy report and the Zarr store of per-question results. One owner for these file names.
ARTIFACT_SUFFIXES = {
    "weights": ".pth",
    "train": "_train.json",
    "behavior": "_behavior.json",
    "maths": "_maths.json",
    "accuracy": "_accuracy.json",
    "store": ".zarr",
}


def artifact_path(folder: str | Path, name: str, kind: str) -> Path:
    """`folder/<name><suffix of kind>`, e.g. artifact_path("runs/x", "x", "train") -> runs/x/x_train.json."""
    return Path(folder) / f"{name}{ARTIFACT_SUFFIXES[kind]}"


def sidecar_path(artifact: str | Path) -> Path:
    """The record of how a JSON artifact was made, beside it: `x_behavior.json` -> `x_behavior.meta.json`."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name.removesuffix(".json") + ".meta.json")


def name_of_weights(weights: str | Path) -> str:
    """The model name of a weights file: `runs/x/add_d6_..._s372001.pth` -> `add_d6_..._s372001`."""
    file = Path(weights).name
    suffix = ARTIFACT_SUFFIXES["weights"]
    return file[: -len(suffix)] if file.endswith(suffix) and len(file) > len(suffix) else Path(file).stem


def beside_weights(weights: str | Path, kind: str) -> Path:
    """Another artifact of the same model, in the weights' folder (`x.pth` -> `x_train.json`)."""
    return artifact_path(Path(weights).parent, name_of_weights(weights), kind)
