"""Labels as keywords in XMP sidecars, where photo managers read them (digiKam, darktable, Lightroom).

The sidecar of ``photo.jpg`` is ``photo.jpg.xmp``, the name digiKam and darktable write; a
``photo.xmp`` (Lightroom's name, digiKam's other choice) is used instead when it is the one that
exists. The photo itself is never opened for writing. A label goes in as a ``dc:subject`` keyword
and as ``vit-desktop|label`` in ``lr:hierarchicalSubject``; the second says which keywords this
program wrote, so that a later run replaces its own keyword (a photo classified again) and leaves
every keyword and property the user or another program put there as it was.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vit_desktop.core.files import atomic_write_text

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "xmpMM": "http://ns.adobe.com/xap/1.0/mm/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "crs": "http://ns.adobe.com/camera-raw-settings/1.0/",
    "darktable": "http://darktable.sf.net/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
    "stEvt": "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#",
}
for _prefix, _uri in NS.items():  # prefixes as photo managers write them, not ns0/ns1
    ET.register_namespace(_prefix, _uri)

#: The parent in ``lr:hierarchicalSubject`` that marks this program's keywords.
PARENT = "vit-desktop"
#: Sidecars larger than this are not a sidecar this program should rewrite.
MAX_SIDECAR_BYTES = 16 * 1024 * 1024

_HEADER = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_FOOTER = '\n<?xpacket end="w"?>\n'


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def sidecar_path(photo: str | os.PathLike[str]) -> Path:
    """The sidecar this program writes for ``photo``: ``photo.jpg.xmp``, or an existing ``photo.xmp``."""
    p = Path(photo)
    full = p.with_name(p.name + ".xmp")
    short = p.with_suffix(".xmp")
    if not full.exists() and short.exists() and short != p:
        return short
    return full


@dataclass(frozen=True)
class Keywords:
    """What a sidecar holds as keywords: all of them, and those this program wrote."""

    subjects: tuple[str, ...]
    ours: tuple[str, ...]


def read_keywords(photo: str | os.PathLike[str]) -> Keywords:
    """The keywords of ``photo``'s sidecar (either name); empty when it has none."""
    path = sidecar_path(photo)
    if not path.exists():
        return Keywords((), ())
    root = _parse(path)
    desc = _description(root)
    subjects = tuple(li.text or "" for li in _bag_items(desc, "dc", "subject"))
    ours = tuple(h.split("|", 1)[1] for li in _bag_items(desc, "lr", "hierarchicalSubject")
                 if (h := li.text or "").startswith(PARENT + "|"))
    return Keywords(subjects, ours)


def write_keyword(photo: str | os.PathLike[str], label: str | None) -> Path:
    """Put ``label`` into ``photo``'s sidecar as this program's keyword (None: take ours away),
    keeping everything else the sidecar holds; written atomically. Returns the sidecar's path.

    Raises OSError when the sidecar cannot be written, ValueError when an existing one is not XMP.
    """
    if label is not None and (not label.strip() or "|" in label):
        label = label.replace("|", "/").strip() or None
    path = sidecar_path(photo)
    root = _parse(path) if path.exists() else _new_root()
    desc = _description(root)
    subject_bag = _bag(desc, "dc", "subject", create=label is not None)
    hier_bag = _bag(desc, "lr", "hierarchicalSubject", create=label is not None)
    ours = set()
    if hier_bag is not None:
        for li in list(hier_bag):
            text = li.text or ""
            if text.startswith(PARENT + "|"):
                ours.add(text.split("|", 1)[1])
                hier_bag.remove(li)
    if subject_bag is not None:
        for li in list(subject_bag):
            if (li.text or "") in ours and li.text != label:
                subject_bag.remove(li)
    if label is not None:
        assert subject_bag is not None and hier_bag is not None
        if not any((li.text or "") == label for li in subject_bag):
            ET.SubElement(subject_bag, _q("rdf", "li")).text = label
        ET.SubElement(hier_bag, _q("rdf", "li")).text = f"{PARENT}|{label}"
    for prefix, name in (("dc", "subject"), ("lr", "hierarchicalSubject")):
        bag = _bag(desc, prefix, name, create=False)
        holder = desc.find(_q(prefix, name))
        if holder is not None and bag is not None and len(bag) == 0:
            desc.remove(holder)  # no empty bags left behind
    ET.indent(root, space=" ")
    text = _HEADER + ET.tostring(root, encoding="unicode") + _FOOTER
    return atomic_write_text(path, text, overwrite=True)


def write_keywords(items: Sequence[tuple[str, str | None]]) -> list[tuple[str, str]]:
    """:func:`write_keyword` for each (photo, label); returns (photo, reason) for those that failed."""
    failed = []
    for photo, label in items:
        try:
            write_keyword(photo, label)
        except (OSError, ValueError) as exc:
            failed.append((photo, str(exc)))
    return failed


# ------------------------------------------------------------------------------------------------


def _new_root() -> ET.Element:
    root = ET.Element(_q("x", "xmpmeta"))
    rdf = ET.SubElement(root, _q("rdf", "RDF"))
    ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})
    return root


def _parse(path: Path) -> ET.Element:
    if path.stat().st_size > MAX_SIDECAR_BYTES:
        raise ValueError(f"{path}: larger than {MAX_SIDECAR_BYTES // (1024 * 1024)} MB, not rewritten")
    try:
        root = ET.fromstring(path.read_bytes())
    except ET.ParseError as exc:
        raise ValueError(f"{path}: not XMP ({exc}); not rewritten") from None
    if root.tag == _q("rdf", "RDF"):  # a bare RDF document: wrap it as writers do
        wrapper = ET.Element(_q("x", "xmpmeta"))
        wrapper.append(root)
        root = wrapper
    if root.tag != _q("x", "xmpmeta") or root.find(_q("rdf", "RDF")) is None:
        raise ValueError(f"{path}: not an XMP packet; not rewritten")
    return root


def _description(root: ET.Element) -> ET.Element:
    """The rdf:Description that holds (or will hold) the keywords: the first with a subject, else the first."""
    rdf = root.find(_q("rdf", "RDF"))
    assert rdf is not None
    descs = rdf.findall(_q("rdf", "Description"))
    for d in descs:
        if d.find(_q("dc", "subject")) is not None:
            return d
    if descs:
        return descs[0]
    return ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})


def _bag(desc: ET.Element, prefix: str, name: str, *, create: bool) -> ET.Element | None:
    holder = desc.find(_q(prefix, name))
    if holder is None:
        if not create:
            return None
        holder = ET.SubElement(desc, _q(prefix, name))
    bag = holder.find(_q("rdf", "Bag"))
    if bag is None:
        if not create:
            return None
        bag = ET.SubElement(holder, _q("rdf", "Bag"))
    return bag


def _bag_items(desc: ET.Element, prefix: str, name: str) -> list[ET.Element]:
    bag = _bag(desc, prefix, name, create=False)
    return list(bag) if bag is not None else []


__all__ = ["PARENT", "Keywords", "read_keywords", "sidecar_path", "write_keyword", "write_keywords"]
