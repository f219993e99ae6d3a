"""Pixel-cleaning rules: a deid recipe file's `%filter` sections, loaded strictly.

deid (pydicom/deid 0.4.13) parses the recipe (`DeidRecipe`) and evaluates its criteria
(`apply_filter` for each test, `evaluate_group` to join them), so a rule matches exactly the
instances deid would flag with it. Two things are done here instead, because deid gets them wrong
for a pipeline that must fail loudly:

* Validation. deid skips a line it does not understand with a warning, and reads a trailing
  `# comment` on a criterion as part of the value, so a typo widens a rule silently. Every line is
  checked before deid sees the file, and a problem raises `ConfigurationError` with its line.
  A line that starts with `||` is refused: deid joins a rule's lines with AND whatever their
  leading operator (its own default recipe's blacklist relies on `||` and never matches), so
  alternatives go on one line, where `||` and `+` are read left to right.
* Coordinates. `has_burned_pixels` rewrites a `from:` coordinate inside the loaded recipe with the
  first instance's values, which every later instance then reuses, and it only accepts datasets
  read from a file. Rectangles are resolved per instance by `screenlake.deid.pixels.clean`.

Coordinates follow deid: `coordinates x0,y0,x1,y1`, x the column and y the row from the top-left
pixel (0,0), x1 and y1 one past the last masked pixel (half open, like a slice
`pixels[y0:y1, x0:x1]`); `ctpcoordinates x,y,width,height` is the same rectangle in CTP's form.
"""

from __future__ import annotations

import functools
import hashlib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deid.config import DeidRecipe
from deid.config.standards import filters as DEID_FILTERS
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from screenlake.errors import ConfigurationError


@functools.cache
def _deid_evaluation() -> tuple[Callable[..., Any], Callable[[list[Any]], Any]]:
    """deid's `apply_filter` and `evaluate_group`, imported on first use: importing deid.dicom
    imports its DicomCleaner and matplotlib with it, a quarter of a second nobody who never
    evaluates a rule should pay (the Dagster code location, every batch worker)."""
    with warnings.catch_warnings():
        # DicomCleaner uses a module pydicom 3 deprecates.
        warnings.filterwarnings(
            "ignore", "The 'pydicom.pixel_data_handlers' module", DeprecationWarning
        )
        from deid.dicom.filter import apply_filter
        from deid.dicom.pixels.detect import evaluate_group
    return apply_filter, evaluate_group


SCREENING_PIXEL_RULES = Path(__file__).resolve().parent.parent / "pixel_rules" / "screening.dicom"
"""The packaged example rule set (fictional vendors; see the file's comments)."""

ULTRASOUND_REGIONS = "SequenceOfUltrasoundRegions"
QUARANTINE_GROUP = "blacklist"
_VALUED = frozenset({"contains", "notcontains", "equals", "notequals"})
_COORDINATES = ("coordinates", "keepcoordinates", "ctpcoordinates", "ctpkeepcoordinates")
_NUMBERS = re.compile(r"(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)")
_HEX_TAG = re.compile(r"0x[0-9A-Fa-f]{8}")
# deid reports a recipe it cannot parse with sys.exit, or fails on it with these.
_DEID_ERRORS = (SystemExit, ValueError, TypeError, KeyError, AttributeError, IndexError)
_Fail = Callable[[int, str], ConfigurationError]


@dataclass(frozen=True)
class Region:
    """One coordinates line: a rectangle to mask, or with `keep` to unmask again.

    `box` is (x0, y0, x1, y1), half open; None means the whole image (`all`), or with
    `ultrasound_regions` the instance's own SequenceOfUltrasoundRegions rectangles.
    """

    keep: bool
    box: tuple[int, int, int, int] | None
    ultrasound_regions: bool = False


@dataclass(frozen=True)
class Criterion:
    """One criterion line: deid tests (action, field, value) joined left to right by `joins`."""

    tests: tuple[tuple[str, str, str | None], ...]
    joins: tuple[str, ...]

    def holds(self, ds: Dataset) -> bool:
        apply_filter, evaluate_group = _deid_evaluation()
        flags: list[Any] = []
        for index, (action, keyword, value) in enumerate(self.tests):
            if index:
                flags.append(self.joins[index - 1])
            flags.append(apply_filter(dicom=ds, field=keyword, filter_name=action, value=value))
        return bool(evaluate_group(flags))


@dataclass(frozen=True)
class PixelRule:
    """A LABEL of a `%filter` group: criteria that must all hold, and the regions to mask."""

    label: str
    group: str
    criteria: tuple[Criterion, ...]
    regions: tuple[Region, ...]

    @property
    def quarantines(self) -> bool:
        """A `%filter blacklist` rule: what it matches is never released."""
        return self.group.lower() == QUARANTINE_GROUP

    def matches(self, ds: Dataset) -> bool:
        # deid joins a rule's lines with AND (evaluate_group on bare flags).
        _, evaluate_group = _deid_evaluation()
        return bool(evaluate_group([criterion.holds(ds) for criterion in self.criteria]))


