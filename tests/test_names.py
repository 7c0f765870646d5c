"""Model-name grammar (docs/reference_facts.md F1.1) and the published names (F1.2)."""

from __future__ import annotations

import dataclasses

import pytest

from arith.errors import InputError
from arith.names import (
    DEFAULT_INSERT,
    INSERT_OF,
    PICKER_CHOICE,
    PICKER_INSERT,
    PUBLISHED,
    PUBLISHED_2024,
    ZOO,
    ZOO_ADD,
    ZOO_INS,
    ZOO_MIX,
    ZOO_SUB,
    ModelName,
    default_insert,
    format_pair,
    parse_name,
    parse_pair,
)


def test_the_53_zoo_names_round_trip():
    assert PUBLISHED == ZOO and len(ZOO) == 53 and len(set(ZOO)) == 53
    assert (len(ZOO_ADD), len(ZOO_SUB), len(ZOO_MIX), len(ZOO_INS)) == (19, 8, 10, 16)
    assert len(PUBLISHED_2024) == 13 and set(PUBLISHED_2024) <= set(ZOO)
    for name in ZOO:
        parsed = parse_name(name)
        assert parsed.format() == name
        assert str(parsed) == name
        assert parse_name(parsed.format()) == parsed
        assert 5 <= parsed.n_digits <= 20 and 1 <= parsed.n_layers <= 4 and parsed.n_heads in (3, 4)
    shapes = {(m.n_digits, m.n_layers, m.grokfast) for m in map(parse_name, ZOO)}
    assert {(20, 2, False), (5, 1, False), (6, 4, False), (10, 2, True), (10, 3, True)} <= shapes
    assert {parse_name(n).op for n in ZOO_ADD} == {"add"} and {parse_name(n).op for n in ZOO_SUB} == {"sub"}
    assert all(parse_name(n).op == "mix" and parse_name(n).insert_mode == 0 for n in ZOO_MIX)


def test_fields_of_the_main_focus_model():
    m = parse_name("ins1_mix_d6_l3_h4_t40K_s372001")
    assert (m.insert_mode, m.op, m.n_digits, m.n_layers, m.n_heads, m.steps, m.grokfast, m.seed) == (
        1, "mix", 6, 3, 4, 40_000, False, 372001
    )  # fmt: skip
    m = parse_name("add_d5_l1_h3_t30K_s372001")
    assert (m.insert_mode, m.op, m.n_digits, m.n_layers, m.n_heads, m.steps) == (0, "add", 5, 1, 3, 30_000)


@pytest.mark.parametrize(
    "name, add, sub, mult",
    [
        ("add_d6_l2_h3_t15K_s372001", 100, 0, 0),
        ("sub_d6_l2_h3_t30K_s372001", 0, 100, 0),
        ("mul_d6_l3_h4_t75K_s372001", 0, 0, 100),
        ("mix_d6_l3_h4_t40K_s372001", 34, 66, 0),
        ("ins1_mix_d6_l3_h4_t40K_s372001", 20, 80, 0),
        ("ins3_mix_d6_l4_h3_t40K_s372001", 20, 80, 0),
        ("mas_d6_l3_h4_t75K_s371793", 20, 30, 50),
        ("ins1_mas_d6_l5_h4_t250K_gf_s371793", 20, 30, 50),
    ],
)
def test_training_mix_percentages(name, add, sub, mult):
    m = parse_name(name)
    assert (m.perc_add, m.perc_sub, m.perc_mult) == (add, sub, mult)


def test_mas_and_grokfast_round_trip():
    # the reference formatter would print a mas model as mix; ours keeps the name
    m = parse_name("ins1_mas_d6_l5_h4_t250K_gf_s371793")
    assert m.op == "mas" and m.grokfast and m.steps == 250_000 and m.n_layers == 5
    assert m.format() == "ins1_mas_d6_l5_h4_t250K_gf_s371793"
    assert parse_name("add_d10_l2_h3_t40K_gf_s572091").format() == "add_d10_l2_h3_t40K_gf_s572091"


