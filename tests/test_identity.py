"""Tests for idv.identity: GB 11643-1999 ID numbers and name normalisation."""

from __future__ import annotations

import pickle
import time
from datetime import date, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from idv.identity import (
    ID_ERROR_MESSAGES,
    INVALID_ID_FORMAT,
    INVALID_NAME,
    MIDDLE_DOT,
    IdentityError,
    IdNumber,
    Sex,
    compute_check_digit,
    make_id_number,
    name_error_messages,
    name_match_key,
    names_match,
    normalise_name,
    parse_id_number,
)

# A fixed "today" so the tests do not depend on the wall clock.
TODAY = date(2025, 6, 1)
SAMPLE = "11010519491231002X"  # the well-known GB 11643 sample (Beijing Chaoyang, 1949-12-31, female)

PROVINCES = (
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 "
    "50 51 52 53 54 61 62 63 64 65 71 81 82 83"
).split()


def with_check(first17: str) -> str:
    """Append the correct check character, so a test isolates one other rule."""
    return first17 + compute_check_digit(first17)


def parse(raw: object) -> IdNumber:
    return parse_id_number(raw, today=TODAY)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- ID numbers: table


def test_well_known_sample_is_valid_and_decoded():
    assert compute_check_digit(SAMPLE[:17]) == "X"
    parsed = parse(SAMPLE)
    assert parsed.value == SAMPLE
    assert parsed.region_code == "110105"
    assert parsed.province_code == "11"
    assert parsed.birth_date == date(1949, 12, 31)
    assert parsed.sex is Sex.FEMALE  # 17th digit 2 is even


def test_odd_17th_digit_is_male():
    assert parse(make_id_number("440305", date(1990, 7, 15), 131)).sex is Sex.MALE
    assert parse(make_id_number("440305", date(1990, 7, 15), 130)).sex is Sex.FEMALE


@pytest.mark.parametrize("province", PROVINCES)
def test_every_province_code_accepted(province):
    assert parse(make_id_number(province + "0101", date(1980, 1, 1), 7)).province_code == province


@pytest.mark.parametrize(
    "raw",
    [
        "11010519491231002x",  # lower-case x
        " 11010519491231002X",
        "11010519491231002X\n",
        "\t 11010519491231002x \r\n",
        "\x0b11010519491231002X\x0c",
    ],
)
def test_lower_case_x_and_ascii_whitespace_normalised(raw):
    assert parse(raw).value == SAMPLE


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("", "exactly 18"),
        ("   ", "exactly 18"),
        (SAMPLE[:17], "exactly 18"),
        (SAMPLE + "0", "exactly 18"),
        ("110105491231002", "exactly 18"),  # 15-digit first-generation card number
        ("1101051949 1231002X", "exactly 18"),
        ("\u300011010519491231002X", "exactly 18"),  # ideographic space is not ASCII whitespace
        ("\u00a011010519491231002X", "exactly 18"),  # nor is NO-BREAK SPACE
        ("１１０１０５１９４９１２３１００２Ｘ", "ASCII digits"),  # full-width digits
        ("１10105194912310020", "ASCII digits"),  # one full-width digit
        ("١١٠١٠٥١٩٤٩١٢٣١٠٠٢X", "ASCII digits"),  # Arabic-Indic digits
        ("11010519491231002\uff38", "digit 0-9 or X"),  # full-width X
        ("11010519491231002Y", "digit 0-9 or X"),
        ("1101051949123100-X", "ASCII digits"),
        ("-1010519491231002X", "ASCII digits"),
        ("11010519491231002 ", "exactly 18"),  # only 17 characters once stripped
    ],
)
def test_format_errors(raw, match):
    with pytest.raises(IdentityError, match=match) as caught:
        parse(raw)
    assert caught.value.reason == INVALID_ID_FORMAT


UNKNOWN_PROVINCES = ["00", "99", "10", "16", "20", "24", "30", "38", "47", "55", "60", "66", "72", "84", "91"]


