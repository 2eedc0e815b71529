"""Validation and normalisation of the identity half of a request: ID number and name.

ID numbers follow GB 11643-1999 (citizen identification number): a 6-digit
administrative division code (GB/T 2260), an 8-digit birth date YYYYMMDD, a
3-digit sequence whose last digit is odd for men and even for women, and an
ISO 7064 MOD 11-2 check character (0-9 or X).

Both inputs are personal data. No error raised here ever contains the submitted
value or any part of it: messages are fixed English sentences, so they are safe
to log and to return to the caller.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from enum import Enum
from typing import Final, Literal

INVALID_ID_FORMAT: Final = "INVALID_ID_FORMAT"
INVALID_NAME: Final = "INVALID_NAME"

Reason = Literal["INVALID_ID_FORMAT", "INVALID_NAME"]


class IdentityError(ValueError):
    """An ID number or name that cannot be accepted.

    `reason` is a stable machine-readable code; `message` is a fixed English
    sentence that never contains the submitted value.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[IdentityError], tuple[Reason, str]]:
        # The default reduce replays `args` (the message only) into __init__,
        # which needs two arguments; without this the error cannot cross a
        # process boundary (multiprocessing, pickled test reports).
        return (type(self), (self.reason, self.message))


# --------------------------------------------------------------------------- ID numbers

ID_LENGTH: Final = 18
# Anything longer than this is not an ID number with stray whitespace around it;
# rejecting on len() first keeps the cost of hostile input (a 10 MB field) O(1).
MAX_RAW_ID_LENGTH: Final = 64

_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)  # 2**(17-i) mod 11
_CHECK_CHARS: Final = "10X98765432"  # indexed by (sum of weighted digits) mod 11
_EARLIEST_BIRTH: Final = date(1900, 1, 1)
# Only these six characters count as surrounding whitespace: the ID is an ASCII
# field, and Unicode spaces around it are a sign of mangled input, not padding.
_ASCII_WHITESPACE: Final = " \t\n\r\x0b\x0c"
# `[0-9]` matches ASCII digits only (unlike `\d` or str.isdigit(), which accept
# full-width and other Unicode decimal digits).
_BODY_RE: Final = re.compile(r"[0-9]{17}")
_CHECK_RE: Final = re.compile(r"[0-9X]")

# Province-level codes of GB/T 2260 (first two digits of the division code).
_PROVINCE_CODES: Final = frozenset(
    {
        # 1x North China: Beijing, Tianjin, Hebei, Shanxi, Inner Mongolia
        "11", "12", "13", "14", "15",
        # 2x Northeast: Liaoning, Jilin, Heilongjiang
        "21", "22", "23",
        # 3x East China: Shanghai, Jiangsu, Zhejiang, Anhui, Fujian, Jiangxi, Shandong
        "31", "32", "33", "34", "35", "36", "37",
        # 4x Central-South: Henan, Hubei, Hunan, Guangdong, Guangxi, Hainan
        "41", "42", "43", "44", "45", "46",
        # 5x Southwest: Chongqing, Sichuan, Guizhou, Yunnan, Tibet (Xizang)
        "50", "51", "52", "53", "54",
        # 6x Northwest: Shaanxi, Gansu, Qinghai, Ningxia, Xinjiang
        "61", "62", "63", "64", "65",
        # 71 Taiwan as listed in GB/T 2260; kept because the standard lists it,
        # although resident cards are not issued under it in practice.
        "71",
        # 81 Hong Kong, 82 Macao: residence permits for Hong Kong and Macao
        # residents (since 2018) carry 810000 / 820000 as division code.
        "81", "82",
        # 83: residence permits for Taiwan residents (since 2018) use 830000,
        # not 71, as division code.
        "83",
    }
)  # fmt: skip
# Not accepted: the 2023 foreigners' permanent residence ID card, which uses the
# same 18-character layout but starts with 9 (9 + province + nationality code).