def test_sub_thousand_steps_extension():
    m = parse_name("add_d2_l1_h1_t300_s000001")
    assert m.steps == 300 and m.seed == 1
    assert m.format() == "add_d2_l1_h1_t300_s000001"
    assert dataclasses.replace(m, steps=999).format() == "add_d2_l1_h1_t999_s000001"
    assert dataclasses.replace(m, steps=1000).format() == "add_d2_l1_h1_t1K_s000001"
    with pytest.raises(InputError, match="whole number of thousands"):
        dataclasses.replace(m, steps=1500)


def test_seed_is_zero_padded_and_with_seed_changes_only_the_seed():
    m = parse_name("add_d6_l2_h3_t15K_s372001")
    other = m.with_seed(42)
    assert other.format() == "add_d6_l2_h3_t15K_s000042"
    assert dataclasses.replace(other, seed=m.seed) == m
    assert parse_name(other.format()) == other
    with pytest.raises(InputError, match="6 digits"):
        m.with_seed(1_000_000)


def test_digit_range():
    assert parse_name("add_d20_l2_h3_t80K_s372001").n_digits == 20
    assert parse_name("add_d1_l1_h1_t1K_s000000").n_digits == 1


def test_model_name_is_frozen_and_validates_direct_construction():
    m = parse_name("add_d6_l2_h3_t15K_s372001")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.seed = 1  # type: ignore[misc]
    with pytest.raises(InputError, match="unknown operation 'div'"):
        ModelName(0, "div", 6, 2, 3, 15000, False, 1)
    with pytest.raises(InputError, match="insert mode"):
        ModelName(5, "mix", 6, 2, 3, 15000, False, 1)


@pytest.mark.parametrize(
    "name, message",
    [
        ("add_d6_l2_h3_t15K_s37", "seed must be 6 digits (_s123456)"),
        ("add_d6_l2_h3_t15K_s1234567", "seed must be 6 digits (_s123456)"),
        ("div_d6_l2_h3_t15K_s372001", "unknown operation 'div' (expected add, sub, mix, mul or mas)"),
        ("add_d6_h3_t15K_s372001", "missing _l<layers> (e.g. _l2)"),
        ("add_l2_h3_t15K_s372001", "missing _d<digits> (e.g. _d6)"),
        ("add_d6_l2_t15K_s372001", "missing _h<heads> (e.g. _h3)"),
        ("add_d6_l2_h3_s372001", "missing _t<steps> (e.g. _t15K)"),
        ("add_d6_l2_h3_t15K", "missing _s<seed> (e.g. _s372001)"),
        ("add_d6_l2_h3_t15K_gf", "missing _s<seed> (e.g. _s372001)"),
        ("ins5_mix_d6_l3_h4_t40K_s372001", "insert prefix 'ins5' must be ins1, ins2, ins3 or ins4"),
        ("ins1", "missing operation (add, sub, mix, mul or mas)"),
        ("add_d21_l2_h3_t15K_s372001", "digits must be a whole number from 1 to 20 (_d6), got '21'"),
        ("add_d0_l2_h3_t15K_s372001", "digits must be a whole number from 1 to 20 (_d6), got '0'"),
        ("add_d06_l2_h3_t15K_s372001", "digits must be a whole number from 1 to 20 (_d6), got '06'"),
        (
            "add_d6_l0_h3_t15K_s372001",
            "layers must be a positive whole number without leading zeros (_l2), got '0'",
        ),
        (
            "add_d6_l2_hx_t15K_s372001",
            "heads must be a positive whole number without leading zeros (_h3), got 'x'",
        ),
        ("add_d6_l2_h3_t15k_s372001", "steps must be _t<thousands>K (e.g. _t15K), or _t<steps> below 1000"),
        ("add_d6_l2_h3_t0K_s372001", "steps must be _t<thousands>K (e.g. _t15K), or _t<steps> below 1000"),
        (
            "add_d6_l2_h3_t15000_s372001",
            "steps without K must be below 1000 (write t15K for whole thousands)",
        ),
        ("add_d6_l2_h3_t1500_s372001", "steps without K must be below 1000 (_t300)"),
        ("add_d6_l2_h3_t15K_s372001_gf", "'_gf' must come before the seed (..._t15K_gf_s372001)"),
        ("add_d6_l2_gf_h3_t15K_s372001", "'_gf' must come just before the seed"),
        ("add_d6_l2_h3_t15K_s372001_x", "unexpected trailing part 'x' after the seed"),
        ("add_d6_l2_x3_t15K_s372001", "unexpected part 'x3' where _h<heads> belongs (e.g. _h3)"),
        ("add__d6_l2_h3_t15K_s372001", "empty part (doubled, leading or trailing '_')"),
        ("add_d6_l2_h3_t15K_s372001 ", "contains white space"),
        ("", "empty name"),
    ],
)
def test_malformed_names_say_which_part_is_wrong(name, message):
    with pytest.raises(InputError) as info:
        parse_name(name)
    text = str(info.value)
    assert text.startswith(f"model name {name!r}: ")
    assert message in text
    assert "\n" not in text