@pytest.mark.parametrize("province", UNKNOWN_PROVINCES)
def test_unknown_province_rejected(province):
    raw = make_id_number(province + "0101", date(1980, 1, 1), 7)  # valid check digit
    with pytest.raises(IdentityError, match="province"):
        parse(raw)


@pytest.mark.parametrize(
    "birth",
    [
        "20000230",  # Feb 30
        "19000229",  # 1900 is not a leap year
        "20010229",
        "19801301",  # month 13
        "19800001",  # month 0
        "19800100",  # day 0
        "19800132",
        "19800431",  # April has 30 days
        "00000101",  # year 0
    ],
)
def test_impossible_birth_dates_rejected(birth):
    with pytest.raises(IdentityError, match="not a valid calendar date"):
        parse(with_check(f"110105{birth}123"))


def test_leap_day_accepted():
    assert parse(with_check("11010520000229123")).birth_date == date(2000, 2, 29)


def test_future_birth_date_rejected():
    with pytest.raises(IdentityError, match="future"):
        parse(with_check("11010521000101123"))
    with pytest.raises(IdentityError, match="future"):
        parse(make_id_number("110105", TODAY + timedelta(days=1), 1))


def test_birth_today_accepted():
    assert parse(make_id_number("110105", TODAY, 1)).birth_date == TODAY


def test_today_defaults_to_the_clock():
    assert parse_id_number(make_id_number("110105", date.today(), 1)).birth_date == date.today()
    with pytest.raises(IdentityError, match="future"):
        parse_id_number(make_id_number("110105", date.today() + timedelta(days=1), 1))


def test_before_1900_rejected():
    with pytest.raises(IdentityError, match="before 1900"):
        parse(with_check("11010518991231123"))
    assert parse(with_check("11010519000101123")).birth_date == date(1900, 1, 1)


@pytest.mark.parametrize("wrong", [c for c in "0123456789X" if c != "X"])
def test_wrong_check_digit_rejected(wrong):
    with pytest.raises(IdentityError, match="check character"):
        parse(SAMPLE[:17] + wrong)


@pytest.mark.parametrize("size", [65, 10 * 1024, 10 * 1024 * 1024])
def test_long_input_rejected_fast(size):
    raw = SAMPLE + " " * (size - len(SAMPLE))
    start = time.perf_counter()
    for _ in range(100):
        with pytest.raises(IdentityError, match="exactly 18"):
            parse(raw)
    assert time.perf_counter() - start < 0.5


def test_surrounding_whitespace_up_to_the_raw_cap_is_fine():
    assert parse(" " * 23 + SAMPLE + " " * 23).value == SAMPLE  # 64 characters


@pytest.mark.parametrize("raw", [None, 11010519491231002, SAMPLE.encode(), [SAMPLE], 1.5])
def test_non_str_rejected(raw):
    with pytest.raises(IdentityError, match="must be a string") as caught:
        parse(raw)
    assert caught.value.reason == INVALID_ID_FORMAT


def test_repr_and_str_do_not_leak_personal_data():
    parsed = parse(SAMPLE)
    for text in (repr(parsed), str(parsed), f"{parsed}"):
        assert "110105" not in text and "1949" not in text and "002X" not in text


def test_id_number_is_frozen_and_comparable():
    parsed = parse(SAMPLE)
    with pytest.raises(AttributeError):
        parsed.value = "x"  # type: ignore[misc]
    assert parsed == parse(SAMPLE.lower())
    assert hash(parsed) == hash(parse(SAMPLE.lower()))


def test_identity_error_shape():
    with pytest.raises(IdentityError) as caught:
        parse("nope")
    err = caught.value
    assert isinstance(err, ValueError)
    assert str(err) == err.message
    assert err.__cause__ is None
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), again.reason, again.message) == (IdentityError, err.reason, err.message)


def test_date_error_is_not_chained():
    with pytest.raises(IdentityError) as caught:
        parse(with_check("11010520000230123"))
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("region", "sequence"),
    [("11010", 1), ("1101050", 1), ("11010a", 1), ("１１０１０５", 1), ("110105", -1), ("110105", 1000)],
)
def test_make_id_number_rejects_bad_arguments(region, sequence):
    with pytest.raises(ValueError):
        make_id_number(region, date(1980, 1, 1), sequence)