_MSG_ID_NOT_STR: Final = "ID number must be a string"
_MSG_ID_LENGTH: Final = "ID number must be exactly 18 characters"
_MSG_ID_BODY: Final = "ID number's first 17 characters must be ASCII digits 0-9"
_MSG_ID_CHECK_CHAR: Final = "ID number's last character must be a digit 0-9 or X"
_MSG_ID_REGION: Final = "ID number's first two digits are not a known province-level code"
_MSG_ID_DATE: Final = "ID number's birth date (characters 7-14) is not a valid calendar date"
_MSG_ID_FUTURE: Final = "ID number's birth date is in the future"
_MSG_ID_TOO_OLD: Final = "ID number's birth date is before 1900-01-01"
_MSG_ID_CHECKSUM: Final = "ID number's check character does not match (ISO 7064 MOD 11-2)"

ID_ERROR_MESSAGES: Final = frozenset(
    {
        _MSG_ID_NOT_STR,
        _MSG_ID_LENGTH,
        _MSG_ID_BODY,
        _MSG_ID_CHECK_CHAR,
        _MSG_ID_REGION,
        _MSG_ID_DATE,
        _MSG_ID_FUTURE,
        _MSG_ID_TOO_OLD,
        _MSG_ID_CHECKSUM,
    }
)


class Sex(Enum):
    MALE = "M"  # odd 17th digit
    FEMALE = "F"  # even 17th digit


@dataclass(frozen=True)
class IdNumber:
    """A validated ID number; build it with `parse_id_number`.

    value: the canonical 18-character form (upper-case X).
    region_code: the 6-digit GB/T 2260 administrative division code.
    """

    value: str
    region_code: str
    birth_date: date
    sex: Sex

    @property
    def province_code(self) -> str:
        return self.region_code[:2]

    def __repr__(self) -> str:
        # Every field is personal data; a dataclass repr in a log line or a
        # traceback's locals would leak it.
        return "IdNumber(<redacted>)"

    __str__ = __repr__


def _id_error(message: str) -> IdentityError:
    return IdentityError(INVALID_ID_FORMAT, message)


