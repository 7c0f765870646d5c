"""The model card (`README.md`) of a hub folder, in the Hugging Face Hub's format: a YAML metadata header, then
what the model is, this model's own verdict (its accuracy per operation and complexity class, with the failure
rate's 95% bound), the publisher's note on the published model it was regenerated from (marked as that model's,
not this one's), the quanta maps, how it was made and the whole command that makes it again."""

from __future__ import annotations

from dataclasses import dataclass

from arith.names import parse_name

OP_WORDS = {"add": "addition", "sub": "subtraction", "mix": "addition and subtraction", "mul": "multiplication"}
OP_WORDS["mas"] = "multiplication, addition and subtraction"
INSERT_WORDS = {
    1: "initialised with an addition model's weights",
    2: "initialised with an addition model; its useful heads re-copied every 100 steps",
    3: "initialised with an addition model; its useful heads and MLPs re-copied every 100 steps",
    4: "initialised with an addition model; re-copied every step",
}
# the accuracy report's question kinds, in words
QUESTION_WORDS = {
    "ADD": "addition",
    "SUB": "subtraction, answer 0 or more",
    "NEG": "subtraction, negative answer",
    "MUL": "multiplication",
}
CLASS_WORDS = (
    "Complexity classes say how far a carry or borrow cascades. Addition: S0 has no carry; S1 has carries, none "
    "passing through a column whose digits sum to 9; S2 to S5 have a carry passing on through 1, 2, 3, or 4 or "
    "more such columns. Subtraction with an answer of 0 or more: M0 has no borrow; M1 has borrows; M2, M3 and M4+ "
    "have a borrow passing on through 1, 2, or 3 or more columns whose digits are equal. Subtraction with a "
    "negative answer: N1 to N4+, counted the same way."
)
TRAIN_WORDS = (
    ("d_model", "model width (d_model)"),
    ("d_head", "attention head width (d_head)"),
    ("d_mlp_multiplier", "MLP width, as a multiple of the model width (d_mlp_multiplier)"),
    ("batch_size", "batch size"),
    ("lr", "learning rate"),
    ("weight_decay", "weight decay"),
    ("n_training_steps", "training steps"),
)


@dataclass(frozen=True)
class CardInput:
    name: str
    note: str  # what the publisher said of the published model (`source`), not of these weights
    accuracy: dict  # the random suite's report (analysis.accuracy)
    pictures: tuple[str, ...]  # file names of the quanta maps (PNG)
    insert: str | None
    scale: str
    train_config: dict  # the train json's "Config"
    useful_nodes: int
    algo_nodes: int
    command: str
    source: str = ""  # the catalog name of the published model this one was regenerated from (default: name)


def percent(x) -> str:
    """A rate as a percentage with three significant digits ("-" when there is none)."""
    return "-" if x is None else f"{100 * x:.3g}%"


def accuracy_text(accuracy, failed: int) -> str:
    """An accuracy as a percentage to 4 decimals, more where that would round a failure away to 100%."""
    if accuracy is None:
        return "-"
    text = f"{100 * accuracy:.4f}%"
    return f"{100 * accuracy:.7f}%" if failed and text == "100.0000%" else text


def describe(name: str) -> str:
    mn = parse_name(name)
    what = (
        f"A {mn.n_digits}-digit {OP_WORDS[mn.op]} transformer: {mn.n_layers} layer(s), {mn.n_heads} attention "
        f"head(s), trained for {mn.steps:,} steps from seed {mn.seed:06d}"
    )
    if mn.grokfast:
        what += " with GrokFast"
    if mn.insert_mode:
        what += f", {INSERT_WORDS[mn.insert_mode]}"
    return what + "."


def _bound(row: dict):
    return row.get("failure_rate_upper_95", row.get("failure_rate"))


def _nines(report: dict, qname: str) -> str | None:
    chars = {"ADD": "+", "SUB": "-", "NEG": "-", "MUL": "*"}
    return (report.get("nines") or {}).get(chars.get(qname, "?"))


def _verdict(report: dict, qname: str, row: dict) -> str:
    nines = _nines(report, qname)
    words = nines if nines else "no nines verdict (it needs exactly 1,000,000 questions)"
    return f"{words}; failure rate below {percent(_bound(row))} at 95% confidence"


