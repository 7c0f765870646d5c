import io
import os

import numpy as np
import pytest

from arith.errors import InputError
from arith.questions import (
    ENRICH_CURRENT,
    ENRICH_HISTORIC,
    OpMix,
    exhaustive_block,
    random_block,
    training_batch,
)
from arith.vocab import (
    ADD,
    MUL,
    SUB,
    Layout,
    encode,
    line_batches,
    parse_question_lines,
    parse_questions,
    question_strings,
    string_to_tokens,
    tokens_to_strings,
)


def full(lines, n):
    return tokens_to_strings(encode(*parse_questions(lines, n)))


def test_published_examples_encode_exactly():
    assert full(["133357+182243", "123450-345670", "345*823", "099111-099111"], 6) == [
        "133357+182243=+0315600",
        "123450-345670=-0222220",
        "000345*000823=+0283935",
        "099111-099111=+0000000",
    ]
    assert full(["66666+66666"], 5) == ["66666+66666=+133332"]


def test_layout_positions_for_6_digits():
    lay = Layout(6)
    assert (lay.n_ctx, lay.n_question, lay.n_answer, lay.op_pos, lay.eq_pos, lay.answer_start) == (22, 14, 8, 6, 13, 14)
    assert lay.predict_slice == slice(13, 21)
    meanings = lay.position_meanings()
    assert meanings[0] == "D5" and meanings[6] == "OPR" and meanings[12] == "D'0" and meanings[14] == "A7"
    assert meanings[21] == "A0"
    assert Layout(6).position_meanings(pure_add=True)[14] == "+"


def test_twenty_digit_questions_do_not_overflow():
    a, b = "9" * 20, "9" * 20
    assert full([f"{a}+{b}"], 20) == [f"{a}+{b}=+1{'9' * 19}8"]
    assert full([f"{'0' * 19}1-{b}"], 20) == [f"{'0' * 19}1-{b}=-0{'9' * 19}8"]
    assert Layout(20).n_ctx == 64


@pytest.mark.parametrize("n", [1, 2, 3, 7, 12])
def test_answers_match_python_integers(n):
    rng = np.random.default_rng(n)
    x = rng.integers(0, 10, (500, n), dtype=np.uint8)
    y = rng.integers(0, 10, (500, n), dtype=np.uint8)
    op = rng.integers(0, 2, 500).astype(np.uint8)
    for q, s in zip(question_strings(x, y, op), tokens_to_strings(encode(x, y, op)), strict=True):
        a, sym, b = int(q[:n]), q[n], int(q[n + 1 :])
        v = a + b if sym == "+" else a - b
        assert s == f"{q}={'+' if v >= 0 else '-'}{abs(v):0{n + 1}d}"


def test_decode_encode_round_trip():
    text = "012345+678901=+0691246"
    assert tokens_to_strings(string_to_tokens(text)[None])[0] == text
    with pytest.raises(InputError, match="not in the vocabulary"):
        string_to_tokens("12a")


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("12x34", "expected <digits>"),
        ("1234567+1", "more than 6 digits"),
        ("", "empty question"),
        ("+12", "expected"),
        ("１２+34", "character '１' (U+FF11) is not an ASCII digit"),
        ("١٢+3", "character '١' (U+0661) is not an ASCII digit"),
        ("12+3\u0663", "character '٣' (U+0663) is not an ASCII digit"),
        ("12\u3000+3", "(U+3000) cannot be in a question"),
    ],
)
def test_malformed_questions_name_the_problem(bad, fragment):
    with pytest.raises(InputError) as err:
        parse_questions([bad], 6)
    assert fragment in str(err.value)


def test_block_k_depends_only_on_seed_and_k():
    a = random_block(7, 3, 6, ADD, 2000)
    b = random_block(7, 3, 6, ADD, 2000)
    c = random_block(7, 4, 6, ADD, 2000)
    for u, v in zip(a, b, strict=True):
        assert np.array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    # drawing other blocks (in any order) first changes nothing
    random_block(7, 9, 6, ADD, 2000)
    assert np.array_equal(random_block(7, 3, 6, ADD, 2000)[0], a[0])


def test_training_batches_are_addressable_by_step():
    mix = OpMix(add=34, sub=66)
    first = [training_batch(372001, k, 6, mix)[0] for k in range(5)]
    again = [training_batch(372001, k, 6, mix)[0] for k in reversed(range(5))][::-1]
    assert all(np.array_equal(u, v) for u, v in zip(first, again, strict=True))


def test_operation_mix_per_batch_follows_the_name():
    mix = OpMix(add=20, sub=80)
    ops = np.array([training_batch(1, k, 6, mix)[2][0] for k in range(2000)])
    assert set(np.unique(training_batch(1, 0, 6, mix)[2])) <= {ADD, SUB}  # one operation per batch
    assert 0.76 < (ops == SUB).mean() < 0.84


