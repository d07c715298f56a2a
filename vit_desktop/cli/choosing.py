"""Which model a command runs with: the one named, else the one used last, else a default; said on stderr."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

from .console import PROG, ProgressLine, UsageError

if TYPE_CHECKING:
    from vit_desktop.core.inference.loading import ModelChoice
    from vit_desktop.core.library.store import Library


def choose(named: str | None, *, device: str, precision: str, library: Library | None, err: IO[str],
           line: ProgressLine) -> ModelChoice:
    """``named`` (``--model``), or without it the model used last (here or in the window) if the
    library knows it on this machine, else a cached registry model, else the bundled demo model.

    Says on stderr which model runs where, and why when none was named; a model given by name is
    remembered as the one used last. ``line`` shows a download's progress and is closed here.
    A model that cannot be used is a :class:`UsageError`.
    """
    from vit_desktop.core import state
    from vit_desktop.core.errors import VitDesktopError
    from vit_desktop.core.inference.loading import choose_model, is_known
    from vit_desktop.core.paths import display_text

    candidates: list[tuple[str, str]]  # (model, why it was chosen: "" when asked for)
    if named:
        candidates = [(named, "")]
    else:
        last = state.last_model()
        if last and library is not None and is_known(library, last, device=device, precision=precision):
            candidates = [(last, "the model used last")]
        else:
            from vit_desktop.core.models import registry

            candidates = registry.default_models()
            gone = registry.last_model_problem()
            if gone:  # said, never a silent swap of the user's model for another
                line.say(f"{gone}; using another")
            if not candidates:
                raise UsageError(
                    "no model given and none cached or bundled: pass --model NAME_OR_FILE (see 'vit-desktop models')")
    try:
        for i, (model, why) in enumerate(candidates):
            try:
                choice = choose_model(model, device=device, precision=precision, library=library,
                                      progress=line.bytes)
                break
            except VitDesktopError as exc:
                if not why:
                    raise UsageError(str(exc)) from None
                # A model chosen for the user that does not load: said, and the next one tried.
                from vit_desktop.core.models.registry import fallback_note

                then = candidates[i + 1] if i + 1 < len(candidates) else None
                if then is None:
                    raise UsageError(fallback_note(model, why, str(exc), None)) from None
                line.say(fallback_note(model, why, str(exc), then))
    finally:
        line.close()
    note = f"; no --model given, so {why}: {model}" if why else ""
    why_precision = f": {choice.precision_why}" if choice.precision_why else ""
    print(f"{PROG}: model {display_text(choice.card.name)} on {choice.device_name}, {choice.precision}"
          f"{why_precision}{display_text(note)}", file=err)
    if named:
        # What resolves next time: a registry name as it is, anything else (a saved model's name,
        # a relative path) as the file it stood for.
        path = choice.source_path
        state.set_last_model(model if choice.card.kind == "registry" or path is None else str(path))
    return choice


__all__ = ["choose"]