def verdict_section(c: CardInput) -> list[str]:
    """This model's own verdict, in words: what it answers correctly, per kind of question."""
    report = c.accuracy
    lines = []
    if c.scale != "full":
        lines += [
            f"This is a {c.scale}-scale regeneration: a shrunken recipe that tests the pipeline end to end. Its "
            "accuracy is not the published model's and is not meant to reach it.",
            "",
        ]
    right = accuracy_text(report.get("accuracy"), report["failed"])
    lines.append(f"On {report['tested']:,} random questions this model answered {right} correctly:")
    lines.append("")
    for qname, row in report["by_operation"].items():
        what = QUESTION_WORDS.get(qname, qname)
        if row["failed"] == 0:
            said = f"every one of {row['tested']:,} questions right"
        else:
            right = accuracy_text(row["accuracy"], row["failed"])
            said = f"{right} of {row['tested']:,} questions right ({row['failed']:,} wrong)"
        nines = _nines(report, qname)
        tail = f"; verdict: {nines}" if nines else ""
        lines.append(f"- {what}: {said}; failure rate below {percent(_bound(row))} at 95% confidence{tail}")
    return lines


def accuracy_section(report: dict) -> list[str]:
    lines = [
        f"Verified on {report['tested']:,} random questions (seed {report['suite'].get('seed')}, enrichment "
        f"{report['suite'].get('enrich')}), {report['failed']:,} failed.",
        "",
        "| operation | questions tested | questions failed | accuracy | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for qname, row in report["by_operation"].items():
        acc = accuracy_text(row["accuracy"], row["failed"])
        what = QUESTION_WORDS.get(qname, qname)
        lines.append(f"| {what} | {row['tested']:,} | {row['failed']:,} | {acc} | {_verdict(report, qname, row)} |")
    lines += [
        "",
        "The verdict counts the nines of the accuracy on exactly 1,000,000 questions of one operation: six 9s is "
        "at most 1 failure (99.9999%), five 9s at most 10, down to two 9s (at most 10,000). The failure rate's "
        "bound is the highest rate consistent with the failures seen, at 95% confidence.",
        "",
        "Per complexity class:",
        "",
        CLASS_WORDS,
        "",
        "| operation | complexity class | questions tested | questions failed | failure rate below (95% confidence) |",
        "|---|---|---:|---:|---:|",
    ]
    for qname, classes in report["by_class"].items():
        what = QUESTION_WORDS.get(qname, qname)
        for cname, c in classes.items():
            lines.append(f"| {what} | {cname} | {c['tested']:,} | {c['failed']:,} | {percent(_bound(c))} |")
    return lines


def model_card(c: CardInput) -> str:
    mn = parse_name(c.name)
    source = c.source or c.name
    tags = ["arithmetic", "mechanistic-interpretability", "transformer", "verified-arithmetic", mn.op]
    header = ["---", "library_name: pytorch", "tags:"] + [f"- {t}" for t in tags]
    header += [f"model_name: {c.name}", f"regeneration_scale: {c.scale}", "---", ""]
    cfg = c.train_config
    body = [f"# {c.name}", "", describe(c.name), "", "## Verdict of this model", ""] + verdict_section(c) + [""]
    if c.note:
        made = "" if source == c.name else f" (this model is `{c.name}`, made with the {c.scale}-scale recipe)"
        body += [
            "## The published model's note",
            "",
            f"What its publisher wrote of the published model `{source}`, whose recipe this model follows{made}. "
            "The published weights are not these: the note describes that model, not this one; this model's own "
            "verdict is above.",
            "",
            f"> {c.note}",
            "",
        ]
    body += ["## Accuracy", ""] + accuracy_section(c.accuracy) + [""]
    body += [
        "## Analysis",
        "",
        f"{c.useful_nodes} useful node(s) found by node ablation (`{c.name}_behavior.json`); {c.algo_nodes} of "
        f"them have an algorithmic purpose (`{c.name}_maths.json`).",
        "",
    ]
    for pic in c.pictures:
        view = pic.rsplit("_quanta_", 1)[-1].rsplit(".", 1)[0]
        body += [f"![quanta map: {view}]({pic})", ""]
    body += ["## How it was made", ""]
    if c.insert:
        body.append(f"- initialised from `{c.insert}`")
    for key, words in TRAIN_WORDS:
        if key in cfg:
            body.append(f"- {words}: {cfg[key]}")
    if "final_loss" in cfg:
        body.append(f"- final training loss: {cfg['final_loss']:.3g}")
    body += [
        "- verified with `varith verify --questions`, ablated with `varith ablate` (corrected means), searched "
        "with `varith algo`",
        "- `manifest.json` lists the sha256 of every file, the package versions, the seeds and the command line",
        "",
        "## Reproduce",
        "",
        "With this project installed (the `varith` command), from the folder it was made in:",
        "",
        "```",
        c.command,
        "```",
        "",
        f"It writes this hub folder as `OUT/hub/{c.name}/` (OUT is the `--out` folder) and the run as "
        f"`OUT/runs/{c.name}/`.",
        "",
    ]
    return "\n".join(header + body)
