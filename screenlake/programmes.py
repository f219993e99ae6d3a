"""Screening programmes and the header rules that route a study to one of them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Programme:
    """A population screening programme: which studies belong to it and which model reads them."""

    name: str
    title: str
    modalities: frozenset[str]
    body_parts: frozenset[str]
    model_name: str

    def accepts(self, modality: str, body_part: str) -> bool:
        """True when a study with this modality and body part belongs to the programme."""
        return modality.upper() in self.modalities and body_part.upper() in self.body_parts


PROGRAMMES: dict[str, Programme] = {
    p.name: p
    for p in (
        Programme(
            name="cxr_tb",
            title="Chest X-ray tuberculosis screening",
            modalities=frozenset({"CR", "DX"}),
            body_parts=frozenset({"CHEST"}),
            model_name="cxr_tb_reference",
        ),
        Programme(
            name="lung_ldct",
            title="Lung cancer low-dose CT screening",
            modalities=frozenset({"CT"}),
            body_parts=frozenset({"CHEST", "LUNG"}),
            model_name="lung_ldct_reference",
        ),
    )
}

PROGRAMME_NAMES: tuple[str, ...] = tuple(sorted(PROGRAMMES))


def route_study(modality: str, body_part: str) -> str | None:
    """Name of the programme a study belongs to, or None when no programme takes it."""
    for name in PROGRAMME_NAMES:
        if PROGRAMMES[name].accepts(modality, body_part):
            return name
    return None


def get_programme(name: str) -> Programme:
    """The programme called `name`; raises ValueError naming the known programmes otherwise."""
    try:
        return PROGRAMMES[name]
    except KeyError:
        raise ValueError(
            f"unknown screening programme {name!r}; known programmes: {', '.join(PROGRAMME_NAMES)}"
        ) from None