def test_compute_check_digit_rejects_bad_body():
    for body in ("", "1" * 16, "1" * 18, "１" * 17):
        with pytest.raises(ValueError):
            compute_check_digit(body)


# --------------------------------------------------------------------------- ID numbers: properties

regions = st.builds(lambda p, rest: p + rest, st.sampled_from(PROVINCES), st.from_regex(r"[0-9]{4}", fullmatch=True))
births = st.dates(min_value=date(1900, 1, 1), max_value=TODAY)
sequences = st.integers(min_value=0, max_value=999)
valid_ids = st.builds(make_id_number, regions, births, sequences)
ascii_ws = st.text(alphabet=" \t\n\r\x0b\x0c", max_size=5)


@settings(max_examples=1000)
@given(region=regions, birth=births, sequence=sequences)
def test_every_generated_id_parses(region, birth, sequence):
    raw = make_id_number(region, birth, sequence)
    parsed = parse(raw)
    assert parsed.value == raw
    assert parsed.region_code == region
    assert parsed.birth_date == birth
    assert parsed.sex is (Sex.MALE if sequence % 2 else Sex.FEMALE)


@settings(max_examples=1000)
@given(valid=valid_ids, lead=ascii_ws, trail=ascii_ws, lower=st.booleans())
def test_parse_is_idempotent(valid, lead, trail, lower):
    raw = lead + (valid[:17] + valid[17].lower() if lower else valid) + trail
    once = parse(raw)
    assert parse(once.value) == once
    assert once.value == valid


@settings(max_examples=500)
@given(raw=st.text(max_size=70))
def test_parse_arbitrary_text_is_idempotent_or_rejected(raw):
    try:
        once = parse(raw)
    except IdentityError as err:
        assert err.reason == INVALID_ID_FORMAT
        assert err.message in ID_ERROR_MESSAGES
    else:
        assert parse(once.value) == once


@settings(max_examples=1000)
@given(valid=valid_ids, position=st.integers(min_value=0, max_value=16), delta=st.integers(min_value=1, max_value=9))
def test_any_single_digit_substitution_is_rejected(valid, position, delta):
    new_digit = str((int(valid[position]) + delta) % 10)
    changed = valid[:position] + new_digit + valid[position + 1 :]
    # MOD 11-2 weights are all non-zero mod 11 (11 is prime), so the check
    # character itself always changes; the parse may fail earlier on another rule.
    assert compute_check_digit(changed[:17]) != valid[17]
    with pytest.raises(IdentityError):
        parse(changed)


@settings(max_examples=300)
@given(valid=valid_ids, position=st.integers(min_value=0, max_value=15))
def test_adjacent_transposition_is_rejected(valid, position):
    a, b = valid[position], valid[position + 1]
    assume(a != b)
    swapped = valid[:position] + b + a + valid[position + 2 :]
    with pytest.raises(IdentityError):
        parse(swapped)


@settings(max_examples=1000)
@given(raw=st.text(min_size=6, max_size=80))
def test_id_error_never_echoes_input(raw):
    try:
        parse(raw)
    except IdentityError as err:
        assert err.message in ID_ERROR_MESSAGES  # a fixed sentence: nothing from the input
        if not any(raw in fixed for fixed in ID_ERROR_MESSAGES):
            assert raw not in err.message
            assert raw.strip() not in str(err)


@settings(max_examples=300)
@given(valid=valid_ids, pad=st.text(min_size=0, max_size=3))
def test_id_error_never_echoes_a_near_valid_id(valid, pad):
    # Realistic leak case: a real ID number with a typo must not appear in the message.
    raw = valid[:-1] + ("0" if valid[-1] != "0" else "1") + pad
    with pytest.raises(IdentityError) as caught:
        parse(raw)
    assert valid[:17] not in caught.value.message


# --------------------------------------------------------------------------- names: table

DOT_VARIANTS = ["\u00b7", "\u30fb", "\u2022", "\u2027", "\uff65", "\u2219", "\u22c5", "\u2e31", "\u0387", ".", "\uff0e"]


