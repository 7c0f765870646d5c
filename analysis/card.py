"""The model card (`README.md`) of a hub folder, in the Hugging Face Hub's format: a YAML metadata header, then
what the model is, its accuracy per operation and complexity class with the verdict and its 95% bound, the
quanta maps, how it was made and the command that makes it again."""

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


@dataclass(frozen=True)
class CardInput:
    name: str
    note: str  # what the publisher said of it
    accuracy: dict  # the random suite's report (analysis.accuracy)
    pictures: tuple[str, ...]  # file names of the quanta maps (PNG)
    insert: str | None
    scale: str
    train_config: dict  # the train json's "Config"
    useful_nodes: int
    algo_nodes: int
    command: str


def _fmt_bound(x) -> str:
    return "-" if x is None else f"{x:.2e}"


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


def _verdict(report: dict, op_char: str, row: dict) -> str:
    nines = (report.get("nines") or {}).get(op_char)
    bound = _fmt_bound(row.get("failure_rate_upper_95"))
    words = nines if nines else "no nines verdict (it is defined for exactly 1,000,000 questions)"
    return f"{words}; failure rate below {bound} at 95% confidence"


def accuracy_section(report: dict) -> list[str]:
    lines = [
        f"Verified on {report['tested']:,} random questions (seed {report['suite'].get('seed')}, enrichment "
        f"{report['suite'].get('enrich')}), {report['failed']:,} failed.",
        "",
        "| operation | tested | failed | accuracy | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    chars = {"ADD": "+", "SUB": "-", "NEG": "-", "MUL": "*"}
    for qname, row in report["by_operation"].items():
        acc = f"{100 * row['accuracy']:.4f}%"
        verdict = _verdict(report, chars.get(qname, "?"), row)
        lines.append(f"| {qname} | {row['tested']:,} | {row['failed']:,} | {acc} | {verdict} |")
    lines += ["", "Per complexity class (upstream_spec 9):", "", "| class | tested | failed | 95% bound |"]
    lines.append("|---|---:|---:|---:|")
    for classes in report["by_class"].values():
        for cname, c in classes.items():
            bound = _fmt_bound(c.get("failure_rate_upper_95", c.get("failure_rate")))
            lines.append(f"| {cname} | {c['tested']:,} | {c['failed']:,} | {bound} |")
    return lines


def model_card(c: CardInput) -> str:
    mn = parse_name(c.name)
    tags = ["arithmetic", "mechanistic-interpretability", "transformer", "verified-arithmetic", mn.op]
    header = ["---", "library_name: pytorch", "tags:"] + [f"- {t}" for t in tags]
    header += [f"model_name: {c.name}", f"regeneration_scale: {c.scale}", "---", ""]
    cfg = c.train_config
    body = [f"# {c.name}", "", describe(c.name), ""]
    if c.note:
        body += [f"Published note: {c.note}", ""]
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
    for key in ("d_model", "d_head", "d_mlp_multiplier", "batch_size", "lr", "weight_decay", "n_training_steps"):
        if key in cfg:
            body.append(f"- {key}: {cfg[key]}")
    if "final_loss" in cfg:
        body.append(f"- final loss: {cfg['final_loss']:.3g}")
    body += [
        "- verified with `varith verify --questions`, ablated with `varith ablate` (corrected means), searched "
        "with `varith algo`",
        "- `manifest.json` lists the sha256 of every file, the package versions, the seeds and the command line",
        "",
        "## Reproduce",
        "",
        "```",
        c.command,
        "```",
        "",
    ]
    return "\n".join(header + body)