def compute_check_digit(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character for the first 17 digits of an ID number."""
    if len(first17) != 17 or not _BODY_RE.fullmatch(first17):
        raise ValueError("expected exactly 17 ASCII digits")
    total = sum(int(ch) * weight for ch, weight in zip(first17, _WEIGHTS))
    return _CHECK_CHARS[total % 11]


def parse_id_number(raw: str, today: date | None = None) -> IdNumber:
    """Validate and normalise an 18-character resident ID number.

    `today` is the reference date for the not-in-the-future rule; it defaults to
    the host's local date. Callers on a UTC host may want to pass the date in
    Asia/Shanghai, otherwise a birth date of "today" is refused for eight hours.

    Raises IdentityError(reason="INVALID_ID_FORMAT") on any problem.
    """
    if not isinstance(raw, str):
        raise _id_error(_MSG_ID_NOT_STR)
    if len(raw) > MAX_RAW_ID_LENGTH:
        raise _id_error(_MSG_ID_LENGTH)
    text = raw.strip(_ASCII_WHITESPACE)
    if len(text) != ID_LENGTH:
        raise _id_error(_MSG_ID_LENGTH)
    body, check = text[:17], text[17]
    if not _BODY_RE.fullmatch(body):
        raise _id_error(_MSG_ID_BODY)
    if check == "x":
        check = "X"
    if not _CHECK_RE.fullmatch(check):
        raise _id_error(_MSG_ID_CHECK_CHAR)
    if body[:2] not in _PROVINCE_CODES:
        raise _id_error(_MSG_ID_REGION)
    try:
        birth = date(int(body[6:10]), int(body[10:12]), int(body[12:14]))
    except ValueError:
        # `from None`: the chained date() error adds nothing the caller can use.
        raise _id_error(_MSG_ID_DATE) from None
    if birth < _EARLIEST_BIRTH:
        raise _id_error(_MSG_ID_TOO_OLD)
    if birth > (today if today is not None else date.today()):
        raise _id_error(_MSG_ID_FUTURE)
    if compute_check_digit(body) != check:
        raise _id_error(_MSG_ID_CHECKSUM)
    return IdNumber(
        value=body + check,
        region_code=body[:6],
        birth_date=birth,
        sex=Sex.MALE if int(body[16]) % 2 else Sex.FEMALE,
    )


def make_id_number(region: str, birth: date, sequence: int) -> str:
    """A well-formed ID number for synthetic data (tests, benchmarks).

    `region` is any 6-digit division code (it is not checked against the
    province list, so negative tests can build unknown regions with a valid
    check digit); `sequence` is 0-999 and its parity gives the sex.
    """
    if len(region) != 6 or not re.fullmatch(r"[0-9]{6}", region):
        raise ValueError("region must be 6 ASCII digits")
    if not 0 <= sequence <= 999:
        raise ValueError("sequence must be in 0..999")
    body = f"{region}{birth.year:04d}{birth.month:02d}{birth.day:02d}{sequence:03d}"
    return body + compute_check_digit(body)


# --------------------------------------------------------------------------- names

DEFAULT_MAX_NAME_LENGTH: Final = 64
# Raw input longer than this multiple of the cap (or than the floor, if larger)
# is refused before any Unicode work, so a hostile 10 MB field costs O(1).
# Generous because normalisation can shrink text (composition, whitespace
# collapsing, padded legacy fields).
_RAW_NAME_FACTOR: Final = 8
_RAW_NAME_FLOOR: Final = 256

MIDDLE_DOT: Final = "\u00b7"
# Separators typed for the middle dot of ethnic-minority names (e.g. 买买提·艾力),
# as they are after NFKC. NFKC runs first: it folds U+FF65 HALFWIDTH KATAKANA
# MIDDLE DOT into U+30FB, U+0387 GREEK ANO TELEIA into U+00B7 and U+FF0E
# FULLWIDTH FULL STOP into '.', so those need no entry of their own here.
_DOT_VARIANTS: Final = re.compile(
    "[\u30fb"  # KATAKANA MIDDLE DOT (Japanese IMEs)
    "\u2022"  # BULLET
    "\u2027"  # HYPHENATION POINT
    "\u2219"  # BULLET OPERATOR
    "\u22c5"  # DOT OPERATOR (math input)
    "\u2e31"  # WORD SEPARATOR MIDDLE DOT
    "]"
)
# Han ideographs, for deciding whether a '.' is a middle-dot stand-in. The whole
# of planes 2 and 3 is included: they are allocated to CJK ideographs only, and
# rare name characters (生僻字) there may post-date this Python's Unicode tables.
_HAN: Final = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff"
# A full stop between two Han characters is a middle dot; elsewhere ('John F.
# Kennedy') it is a real full stop and is kept.
_DOT_BETWEEN_HAN: Final = re.compile(rf"(?<=[{_HAN}])\s*\.\s*(?=[{_HAN}])")
# The ID card prints the dot with no space around it; dropping such spaces lets
# '买买提 · 艾力' match '买买提·艾力'.
_SPACES_AROUND_DOT: Final = re.compile(rf"\s*{MIDDLE_DOT}\s*")
_WHITESPACE_RUN: Final = re.compile(r"\s+")
# Cc: C0/C1 controls (incl. tab and newline inside a name). Cf: format
# characters, which covers bidi overrides (U+202E) and zero-width characters
# (U+200B-U+200D, U+FEFF) that make two names look identical but differ. Cs:
# lone surrogates, which cannot be encoded as UTF-8 further down.
_REJECTED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs"})

_MSG_NAME_NOT_STR: Final = "name must be a string"
_MSG_NAME_EMPTY: Final = "name is empty"
_MSG_NAME_CONTROL: Final = "name contains control, format or zero-width characters"
_MSG_NAME_NO_LETTER: Final = "name contains no letters"
_MSG_NAME_TOO_LONG: Final = "name is longer than {max_length} characters after normalisation"


def name_error_messages(max_length: int = DEFAULT_MAX_NAME_LENGTH) -> frozenset[str]:
    """Every message `normalise_name` can raise for this cap (for tests and docs)."""
    return frozenset(
        {
            _MSG_NAME_NOT_STR,
            _MSG_NAME_EMPTY,
            _MSG_NAME_CONTROL,
            _MSG_NAME_NO_LETTER,
            _MSG_NAME_TOO_LONG.format(max_length=max_length),
        }
    )


def _name_error(message: str) -> IdentityError:
    return IdentityError(INVALID_NAME, message)


def _is_letter(ch: str) -> bool:
    code = ord(ch)
    return unicodedata.category(ch).startswith("L") or 0x20000 <= code <= 0x3FFFF


def normalise_name(raw: str, max_length: int = DEFAULT_MAX_NAME_LENGTH) -> str:
    """Canonical form of a person's name, or IdentityError(reason="INVALID_NAME").

    NFKC; middle-dot variants to U+00B7; surrounding whitespace stripped and
    internal runs collapsed to one space. Han, Latin and any other script's
    letters are accepted; control/format characters are not.
    """
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    if not isinstance(raw, str):
        raise _name_error(_MSG_NAME_NOT_STR)
    if len(raw) > max(_RAW_NAME_FACTOR * max_length, _RAW_NAME_FLOOR):
        raise _name_error(_MSG_NAME_TOO_LONG.format(max_length=max_length))
    # NFKC before dot handling: it folds full-width/half-width forms, and some
    # of those become dot variants (U+FF65 -> U+30FB, U+FF0E -> '.') that must
    # then be caught below. The other order would leave them unhandled.
    text = unicodedata.normalize("NFKC", raw).strip()
    if any(unicodedata.category(ch) in _REJECTED_CATEGORIES for ch in text):
        raise _name_error(_MSG_NAME_CONTROL)
    text = _DOT_VARIANTS.sub(MIDDLE_DOT, text)
    text = _DOT_BETWEEN_HAN.sub(MIDDLE_DOT, text)
    text = _SPACES_AROUND_DOT.sub(MIDDLE_DOT, text)
    text = _WHITESPACE_RUN.sub(" ", text)
    # Second NFKC: dropping spaces can bring characters together; this keeps the
    # output in normal form so that normalisation is idempotent.
    text = unicodedata.normalize("NFKC", text)
    if not text:
        raise _name_error(_MSG_NAME_EMPTY)
    if not any(_is_letter(ch) for ch in text):
        raise _name_error(_MSG_NAME_NO_LETTER)
    if len(text) > max_length:
        raise _name_error(_MSG_NAME_TOO_LONG.format(max_length=max_length))
    return text


def name_match_key(raw: str, max_length: int = DEFAULT_MAX_NAME_LENGTH) -> str:
    """The form two names are compared in: normalised, casefolded, re-normalised.

    Use it wherever a name is stored or hashed for later comparison (e.g. a keyed
    pseudonym), so stored keys agree exactly with `names_match`. Accepts raw or
    already-normalised names (normalisation is idempotent).
    """
    # casefold can leave text un-normalised ('İ' -> 'i' + U+0307), hence NFKC.
    return unicodedata.normalize("NFKC", normalise_name(raw, max_length).casefold())


def names_match(a: str, b: str, max_length: int = DEFAULT_MAX_NAME_LENGTH) -> bool:
    """Do two names denote the same name after normalisation?

    Case-insensitive for scripts with case (Latin names on foreigners' cards are
    typed in any case); casefold leaves Han untouched, so Han compares exactly.
    Raises IdentityError if either name is invalid: an invalid name is a bad
    request, not a mismatch.
    """
    return name_match_key(a, max_length) == name_match_key(b, max_length)
