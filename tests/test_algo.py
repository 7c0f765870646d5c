"""Algorithm sub-task search (issue 10): task questions, batched interventions, filters, the search, the store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import algo
from analysis import algo_tasks as at
from analysis.ablate import Node
from analysis.impact import intervention_impact
from arith.model import ModelShape, Transformer
from arith.vocab import ADD, SUB, Layout
from tests.conftest import DEMO_NAME, varith, worker_killed_when


def _case(task: at.Task, n: int, d: int, j: int = 0):
    t = task.tests(n, d)[j]
    exp = None if t.expected is None else at.answer_string(t.expected, n)
    return t.store, t.clean, exp


# ----------------------------------------------------------------------------------------------- F8.3 numbers


def test_task_questions_and_answers_are_the_spec_numbers():
    # n=5 unit test of SS, d=4: store 25222+44444, clean 34633+55555=90188, expected 80188
    assert _case(at.SS, 5, 4) == ((25222, 44444), (34633, 55555), "+080188")
    assert at.SS.tag(4) == "A3.SS" and at.SS.tests(5, 4)[0].impact == "A4"
    # ND d=3 (n=6): store 033333-111111, clean 099999-444444 = -344445, expected -347445
    assert _case(at.ND, 6, 3) == ((33333, 111111), (99999, 444444), "-0347445")
    assert _case(at.ND, 6, 3, 1) == ((66666, 222222), (99999, 333333), "-0235334")
    # SA: digit d of 999999 -> 3, of 666666 -> 8
    assert _case(at.SA, 6, 2) == ((222222, 111111), (555555, 444444), "+0999399")
    assert _case(at.SA, 6, 2, 1) == ((222222, 666666), (555555, 111111), "+0666866")
    # SC: the 2nd operand's digit d-1 set to 9; expected clean + 10^d
    assert _case(at.SC, 6, 3) == ((222222, 666966), (333333, 555555), "+0889888")
    assert at.SC.tag(3) == "A2.SC"
    # ST: the 2nd operand's digit f set to 9; clean 333333+666666; the weak rule
    st = at.ST.tests(6, 1)[0]
    assert (st.store, st.clean, st.rule) == ((222222, 777797), (333333, 666666), at.CHANGED)
    # MD: 999999-444444 digit d -> 2; 999999-333333 digit d -> 4
    assert _case(at.MD, 6, 0) == ((333333, 111111), (999999, 444444), "+0555552")
    assert _case(at.MD, 6, 0, 1) == ((666666, 222222), (999999, 333333), "+0666664")
    # MB: 222222 - (111111 with digit d-1 = 3); clean 777777-444444; expected clean - 10^d
    assert _case(at.MB, 6, 1) == ((222222, 111113), (777777, 444444), "+0333323")
    # MT: 555555-000000 into 222222 - (222222 + 2*10^f)
    mt = at.MT.tests(6, 2)[0]
    assert (mt.store, mt.clean, mt.rule) == ((555555, 0), (222222, 222422), at.CHANGED)
    # NB: 022222 - (111111 with digit d-1 = 3); clean 077777-444444 = -366667; expected clean - 10^d
    assert _case(at.NB, 6, 4) == ((22222, 113111), (77777, 444444), "-0376667")
    # GT: SUB = (6L, 2L+1), NEG = (L, 2L+1): store SUB into NEG gives "+", store NEG into SUB gives "-"
    g1, g2 = at.GT.tests(6, 2)
    assert (g1.store, g1.clean, g1.sign, g2.store, g2.clean, g2.sign) == ((600, 201), (100, 201), "+") + (
        (100, 201),
        (600, 201),
        "-",
    )
    assert [at.GT.tag(2), at.ST.tag(4), at.MT.tag(3), at.NB.tag(1), at.OPR.tag(3)] == [
        "A2.GT",
        "A4.ST",
        "A3.MT",
        "A0.NB",
        "OPR",
    ]
    # every strong test's expected answer differs from the clean answer exactly at its impact digit (n = 5, 6;
    # for d = n the borrow tasks' expected answers cross zero, as the reference's do)
    for n in (5, 6):
        for task in at.ALL:
            for d in (d for d in task.digits(n) if d < n):
                for t in task.tests(n, d):
                    if t.rule != at.EXACT:
                        continue
                    clean = t.clean[0] + t.clean[1] if task.op == ADD else t.clean[0] - t.clean[1]
                    a, b = at.answer_string(clean, n), at.answer_string(t.expected, n)
                    diff = [Layout(n).answer_names()[i] for i in range(n + 2) if a[i] != b[i]]
                    assert diff == [t.impact], (task.code, n, d, a, b)


def test_notebook_order_and_filters_per_operation():
    assert [t.code for t in at.notebook_order((ADD,))] == ["SS", "SC", "SA", "ST"]
    mixed = ["SS", "SC", "SA", "ST", "MD", "MB", "MT", "OPR", "SGN", "ND", "NB", "GT"]
    assert [t.code for t in at.notebook_order((ADD, SUB))] == mixed
    f = at.SA.filter(6, 5)  # D5 = P0, D'5 = P7, impact A5, from the first answer digit (P15)
    assert (f.attends, f.impact, f.min_pos) == ((0, 7), 5, 15)
    f = at.ST.filter(6, 2)  # operator (P6) through the sign (P14)
    assert (f.attends, f.min_pos, f.max_pos, f.math) == ((3, 10), 6, 14, "Math.Add")
    assert at.SGN.filter(6, 0).attends == (14,) and at.OPR.filter(6, 0).attends == (6,)


# ----------------------------------------------------------------------------------------------- F8.4 filters


def _rec(pos, layer, num, tags, head=True):
    return {"position": pos, "layer": layer, "is_head": head, "num": num, "tags": tags}


def test_compat_and_default_filters_differ_as_the_reference_does():
    tags = ["Fail%:3", "Impact:A65", "Math.Add:S12", "Attn:P12=60", "Attn:P7=35", "Attn:P0=4"]
    # attention: compat matches substrings (P1 in "P12") and ignores the 10% threshold
    assert at.attends(tags, 1, compat=True) and not at.attends(tags, 1, compat=False)
    assert at.attends(tags, 0, compat=True) and not at.attends(tags, 0, compat=False)
    assert at.attends(tags, 12, compat=True) and at.attends(tags, 12, compat=False)
    assert not at.attends(tags, 3, compat=True) and not at.attends(tags, 3, compat=False)
    # impact: compat only matches the highest impacted digit
    assert at.impacts(tags, 6, compat=True) and at.impacts(tags, 6, compat=False)
    assert not at.impacts(tags, 5, compat=True) and at.impacts(tags, 5, compat=False)
    # so SA's A5 candidate (n=6: attends P0 and P7) differs: compat rejects it (impact), default too (P0 at 4%)
    node = _rec(15, 0, 1, ["Impact:A65", "Attn:P0=55", "Attn:P7=40"])
    assert at.SA.filter(6, 5).matches(node, compat=False) and not at.SA.filter(6, 5).matches(node, compat=True)
    node = _rec(16, 0, 1, ["Impact:A4", "Attn:P1=5", "Attn:P18=50", "Attn:P8=40"])  # D4 = P1, D'4 = P8
    assert at.SA.filter(6, 4).matches(node, compat=True) and not at.SA.filter(6, 4).matches(node, compat=False)
    assert not at.SA.filter(6, 4).matches(_rec(16, 0, 0, node["tags"], head=False), compat=True)  # heads only


# ------------------------------------------------------------------------------------------------ the search


def _results(plan: algo.TaskPlan, strong: set, weak: set = frozenset(), impact: str = "A5") -> algo.UnitResults:
    units = [u.nodes for u in plan.units]
    return algo.UnitResults(
        np.array([u in strong for u in units]), np.array([u in weak for u in units]), [impact] * len(units)
    )


def test_search_tags_singles_then_pairs_weak_suffix_and_cleans_up_opr_sgn():
    n = 6
    sa = ["Fail%:5", "Impact:A5", "Attn:P0=50", "Attn:P7=45"]
    records = [
        _rec(6, 0, 0, ["Impact:A6", "Attn:P6=90"]),  # OPR only: loses it in the clean-up
        _rec(14, 0, 0, ["Impact:A7", "Attn:P6=50", "Attn:P14=50"]),  # OPR and SGN: keeps both
        _rec(15, 0, 0, sa),
        _rec(15, 0, 1, sa),
        _rec(15, 1, 2, sa),
        _rec(15, 0, 0, ["Impact:A5"], head=False),
    ]
    tasks = (at.SA, at.OPR, at.SGN)
    plans = algo.plan(records, tasks, n, compat=False)
    (sa_plan,) = plans
    assert sorted(u.nodes for u in sa_plan.units) == [(2,), (2, 3), (3,), (4,)]  # pairs only in one layer
    assert sa_plan.n_trials == 2 * len(sa_plan.units)  # two tests each

    def tags(strong, weak=frozenset()):
        out = algo.search(records, tasks, plans, {"SA": _results(sa_plan, strong, weak)}, n, False)
        return [r["tags"] for r in out]

    base = [[], ["Algo:OPR", "Algo:SGN"]]
    # a single passes: tagged; the pair is not tried
    assert tags({(4,), (2, 3)}) == base + [[], [], ["Algo:A5.SA"], []]
    # no single passes: both heads of a passing pair
    assert tags({(2, 3)}) == base + [["Algo:A5.SA"], ["Algo:A5.SA"], [], []]
    # nothing strong: the weak pass, with the intervened impact appended
    assert tags(set(), {(3,)}) == base + [[], ["Algo:A5.SA.A5"], [], []]
    assert tags(set()) == base + [[], [], [], []]
    # the maths records: every useful node, Algo tags only, in the behaviour order
    out = algo.search(records, tasks, plans, {"SA": _results(sa_plan, {(4,)})}, n, False)
    assert [(r["position"], r["layer"], r["is_head"], r["num"]) for r in out] == [
        (r["position"], r["layer"], r["is_head"], r["num"]) for r in records
    ]


# ------------------------------------------------------------------------------------------------ interventions


def _random_model(n: int, layers: int = 2, seed: int = 0) -> Transformer:
    shape = ModelShape(n_layers=layers, n_heads=3, n_ctx=Layout(n).n_ctx, d_model=32, d_head=8, d_mlp=64)
    model = Transformer(shape)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model.eval()


def test_batched_interventions_equal_one_patched_forward_each():
    n = 3
    layout = Layout(n)
    model = _random_model(n)
    tests = at.SA.tests(n, 1) + at.SC.tests(n, 2)
    store = algo.question_tokens([t.store for t in tests], ADD, n)
    clean = algo.question_tokens([t.clean for t in tests], ADD, n)
    heads = [Node.head(p, layer, h) for p in (6, 9, 11) for layer in (0, 1) for h in range(3)]
    units = [(h,) for h in heads] + [
        (a, b) for i, a in enumerate(heads) for b in heads[i + 1 :] if a.layer == b.layer and a.position <= b.position
    ]
    rows = [(u, j) for u in units for j in range(len(tests))]
    trials = algo.Trials.of([u for u, _ in rows], [j for _, j in rows])
    batched = algo.intervened_answers(model, layout, store, clean, trials, rows=37)  # several row chunks
    plain = np.stack(
        [algo.intervened_answer_plain(model, layout, store[j : j + 1], clean[j : j + 1], u) for u, j in rows]
    )
    assert np.array_equal(batched, plain)
    unpatched = model(clean, logit_positions=layout.predict_slice).argmax(-1).numpy()
    assert (batched != unpatched[trials.test]).any()  # the patches do change answers
    # storing the clean question itself changes nothing; a head whose W_O is zero changes nothing either
    same = algo.intervened_answers(model, layout, clean, clean, trials)
    assert np.array_equal(same, unpatched[trials.test])
    with torch.no_grad():
        model.blocks[1].attn.W_O[2] = 0
    only = [r for r, (u, _) in enumerate(rows) if all(nd.layer == 1 and nd.num == 2 for nd in u)]
    sub = algo.Trials(trials.test[only], trials.layer[only], trials.pos[only], trials.head[only])
    unpatched = model(clean, logit_positions=layout.predict_slice).argmax(-1).numpy()
    assert np.array_equal(algo.intervened_answers(model, layout, store, clean, sub), unpatched[sub.test])


def test_pass_rules_and_impact_strings():
    n = 6
    layout = Layout(n)
    tests = at.SA.tests(n, 2)
    expected = np.stack([np.frombuffer(at.answer_string(t.expected, n).encode(), np.uint8) for t in tests])
    expected = np.where(expected == ord("+"), 10, expected - ord("0")).astype(np.uint8)
    wrong = expected.copy()
    wrong[1, 1] = (wrong[1, 1] + 1) % 10  # A6 wrong as well
    pred = np.concatenate([expected, wrong])
    oc = algo.outcomes(pred, tests, np.array([0, 1, 0, 1]), ADD, n)
    assert oc.ok.tolist() == [True, True, True, False]
    assert oc.impact_ok.tolist() == [True, True, True, False]
    assert intervention_impact(oc.changed[3], layout, pure_add=False) == "A62"
    sign = np.zeros(n + 2, bool)
    sign[0] = True
    assert intervention_impact(sign, layout, pure_add=False) == "A7"
    assert intervention_impact(sign | oc.changed[3], layout, pure_add=True) == "A62+"
    assert intervention_impact(np.zeros(n + 2, bool), layout, pure_add=False) == "(none)"


# ------------------------------------------------------------------------------------------------ on a trained model


@pytest.fixture(scope="module")
def analysed(demo_model, tmp_path_factory) -> Path:
    """A copy of the demo run with its behaviour file (ablation in this process)."""
    from jobs.stages import ablate as ablation

    folder = tmp_path_factory.mktemp("algo") / DEMO_NAME
    folder.mkdir()
    for f in Path(demo_model).parent.glob(f"{DEMO_NAME}*"):
        if f.is_file() and f.suffix in (".pth", ".json") and "behavior" not in f.name and "maths" not in f.name:
            shutil.copy(f, folder / f.name)
    weights = folder / f"{DEMO_NAME}.pth"
    job = ablation.job_for(weights)
    settings = ablation.Settings(progress=False)
    ablation.write_outputs(job, settings, ablation.analyse(None, job, settings), pictures=False)
    return weights


def test_search_on_the_trained_demo_model_finds_sa_nodes(analysed):
    from analysis.behavior import load_records
    from jobs.stages import algo as algo_run

    job = algo_run.job_for(analysed)
    records = algo_run.analyse(None, job, algo_run.Settings(progress=False))
    behavior = load_records(analysed.with_name(f"{DEMO_NAME}_behavior.json"))
    assert [{k: v for k, v in r.items() if k != "tags"} for r in records] == [
        {k: v for k, v in r.items() if k != "tags"} for r in behavior
    ]
    assert all(t.startswith("Algo:") for r in records for t in r["tags"])
    assert all(not r["tags"] for r in records if not r["is_head"])  # only heads are ever tagged
    sa = {t for r in records for t in r["tags"] if ".SA" in t}
    assert {"Algo:A0.SA", "Algo:A1.SA"} <= sa, records
    # every answer digit has an SA node at or before the position predicting it (the --check claims)
    claims = dict(algo.check_claims(records, job.model.ops, job.model.n_digits))
    assert claims["A0.SA at or before P8"] and claims["A1.SA at or before P7"]
    # the store holds the answers: the reduction alone gives the same records; batched equals plain per trial
    assert algo_run.reduce_store(job, algo_run.Settings()) == records
    from arith.weights import load_model

    model = load_model(analysed, job.model.shape)
    nodes = [algo.record_node(r) for r in job.records]
    plans = algo.plan(list(job.records), at.notebook_order(job.model.ops), 2, compat=False)
    for tp in plans[:3]:
        pred = algo.task_answers(model, job.model.layout, tp, nodes)
        store = algo.question_tokens([t.store for t in tp.tests], ADD, 2)
        clean = algo.question_tokens([t.clean for t in tp.tests], ADD, 2)
        for r, (u, j) in enumerate(zip(tp.unit, tp.test, strict=True)):
            unit = tuple(nodes[i] for i in tp.units[u].nodes)
            plain = algo.intervened_answer_plain(model, job.model.layout, store[j : j + 1], clean[j : j + 1], unit)
            assert np.array_equal(pred[r], plain)


def test_dask_with_a_killed_worker_gives_the_in_process_result(analysed, tmp_path):
    from hpc.cluster import ClusterSpec, open_cluster
    from jobs.stages import algo as algo_run

    settings = algo_run.Settings(progress=False)
    here = algo_run.analyse(None, algo_run.job_for(analysed, store=tmp_path / "here.zarr"), settings)
    job = algo_run.job_for(analysed, store=tmp_path / "dask.zarr")
    spec = ClusterSpec(kind="local", workers=2, torch_threads=1, preload=("jobs.stages.algo",))
    with open_cluster(spec) as handle:
        done = tmp_path / "dask.zarr" / "algo" / "corrected" / "trials" / "done" / "c"
        with worker_killed_when(handle.client, done):
            there = algo_run.analyse(handle.client, job, settings, handle.task_resources)
    assert there == here


def test_damaged_block_is_redone(analysed, tmp_path, capsys):
    from jobs.stages import algo as algo_run

    settings = algo_run.Settings(progress=False)
    job = algo_run.job_for(analysed, store=tmp_path / "s.zarr")
    first = algo_run.analyse(None, job, settings)
    passed = tmp_path / "s.zarr" / "algo" / "corrected" / "trials" / "passed" / "c" / "2" / "0"
    passed.write_bytes(b"garbage")
    capsys.readouterr()
    assert algo_run.analyse(None, job, settings) == first
    assert "block 2 failed its checks" in capsys.readouterr().err


def test_cli_runs_the_ablation_first_and_checks(demo_model, tmp_path):
    folder = tmp_path / DEMO_NAME
    folder.mkdir()
    for suffix in (".pth", "_train.json"):
        shutil.copy(Path(demo_model).with_name(DEMO_NAME + suffix), folder / (DEMO_NAME + suffix))
    proc = varith("algo", str(folder / f"{DEMO_NAME}.pth"), "--cluster", "none", "--check", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    behavior = json.loads((folder / f"{DEMO_NAME}_behavior.json").read_text())
    maths = json.loads((folder / f"{DEMO_NAME}_maths.json").read_text())
    assert len(maths) == len(behavior) > 0
    assert "holds: A0.SA at or before P8" in proc.stdout
    assert "useful nodes have an algorithmic purpose" in proc.stdout
    if any(r["tags"] for r in maths):  # the picture of the algorithm purposes sits beside the json
        for suffix in ("svg", "png"):
            assert (folder / f"{DEMO_NAME}_quanta_algo.{suffix}").is_file()
    # --reduce-only rebuilds the maths file from the store alone; a store made from another behaviour is refused
    (folder / f"{DEMO_NAME}_maths.json").unlink()
    weights = str(folder / f"{DEMO_NAME}.pth")
    proc = varith("algo", weights, "--reduce-only", "--check")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((folder / f"{DEMO_NAME}_maths.json").read_text()) == maths
    assert "holds: A0.SA at or before P8" in proc.stdout
    proc = varith("algo", weights, "--reduce-only", "--store", str(tmp_path / "empty.zarr"))
    assert proc.returncode == 2 and "no algorithm search results there" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # the behaviour file is reused as it is, with a note when the ablation was made the other way
    proc = varith("algo", str(folder / f"{DEMO_NAME}.pth"), "--cluster", "none", "--compat", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert f"made by `varith ablate {folder / DEMO_NAME}.pth`; run `varith ablate" in proc.stderr, proc.stderr
    assert json.loads((folder / f"{DEMO_NAME}_maths.json").read_text()) is not None
    proc = varith("algo", str(folder / "missing.pth"), "--cluster", "none")
    assert proc.returncode == 2 and "no such weights file" in proc.stderr


def _synthetic_records(layout: Layout, layers: int, heads: int) -> list[dict]:
    """Every head at every position useful; the heads of one (position, layer) attend D_a and D'_a with
    a = (position + layer) mod n, and the operator and sign a little; impact on every digit."""
    n = layout.n_digits
    digits = "".join(str(d) for d in range(n + 1, -1, -1))
    out = []
    for p in range(layout.n_ctx):
        for layer in range(layers):
            a = (p + layer) % n
            attn = [f"Attn:P{n - 1 - a}=45", f"Attn:P{2 * n - a}=30", f"Attn:P{n}=12", f"Attn:P{2 * n + 2}=12"]
            for h in range(heads):
                tags = ["Fail%:5", f"Impact:A{digits}", "Math.Add:S012", "Math.Sub:M012", *attn]
                out.append(_rec(p, layer, h, tags))
    return out


def test_mixed_model_search_through_the_store_equals_in_process(tmp_path):
    """Every subtraction task too (a random 2-layer mixed model, synthetic behaviour): the stored blocks and
    the reduction give what the in-process search gives."""
    from jobs.stages import algo as algo_run

    n, name = 2, "mix_d2_l2_h3_t300_s100001"
    layout = Layout(n)
    model = _random_model(n, layers=2, seed=3)
    folder = tmp_path / name
    folder.mkdir()
    torch.save(model.state_dict(), folder / f"{name}.pth")
    records = _synthetic_records(layout, 2, 3)
    (folder / f"{name}_behavior.json").write_text(json.dumps(records))
    job = algo_run.job_for(folder / f"{name}.pth")
    assert job.model.ops == (ADD, SUB)
    stored = algo_run.analyse(None, job, algo_run.Settings(progress=False))
    here = algo.run_search(model, records, (ADD, SUB), n, compat=False, pure_add=False)
    assert stored == here
    plans = algo.plan(records, at.notebook_order((ADD, SUB)), n, compat=False)
    assert [tp.code for tp in plans] == ["SS", "SC", "SA", "ST", "MD", "MB", "MT", "ND", "NB", "GT"]
    assert all(tp.n_trials for tp in plans)
    tags = {t for r in stored for t in r["tags"]}
    assert "Algo:OPR" in tags and "Algo:SGN" in tags  # heads attending both keep both
    # compat filters see other candidates (P1 in "P12" ...), so the store keeps the two modes apart
    compat = algo_run.analyse(None, job, algo_run.Settings(compat=True, progress=False))
    assert compat == algo.run_search(model, records, (ADD, SUB), n, compat=True, pure_add=False)
    assert (folder / f"{name}.zarr" / "algo" / "compat" / "trials").is_dir()


def test_check_claims_for_subtraction():
    n = 3  # sign P8, A3 P9, A2 P10, A1 P11, A0 P12; A{d} is predicted at P(11 - d)
    md = [_rec(11 - d, 0, 0, [f"Algo:A{d}.MD"]) for d in range(n)]
    mt = [_rec(7, 0, 1, ["Algo:A1.MT"]), _rec(5, 0, 1, ["Algo:A2.MT.A21"])]  # earlier as the digit rises
    claims = dict(algo.check_claims(md + mt, (SUB,), n))
    assert all(claims.values()), claims
    late = [_rec(12, 0, 0, ["Algo:A0.MD"])] + md[1:]  # A0.MD only after the position predicting A0
    swapped = [_rec(5, 0, 1, ["Algo:A1.MT"]), _rec(7, 0, 1, ["Algo:A2.MT"])]
    claims = dict(algo.check_claims(late + swapped, (SUB,), n))
    assert not claims["A0.MD at or before P11"] and claims["A1.MD at or before P10"]
    assert not claims["MT positions get earlier as the digit rises"] and claims["A2.MT at or before P8"]