def test_parse_pair():
    main, insert = parse_pair("ins1_mix_d6_l3_h4_t40K_s372001,add_d6_l2_h3_t15K_s372001")
    assert main.insert_mode == 1 and insert == parse_name("add_d6_l2_h3_t15K_s372001")
    assert format_pair(main, insert) == "ins1_mix_d6_l3_h4_t40K_s372001,add_d6_l2_h3_t15K_s372001"
    assert parse_pair("add_d6_l2_h3_t15K_s372001") == (parse_name("add_d6_l2_h3_t15K_s372001"), None)
    assert parse_pair(" ins2_mix_d6_l4_h4_t40K_s372001 , add_d6_l2_h3_t15K_s372001 ")[1].n_layers == 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("add_d6_l2_h3_t15K_s372001,add_d6_l2_h3_t15K_s372001", "has no insN_ prefix"),
        ("ins1_mix_d6_l3_h4_t40K_s372001,", "the insert model name after ',' is empty"),
        ("a,b,c", "expected 'main' or 'main,insert', got 3 names"),
        (
            "ins1_mix_d6_l3_h4_t40K_s372001,add_d5_l2_h3_t15K_s372001",
            "has 5 digits, ins1_mix_d6_l3_h4_t40K_s372001 has 6",
        ),
        ("ins1_mix_d6_l1_h4_t40K_s372001,add_d6_l2_h3_t15K_s372001", "does not fit into ins1_mix_d6"),
        ("ins1_mix_d6_l3_h2_t40K_s372001,add_d6_l2_h3_t15K_s372001", "does not fit into ins1_mix_d6"),
        ("ins1_mix_d6_l3_h4_t40K_s372001,ins1_add_d6_l2_h3_t15K_s372001", "must be a plain model"),
        ("ins1_mix_d6_l3_h4_t40K_s372001,add_d6_l2_h3_t15K_s3", "seed must be 6 digits"),
    ],
)
def test_parse_pair_errors(text, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_pair(text)


def test_insert_of_published_ins_models():
    ins = [n for n in ZOO if n.startswith("ins")]
    assert list(INSERT_OF) == ins == list(ZOO_INS) and len(ins) == 16
    assert INSERT_OF["ins1_mix_d6_l3_h4_t40K_s372001"] == "add_d6_l2_h3_t15K_s372001" == DEFAULT_INSERT
    # the picker's pairings (spec 14.2, docs/reference_facts.md F11), the (*) three with the picker's choice
    assert INSERT_OF["ins1_mix_d6_l3_h4_t40K_s173289"] == PICKER_INSERT == "add_d6_l2_h3_t20K_s173289"
    assert {m for m, i in INSERT_OF.items() if i == PICKER_INSERT} == PICKER_CHOICE | {"ins1_mix_d6_l3_h4_t40K_s173289"}
    assert INSERT_OF["ins1_mix_d10_l3_h3_t50K_gf_s572091"] == "add_d10_l2_h3_t40K_gf_s572091"
    assert INSERT_OF["ins2_mix_d6_l4_h4_t40K_s372001"] == INSERT_OF["ins3_mix_d6_l4_h3_t40K_s372001"] == DEFAULT_INSERT
    for main, insert in INSERT_OF.items():
        assert insert in ZOO_ADD
        m, i = parse_pair(f"{main},{insert}")  # each pair is one the trainer accepts
        assert i.op == "add" and i.n_digits == m.n_digits
        assert default_insert(m).format() == insert  # the one owner: a trainer given no insert model picks it
    # outside the zoo: the reference parser's defaults, with the ins model's digits
    assert default_insert(parse_name("ins1_mix_d12_l3_h4_t40K_s111111")).format() == "add_d12_l2_h3_t15K_s372001"
