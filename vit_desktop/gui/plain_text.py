"""Text from files, folders and models shown as it is, never as HTML.

Qt renders a QLabel's text, a tooltip or a message box's text as rich text whenever it looks like
HTML (``Qt.mightBeRichText``): a label called ``<img src=/some/file>`` would show that file, an
``<a href=...>`` a link. Labels that show such text are made plain text once (:func:`plain`);
tooltips and message boxes, which have no format of their own, get :func:`as_plain`.
"""

from __future__ import annotations

from PySide6.QtGui import QPainter, QPaintEvent, Qt
from PySide6.QtWidgets import QLabel


def plain(*labels: QLabel) -> None:
    """Show the text of ``labels`` as it is, whatever it contains."""
    for label in labels:
        label.setTextFormat(Qt.TextFormat.PlainText)


def as_plain(text: str) -> str:
    """``text`` for a place where Qt guesses the format (a tooltip, a message box): unchanged when it
    cannot be taken for HTML, else as HTML that shows exactly ``text`` (escaped, line breaks kept)."""
    if not Qt.mightBeRichText(text):
        return text
    return Qt.convertFromPlainText(text, Qt.WhiteSpaceMode.WhiteSpaceNormal)


class ElidedLabel(QLabel):
    """One line that shows a long text cut in the middle with "…" instead of clipped at the edge."""

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        shown = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideMiddle, self.contentsRect().width())
        painter.drawText(self.contentsRect(), int(self.alignment()), shown)


__all__ = ["ElidedLabel", "as_plain", "plain"]
