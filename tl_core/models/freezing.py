"""Layer groups and freeze plans.

A beginner cannot reason about 200 parameter tensors, but can about a dozen groups drawn from
input to output ("Stem", "Stage 1" ... "New classifier"). The groups come from timm's own
``group_matcher`` (the same grouping timm uses for layer-wise learning-rate decay), read with timm's
public :func:`timm.models.group_parameters`, with the classifier split out as its own final group
because it is the one part that is always new.
A freeze plan is simply the set of frozen group names.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from timm.models import group_parameters

from tl_core.config import FreezeConfig, parse_preset
from tl_core.errors import ConfigError

CLASSIFIER_GROUP = "classifier"


@dataclass
class LayerGroup:
    """One block of the network a user can freeze or train."""

    name: str                 # stable id, e.g. "stage_3"
    label: str                # what the UI shows, e.g. "Stage 3"
    description: str          # one plain sentence on what these layers do
    param_names: list[str] = field(default_factory=list)
    num_params: int = 0

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "description": self.description,
                "num_params": self.num_params, "num_tensors": len(self.param_names)}


def _classifier_prefixes(model: nn.Module) -> list[str]:
    """Parameter-name prefixes of the classifier that ``reset_classifier`` replaces."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    prefixes = []
    if isinstance(classifier, nn.Module):
        for name, module in model.named_modules():
            if module is classifier and name:
                prefixes.append(name + ".")
    if not prefixes:
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        names = cfg.get("classifier") or ()
        prefixes = [n + "." for n in ((names,) if isinstance(names, str) else names)]
    return prefixes


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """Groups from input to output, classifier last, with parameter counts."""
    params = dict(model.named_parameters())
    cls_prefixes = _classifier_prefixes(model)
    is_cls = lambda n: any(n.startswith(p) for p in cls_prefixes)  # noqa: E731
    body = [(n, p) for n, p in params.items() if not is_cls(n)]
    matcher = model.group_matcher(coarse=True) if hasattr(model, "group_matcher") else None
    if matcher is not None:
        # timm groups every parameter; the classifier's (unmatched, so last) are taken out here
        grouped = group_parameters(model, matcher)
        ordered = [names for names in ([n for n in grouped[k] if not is_cls(n)] for k in sorted(grouped)) if names]
    else:  # not a timm model: one group per top-level child
        by_child: dict[str, list[str]] = {}
        for n, _ in body:
            by_child.setdefault(n.split(".")[0], []).append(n)
        ordered = list(by_child.values())

    groups: list[LayerGroup] = []
    n_body = len(ordered)
    for i, names in enumerate(ordered):
        if i == 0:
            name, label = "stem", "Stem"
            desc = "The first layers: they see raw pixels and detect edges, colours and simple textures."
        elif i == n_body - 1 and n_body > 2:
            name, label = "final", "Final layers"
            desc = "The last pretrained layers: they combine parts into whole-object features."
        else:
            name, label = f"stage_{i}", f"Stage {i}"
            depth = "early" if i <= n_body // 3 else ("middle" if i <= 2 * n_body // 3 else "late")
            desc = {"early": "Early layers: simple shapes and patterns.",
                    "middle": "Middle layers: textures and object parts.",
                    "late": "Late layers: larger parts and object-level features."}[depth]
        groups.append(LayerGroup(name, label, desc, list(names), sum(params[n].numel() for n in names)))
    cls_names = [n for n in params if is_cls(n)]
    groups.append(LayerGroup(CLASSIFIER_GROUP, "New classifier",
                             "The new output layer that learns your categories; it is always trained.",
                             cls_names, sum(params[n].numel() for n in cls_names)))
    return groups


