"""Experiment 4: which model suits my pictures?

One run per backbone, each teaching only its new classifier ('head'), on the same pictures and
split. Each run computes its model's frozen features once (and finds them cached the next time), so
the experiment costs one forward pass per picture per model plus seconds. The default models are
the ones whose weights are ready offline. The results put accuracy next to time and size: the
lighter model is the better choice when the accuracies cannot be told apart.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from tl_core.lab.common import ExperimentBase, check_model, parse_list
from tl_core.lab.runner import Part, expected_work, model_factor
from tl_core.lab.words import next_best, overlap, pct, seconds_text, times, wilson


def offline_models() -> tuple[str, ...]:
    """The catalogue models whose weights are ready without the internet."""
    from tl_core.models.catalogue import catalogue

    return tuple(m.name for m in catalogue() if m.offline_weights)


@dataclass
class ModelsExperiment(ExperimentBase):
    """``tl lab models DATA_DIR``: one 'head' run per model."""

    kind: ClassVar[str] = "models"
    models: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        from tl_core.models.catalogue import get_model_info

        names = parse_list(self.models, "model") if self.models else list(offline_models())
        self.models = tuple(get_model_info(n).name for n in names)   # a typo is answered with the choices
        self.model = self.models[0]

    def validate(self) -> None:
        for name in self.models:
            check_model(name, self.weights)
        super().validate()

    def parts(self, folder) -> list[Part]:  # noqa: ARG002
        n_train, n_val = self.split_sizes()
        out = []
        for name in self.models:
            prepare, train = expected_work("head", n_train, n_val, self.epochs,
                                           factor=model_factor(name, self.image_size))
            out.append(Part(key=name, label=_title(name), config=self.run_config(model=name, name=f"lab models {name}"),
                            meta={"model": name}, prepare_work=prepare, train_work=train))
        return out

    def summarize(self, records: list[dict], parts_total: int) -> dict:  # noqa: ARG002
        order = {m: i for i, m in enumerate(self.models)}
        results = [_result(r) for r in sorted(records, key=lambda r: order.get(r["meta"].get("model"), 99))]
        return {"models": list(self.models), "epochs": self.epochs, "results": results,
                "conclusion": conclusion(results)}


def _title(name: str) -> str:
    from tl_core.models.catalogue import model_title_of

    return model_title_of(name)


def _result(record: dict) -> dict:
    from tl_core.models.catalogue import get_model_info

    info = get_model_info(record["meta"]["model"])
    n = int(record.get("val_pictures") or 0)
    acc = float(record.get("accuracy") or 0.0)
    weights = os.path.join(record.get("run_dir") or "", "model.safetensors")
    size_mb = round(os.path.getsize(weights) / 2**20, 2) if os.path.isfile(weights) else None
    return {"model": info.name, "title": info.title, "accuracy": acc, "accuracy_ci": wilson(acc, n),
            "seconds": record.get("seconds"), "params_m": info.params_m, "size_mb": size_mb,
            "imagenet_top1": info.top1, "input_size": info.input_size, "val_pictures": n,
            "features_cached": bool(record.get("feature_cache_hit")),
            "run_dir": record.get("run_dir"), "curve": record.get("curve", [])}


def conclusion(results: list[dict]) -> str:
    """The most accurate model, whether it can be told apart from the next, and the time/size trade."""
    if not results:
        return "No run finished yet, so there is nothing to compare."
    ranked = sorted(results, key=lambda r: (-r["accuracy"], r["seconds"] or 0))
    best = ranked[0]
    n = best["val_pictures"]
    first = (f"{best['title']} was the most accurate: {pct(best['accuracy'])} of the {n} checking pictures right, in "
             f"{seconds_text(best['seconds'])}.")
    if len(ranked) == 1:
        return first + " Only one model finished, so there is nothing to compare it with yet."
    second = ranked[1]
    clear, verdict = next_best(second["title"], second["accuracy"], second["accuracy_ci"], best["accuracy"],
                               best["accuracy_ci"], n)
    # the quickest model whose accuracy cannot be told apart from the best one's
    alike = [r for r in ranked[1:] if overlap(best["accuracy_ci"], r["accuracy_ci"])]
    quick = min(alike, key=lambda r: r["seconds"] or 0) if alike else None
    if quick is not None and (quick["seconds"] or 0) < 0.8 * (best["seconds"] or 0):
        lighter = "lighter" if (quick["params_m"] or 0) < (best["params_m"] or 0) else "quicker"
        reused = (" (its time is a best case: it reused features an earlier run computed on these pictures)"
                  if quick.get("features_cached") else "")
        third = (f"{quick['title']} took {seconds_text(quick['seconds'])} against {seconds_text(best['seconds'])}, with "
                 f"{quick['params_m']:.1f} against {best['params_m']:.1f} million weights, for an accuracy we cannot "
                 f"tell apart: the {lighter} model is a fine choice here{reused}.")
    else:
        slow = max(results, key=lambda r: r["seconds"] or 0)
        fast = min(results, key=lambda r: r["seconds"] or 0)
        ratio = (slow["seconds"] or 0) / max(fast["seconds"] or 0, 1e-9)
        third = (f"The slowest, {slow['title']}, took {times(ratio)} as long as the quickest, {fast['title']}"
                 + (", and was worth it." if clear and slow is best else "."))
    return " ".join((first, verdict, third))


__all__ = ["ModelsExperiment", "conclusion", "offline_models"]