@pytest.mark.parametrize("dot", DOT_VARIANTS, ids=[f"U+{ord(d):04X}" for d in DOT_VARIANTS])
def test_ethnic_name_dot_variants_canonicalised(dot):
    assert normalise_name(f"买买提{dot}艾力") == "买买提·艾力"
    assert normalise_name(f"阿卜杜热西提{dot}买买提{dot}艾力") == "阿卜杜热西提·买买提·艾力"
    assert normalise_name(f" 买买提 {dot} 艾力 ") == "买买提·艾力"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("张三", "张三"),
        ("  张三\n", "张三"),
        ("欧阳　娜娜", "欧阳 娜娜"),  # ideographic space -> space
        ("ＪＯＨＮ　ＳＭＩＴＨ", "JOHN SMITH"),  # full-width Latin
        ("  John   Fitzgerald \u00a0 Kennedy ", "John Fitzgerald Kennedy"),
        ("John F. Kennedy", "John F. Kennedy"),  # a full stop next to Latin is kept
        ("张.John", "张.John"),  # only between two Han characters is '.' a middle dot
        ("Jean•Paul", "Jean·Paul"),  # bullet is canonicalised in any script
        ("José", "José"),  # combining acute composes (NFKC)
        ("Ǆ", "DŽ"),  # compatibility decomposition
        ("ㄹ", "ᄅ"),  # compatibility jamo folded by NFKC
        ("ئەخمەت", "ئەخمەت"),  # Uyghur in Arabic script: letters, no format characters
        ("𠀀", "𠀀"),  # CJK Extension B (plane 2)
        ("\U00031350", "\U00031350"),  # CJK Extension H: may be unassigned in this Python's tables
        ("Zhang3", "Zhang3"),  # digits are allowed next to letters
        ("a" * 64, "a" * 64),
    ],
)
def test_name_normalisation(raw, expected):
    assert normalise_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("\u202e张三", "control, format"),  # RIGHT-TO-LEFT OVERRIDE
        ("张\u202d三", "control, format"),  # LEFT-TO-RIGHT OVERRIDE
        ("张\u2067三\u2069", "control, format"),  # isolates
        ("张\u200d三", "control, format"),  # ZERO WIDTH JOINER
        ("张\u200b三", "control, format"),  # ZERO WIDTH SPACE
        ("张\u200c三", "control, format"),  # ZERO WIDTH NON-JOINER
        ("\ufeff张三", "control, format"),  # BOM
        ("张\u00ad三", "control, format"),  # SOFT HYPHEN
        ("张\x00三", "control, format"),
        ("张\x7f三", "control, format"),
        ("张\x1b[31m三", "control, format"),
        ("张\u0085三", "control, format"),  # NEL (C1)
        ("张\n三", "control, format"),  # an embedded newline is a control, not a space
        ("张\t三", "control, format"),
        ("张\ud800三", "control, format"),  # lone surrogate
        ("", "empty"),
        ("   ", "empty"),
        ("\t\n\r ", "empty"),
        ("\u3000\u00a0", "empty"),
        ("😀", "no letters"),
        ("😀😀😀", "no letters"),
        ("12345", "no letters"),
        ("１２３", "no letters"),
        ("...", "no letters"),
        ("·", "no letters"),
        ("-_-", "no letters"),
        ("\u0301\u0301", "no letters"),  # combining marks only
        ("\ue000\ue001", "no letters"),  # private use only
        ("a" * 65, "longer than 64"),
        ("张" * 65, "longer than 64"),
    ],
)
def test_name_rejections(raw, match):
    with pytest.raises(IdentityError, match=match) as caught:
        normalise_name(raw)
    assert caught.value.reason == INVALID_NAME


def test_name_length_counts_after_normalisation():
    assert normalise_name(" " * 10 + "a" * 64 + " " * 10) == "a" * 64
    assert normalise_name("e\u0301" * 64) == "é" * 64  # 128 code points in, 64 out
    with pytest.raises(IdentityError, match="longer than 64"):
        normalise_name("ﷺ" * 4)  # one code point each, 18 after NFKC