@dataclass(frozen=True)
class PixelRules:
    """Parsed pixel-cleaning rules; the empty default has none, so every at-risk file is
    quarantined. A loaded rule set also applies the built-in ultrasound rule (everything outside
    the instance's SequenceOfUltrasoundRegions is masked)."""

    rules: tuple[PixelRule, ...] = ()
    source: str = ""
    digest: str = ""

    @property
    def ultrasound_regions(self) -> bool:
        return bool(self.rules)

    def matching(self, ds: Dataset) -> tuple[PixelRule, ...]:
        """The rules whose criteria `ds` meets, in file order. Reads header attributes only."""
        return tuple(rule for rule in self.rules if rule.matches(ds))


@dataclass
class _Label:
    group: str
    name: str
    line: int
    criterion_lines: list[int] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)


def load_pixel_rules(path: Path | None) -> PixelRules:
    """Load a deid recipe's `%filter` rules; None gives the empty rules (quarantine all).

    Raises ConfigurationError naming the file, the line and the fix when the file cannot be read
    or a line is not a rule screenlake applies the way its author would expect.
    """
    if path is None:
        return PixelRules()
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as error:
        raise ConfigurationError(
            f"pixel rules {path}: cannot be read ({error.strerror}); check the path"
        ) from error
    except UnicodeDecodeError as error:
        raise ConfigurationError(f"pixel rules {path}: not UTF-8 text") from error
    labels = _read_layout(text, str(path))
    try:
        parsed = DeidRecipe(deid=str(path), base=False).get_filters() or {}
    except _DEID_ERRORS as error:
        raise ConfigurationError(
            f"pixel rules {path}: deid cannot parse the recipe ({type(error).__name__})"
        ) from error
    items = {group: iter(entries) for group, entries in parsed.items()}
    rules = []
    for label in labels:
        item = next(items.get(label.group, iter(())), None)
        if item is None:
            raise ConfigurationError(f"pixel rules {path} line {label.line}: deid lost this rule")
        rules.append(_rule(label, item, str(path)))
    return PixelRules(tuple(rules), source=path.name, digest=hashlib.sha256(raw).hexdigest())


def _read_layout(text: str, where: str) -> list[_Label]:
    """Check every line of the recipe; return its rules with their regions, in file order."""
    labels: list[_Label] = []
    group: str | None = None
    current: _Label | None = None
    format_seen = False

    def fail(number: int, problem: str) -> ConfigurationError:
        return ConfigurationError(f"pixel rules {where} line {number}: {problem}")

    for number, line in enumerate((raw.strip() for raw in text.splitlines()), start=1):
        if not line or line.startswith("#"):
            continue
        words = line.split("#", 1)[0].split()
        if words[0].lower() == "format":
            if format_seen or group is not None or words[0] != "FORMAT" or words[1:] != ["dicom"]:
                raise fail(number, "the file starts with 'FORMAT dicom', once")
            format_seen = True
        elif not format_seen:
            raise fail(number, "the file must start with 'FORMAT dicom'")
        elif line.startswith("%"):
            if words[0].lower() != "%filter":
                raise fail(
                    number,
                    f"only %filter sections are read here, not {words[0]}; "
                    "header rules belong in the de-identification profile",
                )
            if len(words) < 2:
                raise fail(number, "a %filter section needs a group name, e.g. '%filter graylist'")
            group, current = " ".join(words[1:]), None
            if group.lower() == "whitelist":
                raise fail(
                    number,
                    "whitelist groups are not applied: a header cannot show that "
                    "pixels are clean; write a rule with coordinates, or none",
                )
        elif group is None:
            raise fail(number, "a rule must be inside a '%filter <group>' section")
        elif words[0].lower() == "label":
            name = " ".join(words[1:])
            if not name or words[0] != "LABEL":
                raise fail(number, "a rule starts with 'LABEL <name>'")
            if any(label.name == name for label in labels):
                raise fail(number, f"a second rule is labelled '{name}'; labels must be unique")
            current = _Label(group, name, number)
            labels.append(current)
        elif current is None:
            raise fail(number, "criteria and coordinates belong under a LABEL")
        elif "#" in line:
            raise fail(
                number,
                "put comments on their own line: deid reads the rest of a "
                "criterion or coordinates line as part of its value",
            )
        elif words[0].lower() in _COORDINATES:
            current.regions.append(_region(words[0].lower(), words[1:], fail, number))
        else:
            _check_criterion_line(line, current, fail, number)
    if not format_seen:
        raise ConfigurationError(f"pixel rules {where}: empty; it must start with 'FORMAT dicom'")
    if not labels:
        raise ConfigurationError(f"pixel rules {where}: no rules (LABEL in a %filter section)")
    for label in labels:
        _check_label(label, fail)
    return labels