def _sum9_fraction(x, y):
    return ((x.astype(int) + y) == 9).mean(axis=(1, 2))


def test_enrichment_rates_current_and_historic():
    def enriched_share(rule):
        blocks = [random_block(5, k, 6, ADD, 512, rule, sub_batch=512) for k in range(600)]
        x = np.stack([b[0] for b in blocks])
        y = np.stack([b[1] for b in blocks])
        return (_sum9_fraction(x, y) > 0.3).mean()  # uniform digits give ~10% sum-9 cells, enriched ~46%

    assert 0.35 < enriched_share(ENRICH_CURRENT) < 0.45
    assert 0.55 < enriched_share(ENRICH_HISTORIC) < 0.65


def test_subtraction_enrichment_biases_towards_negative_answers():
    from arith.vocab import question_class

    x, y, op = random_block(11, 0, 6, SUB, 100_000)
    neg = (question_class(x, y, op) == 2).mean()
    x2, y2, op2 = random_block(11, 0, 6, SUB, 100_000, "none")
    assert neg > (question_class(x2, y2, op2) == 2).mean() + 0.02


def test_multiplication_batches_zero_the_top_half():
    x, y, op = random_block(3, 0, 6, MUL, 100)
    assert (x[:, :3] == 0).all() and (y[:, :3] == 0).all() and (op == MUL).all()


def test_exhaustive_enumeration_covers_every_pair_once():
    x, y, op = exhaustive_block(2, SUB, 0, 10_000)
    pairs = x.astype(int) @ [10, 1] * 100 + y.astype(int) @ [10, 1]
    assert sorted(pairs.tolist()) == list(range(10_000))
    assert len(exhaustive_block(2, SUB, 9990, 20_000)[0]) == 10  # the last block is short


def test_grokfast_generator_mixes_operations_inside_a_batch():
    x, y, op = training_batch(5, 0, 6, OpMix(add=20, sub=30, mul=50), size=64, within_batch=True)
    assert len(op) == 64
    assert (op[:13] == ADD).all() and (op[13:32] == SUB).all() and (op[32:] == MUL).all()


def test_only_ascii_digits_reach_the_digit_grid():
    x, y, op = parse_questions([" 12 + 034 =+0046", "000000012-3\r"], 6)
    assert question_strings(x, y, op) == ["000012+000034", "000012-000003"]


def test_a_batch_of_lines_parses_up_to_the_first_bad_one():
    parsed = parse_question_lines(["12+3", "", "  ", "4*5", "7/8", "1+1"], 2, first_line=101)
    assert parsed.blank == [False, True, True, False]
    assert question_strings(parsed.x, parsed.y, parsed.op) == ["12+03", "04*05"]
    assert isinstance(parsed.error, InputError) and str(parsed.error).startswith("line 105: question '7/8'")
    # as arguments, an empty question is an error
    parsed = parse_question_lines(["12+3", ""], 2)
    assert "argument 2 is an empty question" in str(parsed.error) and len(parsed.op) == 1


def test_line_batches_yield_what_has_arrived_without_waiting_for_the_end():
    read_fd, write_fd = os.pipe()
    try:
        with os.fdopen(read_fd, "rb", buffering=0) as reader:
            batches = line_batches(reader, max_lines=4)
            os.write(write_fd, b"1+1\n2+2\n3+")  # the writer is still open, mid-line
            assert next(batches) == ["1+1", "2+2"]
            os.write(write_fd, b"3\n" + b"".join(b"%d+0\n" % i for i in range(9)) + b"tail")
            os.close(write_fd)
            write_fd = None
            rest = list(batches)
    finally:
        if write_fd is not None:
            os.close(write_fd)
    assert all(len(b) <= 4 for b in rest)
    assert sum(rest, []) == ["3+3"] + [f"{i}+0" for i in range(9)] + ["tail"]
    # a stream without a file descriptor: plain batches
    assert list(line_batches(io.StringIO("a\nb\nc\n"), max_lines=2)) == [["a", "b"], ["c"]]


def test_a_line_over_a_mebibyte_is_refused_after_the_lines_before_it():
    read_fd, write_fd = os.pipe()
    import threading

    big = b"12+34\n" + b"9" * (2 << 20) + b"\n"
    writer = threading.Thread(target=lambda: (os.write(write_fd, big), os.close(write_fd)))
    writer.start()
    with os.fdopen(read_fd, "rb", buffering=0) as reader:
        batches = line_batches(reader)
        assert next(batches) == ["12+34"]
        with pytest.raises(InputError, match="line 2: longer than 1,048,576 bytes") as err:
            next(batches)
    writer.join()
    assert len(str(err.value)) < 200