def test_name_max_length_is_configurable():
    assert normalise_name("张三", max_length=2) == "张三"
    with pytest.raises(IdentityError, match="longer than 2 "):
        normalise_name("张三丰", max_length=2)
    with pytest.raises(ValueError):
        normalise_name("张三", max_length=0)


@pytest.mark.parametrize("size", [10 * 1024, 10 * 1024 * 1024])
def test_long_name_rejected_fast(size):
    raw = "张" * size
    start = time.perf_counter()
    for _ in range(100):
        with pytest.raises(IdentityError, match="longer than"):
            normalise_name(raw)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("raw", [None, 42, "张三".encode(), ["张三"]])
def test_non_str_name_rejected(raw):
    with pytest.raises(IdentityError, match="must be a string") as caught:
        normalise_name(raw)  # type: ignore[arg-type]
    assert caught.value.reason == INVALID_NAME


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("张三", "张三", True),
        ("张三", " 张三 ", True),
        ("张三", "张叁", False),
        ("张三", "张 三", False),
        ("买买提·艾力", "买买提.艾力", True),
        ("买买提・艾力", "买买提 • 艾力", True),
        ("Zhang San", "ZHANG  SAN", True),
        ("ｚｈａｎｇ ｓａｎ", "Zhang San", True),
        ("Zhang San", "ZhangSan", False),
        ("Straße", "STRASSE", True),
        ("İlker", "i̇lker", True),
        ("Jose", "José", False),  # accents are part of the name
    ],
)
def test_names_match(a, b, expected):
    assert names_match(a, b) is expected
    assert names_match(b, a) is expected
    assert (name_match_key(a) == name_match_key(b)) is expected


def test_name_match_key_accepts_normalised_names():
    assert name_match_key(normalise_name(" ＺＨＡＮＧ　San ")) == name_match_key("zhang san") == "zhang san"


def test_name_match_key_cap_applies_before_casefold():
    assert name_match_key("ß" * 64) == "ss" * 64  # casefold may lengthen; the cap is on the name


def test_names_match_raises_on_invalid_name():
    with pytest.raises(IdentityError):
        names_match("张三", "\u202e张三")
    with pytest.raises(IdentityError):
        names_match("", "")


# --------------------------------------------------------------------------- names: properties

name_parts = st.one_of(
    st.sampled_from(["张", "三", "买", "提", "艾", "力", "𠀀", "a", "Z", "é", "e", "\u0301", "ß", "İ", "ǆ"]),
    st.sampled_from(DOT_VARIANTS),
    st.sampled_from([" ", "  ", "\u3000", "\u00a0", "\t", "\n"]),
    st.sampled_from(["Ａ", "ｚ", "１", "ﷺ", "ㄹ", "\u200d", "\u202e", "😀", "-", "'"]),
)
name_like = st.lists(name_parts, max_size=20).map("".join)


@settings(max_examples=1000)
@given(raw=st.one_of(name_like, st.text(max_size=80)))
def test_normalise_name_is_idempotent(raw):
    try:
        once = normalise_name(raw)
    except IdentityError as err:
        assert err.reason == INVALID_NAME
        assert err.message in name_error_messages()
        return
    assert normalise_name(once) == once
    assert once == once.strip()
    assert "  " not in once
    assert not any(d in once for d in DOT_VARIANTS if d not in (MIDDLE_DOT, ".", "\u0387", "\uff0e"))
    assert 0 < len(once) <= 64
    assert names_match(raw, once)
    assert name_match_key(once) == name_match_key(raw)


@settings(max_examples=1000)
@given(raw=st.one_of(st.text(min_size=6, max_size=80), name_like.filter(lambda s: len(s) >= 6)))
def test_name_error_never_echoes_input(raw):
    try:
        normalise_name(raw)
    except IdentityError as err:
        assert err.message in name_error_messages()
        if not any(raw in fixed for fixed in name_error_messages()):
            assert raw not in err.message
            assert raw not in str(err)