def frozen_groups_for(config: FreezeConfig, groups: list[LayerGroup]) -> list[str]:
    """Names of the frozen groups for a preset, or the explicit list when one is given."""
    names = [g.name for g in groups]
    if config.frozen_groups is not None:
        unknown = [g for g in config.frozen_groups if g not in names]
        if unknown:
            raise ConfigError(f"Unknown layer group(s) {', '.join(unknown)}. This model has: {', '.join(names)}.")
        if CLASSIFIER_GROUP in config.frozen_groups:
            raise ConfigError("The new classifier cannot be frozen: it is the part that learns your categories.")
        return [n for n in names if n in set(config.frozen_groups)]
    kind, n = parse_preset(config.preset)
    body = [g for g in names if g != CLASSIFIER_GROUP]
    if kind == "head":
        return body
    if kind in ("none", "scratch"):
        return []
    if n > len(body):
        raise ConfigError(f"This model has only {len(body)} layer groups before the classifier; "
                          f"'last:{n}' asks for more. Use 'none' to fine-tune everything.")
    return body[: len(body) - n]


@dataclass
class FreezePlan:
    """The frozen groups of one model, and what that leaves to train."""

    groups: list[LayerGroup]
    frozen: list[str]

    @property
    def trainable_groups(self) -> list[LayerGroup]:
        return [g for g in self.groups if g.name not in self.frozen]

    @property
    def trainable_params(self) -> int:
        return sum(g.num_params for g in self.trainable_groups)

    @property
    def total_params(self) -> int:
        return sum(g.num_params for g in self.groups)

    @property
    def frozen_prefix_len(self) -> int:
        """How many groups from the input are frozen without a trainable group in between."""
        count = 0
        for g in self.groups:
            if g.name not in self.frozen:
                break
            count += 1
        return count

    def to_dict(self) -> dict:
        return {"frozen": list(self.frozen), "trainable_params": self.trainable_params,
                "total_params": self.total_params,
                "groups": [dict(g.to_dict(), frozen=g.name in self.frozen) for g in self.groups]}


def make_freeze_plan(model: nn.Module, config: FreezeConfig) -> FreezePlan:
    groups = layer_groups(model)
    return FreezePlan(groups, frozen_groups_for(config, groups))


def apply_freeze_plan(model: nn.Module, plan: FreezePlan) -> None:
    """Set ``requires_grad`` from the plan."""
    frozen_names = {n for g in plan.groups if g.name in plan.frozen for n in g.param_names}
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen_names)


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except that fully frozen modules stay in eval mode.

    Frozen layers must keep their pretrained BatchNorm statistics: updating running means on a
    few hundred images of a new domain silently destroys the features (the classic recipe's
    main failure). Dropout inside frozen layers is off too, so a frozen prefix is a fixed
    function and its output can be cached.
    """
    model.train()
    for module in model.modules():
        own = list(module.parameters())
        if own and not any(p.requires_grad for p in own):
            module.eval()


def optimizer_param_groups(model: nn.Module, plan: FreezePlan, lr: float, weight_decay: float,
                           layer_lr_decay: float = 1.0) -> list[dict]:
    """AdamW parameter groups: trainable parameters only, no decay on norms and biases, and
    optionally a smaller rate for earlier groups (``lr * decay**distance_from_the_end``)."""
    params = dict(model.named_parameters())
    trainable = plan.trainable_groups
    out = []
    for rank, group in enumerate(reversed(trainable)):
        scale = layer_lr_decay ** rank
        decay, no_decay = [], []
        for n in group.param_names:
            p = params[n]
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 else decay).append(p)
        for plist, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if plist:
                out.append({"params": plist, "lr": lr * scale, "weight_decay": wd, "group": group.name})
    if not out:
        raise ConfigError("Nothing is left to train: unfreeze at least the classifier.")
    return out


def module_is_frozen(module: nn.Module) -> bool:
    return all(not p.requires_grad for p in module.parameters())


__all__ = ["LayerGroup", "FreezePlan", "layer_groups", "frozen_groups_for", "make_freeze_plan",
           "apply_freeze_plan", "set_train_mode", "optimizer_param_groups",
           "module_is_frozen", "CLASSIFIER_GROUP"]