def _check_criterion_line(line: str, label: _Label, fail: _Fail, number: int) -> None:
    if line.startswith("||"):
        raise fail(
            number,
            "deid ANDs a line that starts with '||' with the rule's other lines; "
            "put alternatives on one line ('equals A x || equals B y') or in another LABEL",
        )
    joined = line.startswith("+")
    if joined != bool(label.criterion_lines):
        raise fail(
            number,
            "a rule's first criterion has no leading '+', and every later one has "
            "'+' (all of a rule's lines must hold)",
        )
    words = (line[1:] if joined else line).split()
    action = words[0].lower() if words else ""
    if action not in DEID_FILTERS:
        raise fail(
            number,
            f"'{action}' is not a deid filter or coordinates line; "
            f"use one of {', '.join(DEID_FILTERS)} or {', '.join(_COORDINATES)}",
        )
    if len(words) < (3 if action in _VALUED else 2):
        raise fail(number, f"'{action}' takes " + ("FIELD VALUE" if action in _VALUED else "FIELD"))
    label.criterion_lines.append(number)


def _region(kind: str, rest: list[str], fail: _Fail, number: int) -> Region:
    keep, ctp = "keep" in kind, kind.startswith("ctp")
    spec = "".join(rest)
    if spec == "all":
        return Region(keep, None)
    if spec.startswith("from:") and not ctp:
        if spec != f"from:{ULTRASOUND_REGIONS}":
            raise fail(number, f"only from:{ULTRASOUND_REGIONS} is supported")
        return Region(keep, None, ultrasound_regions=True)
    match = _NUMBERS.fullmatch(spec)
    if match is None:
        form = "x,y,width,height" if ctp else "x0,y0,x1,y1"
        raise fail(number, f"{kind} takes {form} (four whole numbers) or 'all'")
    x0, y0, a, b = (int(value) for value in match.groups())
    x1, y1 = (x0 + a, y0 + b) if ctp else (a, b)
    if x1 <= x0 or y1 <= y0:
        raise fail(
            number,
            f"{kind} {spec} is empty: x1,y1 is one past the last masked pixel, so "
            "x1 > x0 and y1 > y0 (for ctpcoordinates, width and height above 0)",
        )
    return Region(keep, (x0, y0, x1, y1))


def _check_label(label: _Label, fail: _Fail) -> None:
    if not label.criterion_lines:
        raise fail(label.line, f"rule '{label.name}' has no criteria and would match everything")
    if label.group.lower() == QUARANTINE_GROUP:
        if label.regions:
            raise fail(
                label.line,
                f"rule '{label.name}' quarantines what it matches "
                f"(%filter {QUARANTINE_GROUP}); coordinates there have no effect",
            )
    elif not any(not region.keep for region in label.regions):
        raise fail(
            label.line,
            f"rule '{label.name}' masks nothing: add coordinates "
            f"(or put it under %filter {QUARANTINE_GROUP} to quarantine what it matches)",
        )


def _rule(label: _Label, item: dict[str, Any], where: str) -> PixelRule:
    """A PixelRule from deid's parse of one LABEL, checked against the line-by-line reading."""
    entries = item.get("filters") or []
    if len(entries) != len(label.criterion_lines) or len(item.get("coordinates") or []) != len(
        label.regions
    ):
        raise ConfigurationError(
            f"pixel rules {where} line {label.line}: deid reads rule '{label.name}' differently "
            "from its lines; simplify its criteria"
        )
    criteria = tuple(
        _criterion(entry, f"pixel rules {where} line {number}")
        for entry, number in zip(entries, label.criterion_lines, strict=True)
    )
    return PixelRule(label.name, label.group, criteria, tuple(label.regions))


def _criterion(entry: dict[str, Any], where: str) -> Criterion:
    # deid lists values only for the actions that take one, but indexes them by action position,
    # which pairs a value with the wrong test on a line like 'empty A || contains B x'.
    values = iter(entry["value"])
    tests = []
    for action, keyword in zip(entry["action"], entry["field"], strict=True):
        value = next(values, None) if action in _VALUED else None
        if action in _VALUED and not value:
            raise ConfigurationError(f"{where}: '{action} {keyword}' needs a value")
        problem = _keyword_problem(keyword)
        if problem:
            raise ConfigurationError(f"{where}: {problem}")
        if action in ("contains", "notcontains"):
            try:
                re.compile(str(value).lower().strip())
            except re.error as error:
                raise ConfigurationError(
                    f"{where}: '{value}' is not a regular expression ({error.msg})"
                ) from error
        tests.append((action, keyword, value))
    joins = tuple(entry["InnerOperators"])
    if len(joins) != len(tests) - 1 or next(values, None) is not None:
        raise ConfigurationError(f"{where}: deid splits this line differently; simplify it")
    return Criterion(tuple(tests), joins)


def _keyword_problem(keyword: str) -> str | None:
    if _HEX_TAG.fullmatch(keyword):
        return None
    tag = tag_for_keyword(keyword)
    if tag is None:
        return f"'{keyword}' is not a DICOM keyword (or a tag written 0xGGGGEEEE)"
    if tag >> 16 == 0x0002:
        return f"'{keyword}' is in the file meta header, which deid's filters do not see"
    return None
